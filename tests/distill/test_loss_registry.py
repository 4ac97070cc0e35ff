"""The loss registry: every loss builds, runs and back-propagates; build_loss errors name the fix."""

from __future__ import annotations

import pytest
import torch

import mmdistill.distill.losses  # noqa: F401  (registers every built-in loss)
from mmdistill.distill.registries import LOSS_FAMILIES, LOSSES, build_loss, loss_family, loss_kwargs
from mmdistill.errors import ConfigError

EXPECTED = {
    "kd": "logits", "kd_ce": "logits", "mse_logits": "logits", "reverse_kl": "logits",
    "symmetric_kl": "logits", "dkd": "logits", "hint": "feature", "cosine": "feature",
    "attention": "feature", "rkd_distance": "relation", "rkd_angle": "relation", "sp": "relation",
    "pkt": "relation", "contrastive": "contrastive",
}


def test_every_builtin_is_registered_with_its_family() -> None:
    assert {name: loss_family(name) for name in LOSSES.names()} == EXPECTED
    assert all(e.meta["family"] in LOSS_FAMILIES for e in LOSSES.entries())


@pytest.mark.parametrize("name", LOSSES.names())
def test_docstring_has_formula_shapes_and_paper(name: str) -> None:
    doc = LOSSES.get(name).__doc__ or ""
    assert "Shapes:" in doc and "arXiv:" in doc and any(y in doc for y in ("19", "20")), name


def _inputs(name: str, b: int = 6) -> tuple[torch.Tensor, ...]:
    family = loss_family(name)
    if family == "logits":
        return torch.randn(b, 5, requires_grad=True), torch.randn(b, 5), torch.randint(0, 5, (b,))
    if name == "attention":
        return torch.randn(b, 4, 3, requires_grad=True), torch.randn(b, 7, 8)
    return torch.randn(b, 3, requires_grad=True), torch.randn(b, 8)


@pytest.mark.parametrize("name", LOSSES.names())
def test_smoke(name: str) -> None:
    loss = build_loss(name, student_dim=3, teacher_dim=8)
    args = _inputs(name)
    value = loss(*args)
    assert value.shape == () and torch.isfinite(value)
    value.backward()
    assert args[0].grad is not None and torch.isfinite(args[0].grad).all()


def test_dims_go_only_to_losses_that_take_them() -> None:
    kd = build_loss("kd", student_dim=3, teacher_dim=8, temperature=2.0)
    assert kd.temperature == 2.0  # type: ignore[comparison-overlap]
    hint = build_loss("hint", student_dim=3, teacher_dim=8)
    assert hint.adapter is not None and hint.adapter.weight.shape == (8, 3)  # type: ignore[union-attr]


def test_loss_kwargs() -> None:
    assert loss_kwargs("kd_ce") == ["temperature", "alpha"]
    assert loss_kwargs("contrastive") == ["proj_dim", "temperature", "symmetric"]
    assert loss_kwargs("hint") == []


def test_unknown_name_suggests() -> None:
    expected = r"distill.losses\[0\].name: unknown loss 'kd_cee'; did you mean 'kd_ce'\?"
    with pytest.raises(ConfigError, match=expected):
        build_loss("kd_cee", key="distill.losses[0].name")
    with pytest.raises(ConfigError, match="unknown loss 'rkd'"):
        loss_family("rkd")


def test_unknown_kwarg_lists_accepted() -> None:
    with pytest.raises(ConfigError) as info:
        build_loss("kd_ce", temprature=3.0, key="distill.losses[1]")
    assert info.value.problems == [
        "distill.losses[1]: loss 'kd_ce' got unknown kwarg 'temprature'; did you mean 'temperature'? "
        "accepted: temperature, alpha"
    ]
    with pytest.raises(ConfigError, match="accepted: \\(none\\)"):
        build_loss("mse_logits", temperature=2.0)


def test_missing_dims() -> None:
    with pytest.raises(ConfigError) as info:
        build_loss("contrastive", student_dim=4)
    assert info.value.problems == [
        "loss 'contrastive' (contrastive) needs teacher_dim: the width of the teacher tensor it compares"
    ]


def test_invalid_value_is_prefixed_with_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        build_loss("kd", temperature=-1, key="distill.losses[0]")
    assert info.value.problems == ["distill.losses[0].kwargs: `temperature` must be > 0, got -1"]
    expected = r"^invalid configuration .*\n  - `alpha` must be in \[0, 1\], got 2$"
    with pytest.raises(ConfigError, match=expected):
        build_loss("kd_ce", alpha=2)


@pytest.mark.parametrize("name", [n for n in EXPECTED if "temperature" in loss_kwargs(n)])
def test_high_temperature_warns(name: str) -> None:
    with pytest.warns(UserWarning, match="`temperature` = 25 is unusually high"):
        build_loss(name, student_dim=3, teacher_dim=8, temperature=25)
