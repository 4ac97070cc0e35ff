"""AdamW parameter groups and the warm-up + cosine schedule, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mmdistill.errors import ConfigError
from mmdistill.training.optim import (
    build_optimizer,
    cosine_with_warmup,
    lr_factor,
    param_groups,
    resolve_warmup,
)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.lin = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.frozen = nn.Linear(4, 4).requires_grad_(False)


def test_param_groups_decay_matrices_only_and_skip_frozen() -> None:
    net = Net()
    groups = param_groups(net, 0.1)
    decay = {id(p) for p in groups[0]["params"]}
    no_decay = {id(p) for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert decay == {id(net.emb.weight), id(net.lin.weight)}
    assert no_decay == {id(net.lin.bias), id(net.norm.weight), id(net.norm.bias)}
    opt = build_optimizer(net, lr=1e-3, weight_decay=0.1)
    assert isinstance(opt, torch.optim.AdamW) and sum(len(g["params"]) for g in opt.param_groups) == 5


def test_build_optimizer_errors() -> None:
    with pytest.raises(ConfigError, match="lr must be > 0, got 0"):
        build_optimizer(Net(), lr=0, weight_decay=0.0)
    with pytest.raises(ConfigError, match="weight_decay must be >= 0, got -1"):
        build_optimizer(Net(), lr=1e-3, weight_decay=-1)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        build_optimizer(nn.Linear(2, 2).requires_grad_(False), lr=1e-3, weight_decay=0.0)


def test_lr_factor_hand_values() -> None:
    f = [lr_factor(s, warmup=4, total=12) for s in range(12)]
    assert f[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # linear warm-up, peak at step 3
    assert f[4] == pytest.approx(1.0)  # cosine starts at the peak
    assert f[8] == pytest.approx(0.5)  # halfway through the 8 decay steps: cos(pi/2) = 0
    assert f[11] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert lr_factor(12, warmup=0, total=12, min_ratio=0.1) == pytest.approx(0.1)  # floor
    assert lr_factor(0, warmup=0, total=10) == 1.0


def test_scheduler_drives_optimizer_lr_per_step() -> None:
    opt = build_optimizer(nn.Linear(2, 2), lr=0.4, weight_decay=0.0)
    sched = cosine_with_warmup(opt, total_steps=12, warmup_steps=4)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.4 * lr_factor(s, warmup=4, total=12) for s in range(12)])


def test_resolve_warmup() -> None:
    assert resolve_warmup(0.1, 200) == 20  # fraction
    assert resolve_warmup(0.0, 200) == 0
    assert resolve_warmup(15, 200) == 15
    assert resolve_warmup(15.0, 200) == 15  # YAML may give a float step count
    with pytest.raises(ConfigError, match="warmup must be >= 0"):
        resolve_warmup(-1, 10)
    with pytest.raises(ConfigError, match="whole number of steps or a fraction below 1, got 2.5"):
        resolve_warmup(2.5, 10)
    with pytest.warns(UserWarning, match="longer than the whole run"):
        assert resolve_warmup(50, 10) == 50
