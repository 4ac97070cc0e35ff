"""Tests for mmdistill.registry and mmdistill.errors (the shared contracts)."""

from __future__ import annotations

import pytest

from mmdistill.errors import ConfigError, DataError, MissingDependencyError
from mmdistill.registry import Registry


def _losses() -> Registry:
    reg: Registry = Registry("loss")

    @reg.register("kd", family="logits")
    class KD:
        """Hinton knowledge distillation.

        More text that is not the description.
        """

        def __init__(self, temperature: float = 4.0) -> None:
            self.temperature = temperature

    reg.register("kd_ce", description="CE plus KD")(object)
    reg.register("hint")(dict)
    return reg


def test_register_get_build_and_describe() -> None:
    reg = _losses()
    assert reg.names() == ["hint", "kd", "kd_ce"] and len(reg) == 3 and "kd" in reg
    entry = reg.entry("kd")
    assert entry.description == "Hinton knowledge distillation."  # first docstring line
    assert entry.meta == {"family": "logits"}
    assert reg.entry("kd_ce").description == "CE plus KD"
    assert reg.build("kd", temperature=2.0).temperature == 2.0
    assert [e.name for e in reg.entries()] == reg.names()


def test_unknown_name_suggests_and_lists_everything() -> None:
    reg = _losses()
    with pytest.raises(ConfigError) as info:
        reg.get("kd_los", key="distill.terms.0.name")
    msg = str(info.value)
    assert "distill.terms.0.name: unknown loss 'kd_los'; did you mean 'kd_ce'?" in msg
    assert "available: hint, kd, kd_ce" in msg
    assert "did you mean" not in reg.unknown_message("zzzzzz")


def test_duplicate_registration_is_refused() -> None:
    reg = _losses()
    with pytest.raises(ValueError, match="loss 'kd' is already registered"):
        reg.register("kd")(object)


def test_error_messages_name_the_place() -> None:
    assert str(DataError("bad pixel", path="a/b.png", row=3)) == "a/b.png, row 3: bad pixel"
    assert str(DataError("empty")) == "empty"
    err = ConfigError(["a: one", "b: two"])
    assert err.problems == ["a: one", "b: two"] and "2 problem(s)" in str(err) and "  - b: two" in str(err)
    assert "pip install 'mmdistill[onnx]'" in str(MissingDependencyError("onnxruntime", "onnx", "Export"))
