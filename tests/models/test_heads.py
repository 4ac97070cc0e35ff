"""Heads: registry-wide smoke test and multi-task behaviour."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmdistill.models.heads import LinearHead, MLPHead, MultiTaskHead
from mmdistill.models.registries import HEADS, register_all

register_all()


@pytest.mark.parametrize("name", HEADS.names())
def test_head_smoke(name: str) -> None:
    kwargs = {"tasks": {"label": 3, "aux": 2}} if name == "multitask" else {"num_classes": 3}
    head = HEADS.build(name, in_dim=8, **kwargs)
    x = torch.randn(5, 8, requires_grad=True)
    out = head(x)
    logits = out["label"] if isinstance(out, dict) else out
    assert logits.shape == (5, 3) and head.num_classes == 3
    logits.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_linear_head_is_affine() -> None:
    head = LinearHead(4, 3).eval()
    x = torch.randn(2, 4)
    torch.testing.assert_close(head(x), x @ head.fc.weight.T + head.fc.bias)


def test_mlp_head_shapes() -> None:
    head = MLPHead(4, 6, hidden=9)
    assert [m.out_features for m in head.modules() if isinstance(m, nn.Linear)] == [9, 6]


def test_multitask_head_primary_and_linear_subheads() -> None:
    head = MultiTaskHead(8, {"label": 4, "speaker": 7}, hidden=0)
    assert head.primary_task == "label" and head.num_classes == 4
    out = head(torch.randn(3, 8))
    assert list(out) == ["label", "speaker"]
    assert out["label"].shape == (3, 4) and out["speaker"].shape == (3, 7)
    assert all(isinstance(h, LinearHead) for h in head.heads.values())


def test_multitask_head_rejects_bad_tasks() -> None:
    with pytest.raises(ValueError, match="at least one task"):
        MultiTaskHead(8, {})
    with pytest.raises(ValueError, match="no '.'"):
        MultiTaskHead(8, {"a.b": 2})
