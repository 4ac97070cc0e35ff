"""Feature-based losses against hand-written references."""

from __future__ import annotations

import math

import pytest
import torch

from mmdistill.distill.losses.features import AttentionTransferLoss, CosineLoss, HintLoss, attention_map
from mmdistill.errors import ConfigError


def _randn(*shape: int, seed: int = 0, grad: bool = False) -> torch.Tensor:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return x.requires_grad_(grad)


def test_hint_equal_dims_is_plain_mse_without_adapter() -> None:
    loss = HintLoss(4, 4)
    assert loss.adapter is None and not list(loss.parameters())
    s, t = _randn(3, 4, seed=1), _randn(3, 4, seed=2)
    ref = sum(float(s[i, j] - t[i, j]) ** 2 for i in range(3) for j in range(4)) / 12
    assert loss(s, t).item() == pytest.approx(ref, rel=1e-5)
    assert loss(s, s.clone()).item() == 0.0


def test_hint_adapter_when_dims_differ() -> None:
    loss = HintLoss(3, 5)
    assert loss.adapter is not None and loss.adapter.bias is None
    assert [tuple(p.shape) for p in loss.parameters()] == [(5, 3)]
    s, t = _randn(4, 2, 3, seed=3, grad=True), _randn(4, 2, 5, seed=4, grad=True)
    w, sd = loss.adapter.weight.detach(), s.detach()
    mapped = [[sum(float(w[o, i]) * float(sd[b, k, i]) for i in range(3)) for o in range(5)]
              for b in range(4) for k in range(2)]
    flat_t = t.detach().reshape(8, 5)
    ref = sum((mapped[r][o] - float(flat_t[r, o])) ** 2 for r in range(8) for o in range(5)) / 40
    value = loss(s, t)
    assert value.item() == pytest.approx(ref, rel=1e-5)
    value.backward()
    assert s.grad is not None and loss.adapter.weight.grad is not None
    assert t.grad is None


def test_cosine_matches_reference_and_is_scale_free() -> None:
    s, t = _randn(5, 6, seed=5), _randn(5, 6, seed=6)
    ref = 0.0
    for i in range(5):
        dot = sum(float(s[i, j]) * float(t[i, j]) for j in range(6))
        norm_s = math.sqrt(sum(float(v) ** 2 for v in s[i]))
        ref += dot / (norm_s * math.sqrt(sum(float(v) ** 2 for v in t[i])))
    loss = CosineLoss(6, 6)
    assert loss(s, t).item() == pytest.approx(1 - ref / 5, rel=1e-5)
    assert loss(s, 3.0 * s).item() == pytest.approx(0.0, abs=1e-6)


def test_cosine_gradients_reach_student_and_adapter_only() -> None:
    loss = CosineLoss(4, 7)
    s, t = _randn(3, 4, seed=7, grad=True), _randn(3, 7, seed=8, grad=True)
    loss(s, t).backward()
    assert s.grad is not None and loss.adapter is not None and loss.adapter.weight.grad is not None
    assert t.grad is None


def _ref_attention(f: torch.Tensor) -> list[list[float]]:
    out = []
    for b in range(f.shape[0]):
        q = [sum(float(v) ** 2 for v in f[b, k]) / f.shape[2] for k in range(f.shape[1])]
        norm = math.sqrt(sum(v * v for v in q))
        out.append([v / norm for v in q])
    return out


def test_attention_matches_reference_with_different_widths() -> None:
    s, t = _randn(2, 5, 3, seed=9, grad=True), _randn(2, 5, 8, seed=10, grad=True)
    a_s, a_t = _ref_attention(s.detach()), _ref_attention(t.detach())
    ref = sum((a_s[b][k] - a_t[b][k]) ** 2 for b in range(2) for k in range(5)) / 10
    loss = AttentionTransferLoss(3, 8)
    value = loss(s, t)
    assert value.item() == pytest.approx(ref, rel=1e-5)
    assert not list(loss.parameters())
    value.backward()
    assert s.grad is not None and t.grad is None
    assert AttentionTransferLoss(3, 3)(s, s.detach().clone()).item() == 0.0


def test_attention_pools_the_longer_sequence() -> None:
    # Teacher has twice the tokens: its energy is averaged over consecutive pairs before normalizing.
    s, t = _randn(2, 3, 4, seed=11), _randn(2, 6, 4, seed=12)
    q_t = t.pow(2).mean(-1)
    pooled = (q_t[:, 0::2] + q_t[:, 1::2]) / 2
    a_t = pooled / pooled.norm(dim=1, keepdim=True)
    torch.testing.assert_close(attention_map(t, 3), a_t)
    expected = (attention_map(s) - a_t).pow(2).mean()
    torch.testing.assert_close(AttentionTransferLoss(4, 4)(s, t), expected)
    # and symmetric: the student may be the longer one
    torch.testing.assert_close(AttentionTransferLoss(4, 4)(t, s), expected)


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match=r"needs token features \[B, T, D\]"):
        AttentionTransferLoss(4, 4)(torch.randn(2, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="built for student_dim=4, teacher_dim=6"):
        HintLoss(4, 6)(torch.randn(2, 5), torch.randn(2, 6))
    with pytest.raises(ValueError, match="leading"):
        CosineLoss(4, 4)(torch.randn(2, 4), torch.randn(3, 4))


def test_invalid_dims() -> None:
    with pytest.raises(ConfigError, match=r"`student_dim` must be a positive integer, got 0"):
        HintLoss(0, 4)
    with pytest.raises(ConfigError, match=r"`teacher_dim` must be a positive integer, got 2.5"):
        CosineLoss(4, 2.5)  # type: ignore[arg-type]
