"""Seeding, thread settings and the machine description."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from mmdistill.errors import ConfigError
from mmdistill.training.runtime import describe_machine, seed_everything, set_threads


def draw(gen: torch.Generator) -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(1)), float(torch.rand(1, generator=gen))


def test_seed_everything_reproduces_every_generator() -> None:
    a = draw(seed_everything(7))
    b = draw(seed_everything(7))
    c = draw(seed_everything(8))
    assert a == b
    assert all(x != y for x, y in zip(a, c, strict=True))


def test_seed_everything_deterministic_flag() -> None:
    before = torch.are_deterministic_algorithms_enabled()
    try:
        seed_everything(1, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before)


def test_seed_out_of_range_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"seed must be in \[0, 2\*\*32\), got -1"):
        seed_everything(-1)


def test_set_threads_round_trip() -> None:
    old = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 == torch.get_num_threads()
        assert set_threads(None) == 1  # None keeps the setting
    finally:
        torch.set_num_threads(old)
    with pytest.raises(ConfigError, match="threads must be >= 1"):
        set_threads(0)


def test_describe_machine_is_json_ready() -> None:
    info = describe_machine()
    assert info["torch"] == torch.__version__
    assert info["torch_threads"] == torch.get_num_threads()
    assert info["cpu_count"] >= 1 and 1 <= info["cpu_affinity"] <= info["cpu_count"]
    json.dumps(info)
