"""Response-based losses against hand-written references (row loops over plain softmax)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmdistill.data.batch import IGNORE_LABEL
from mmdistill.distill.losses.logits import (
    DKDLoss,
    KDCELoss,
    KDLoss,
    MSELogitsLoss,
    ReverseKLLoss,
    SymmetricKLLoss,
    soften,
)
from mmdistill.errors import ConfigError

B, K = 6, 5


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(B, K, generator=g) * 2
    t = torch.randn(B, K, generator=g) * 2
    y = torch.randint(0, K, (B,), generator=g)
    return s, t, y


def _probs(row: torch.Tensor, temp: float) -> list[float]:
    e = [math.exp(float(v) / temp) for v in row]
    return [v / sum(e) for v in e]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


def _ref_kd(s: torch.Tensor, t: torch.Tensor, temp: float, reverse: bool = False) -> float:
    total = 0.0
    for i in range(s.shape[0]):
        ps, pt = _probs(s[i], temp), _probs(t[i], temp)
        total += _kl(ps, pt) if reverse else _kl(pt, ps)
    return temp**2 * total / s.shape[0]


def _ref_dkd_terms(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, temp: float) -> tuple[float, float]:
    tckd = nckd = 0.0
    for i in range(s.shape[0]):
        ps, pt = _probs(s[i], temp), _probs(t[i], temp)
        g = int(y[i])
        b_s, b_t = [ps[g], 1 - ps[g]], [pt[g], 1 - pt[g]]
        others = [j for j in range(s.shape[1]) if j != g]
        q_s, q_t = _probs(s[i, others], temp), _probs(t[i, others], temp)
        tckd += _kl(b_t, b_s)
        nckd += _kl(q_t, q_s)
    n = s.shape[0]
    return temp**2 * tckd / n, temp**2 * nckd / n


@pytest.mark.parametrize("temp", [1.0, 4.0])
def test_kd_matches_reference(temp: float) -> None:
    s, t, _ = _data()
    assert KDLoss(temperature=temp)(s, t).item() == pytest.approx(_ref_kd(s, t, temp), rel=1e-5)


def test_kd_scales_with_t_squared() -> None:
    # The documented T^2 factor: loss(T) = T^2 * batchmean KL of the softened distributions.
    s, t, _ = _data(1)
    for temp in (2.0, 8.0):
        log_ps, pt = F.log_softmax(s / temp, -1), F.softmax(t / temp, -1)
        raw = (pt * (pt.log() - log_ps)).sum(-1).mean()
        assert KDLoss(temperature=temp)(s, t).item() == pytest.approx(temp**2 * raw.item(), rel=1e-5)


def test_kd_accepts_token_logits_as_rows() -> None:
    s, t = torch.randn(2, 3, K), torch.randn(2, 3, K)
    flat = KDLoss()(s.reshape(6, K), t.reshape(6, K))
    torch.testing.assert_close(KDLoss()(s, t), flat)


def test_reverse_and_symmetric_kl_match_reference() -> None:
    s, t, _ = _data(2)
    rev = _ref_kd(s, t, 3.0, reverse=True)
    assert ReverseKLLoss(temperature=3.0)(s, t).item() == pytest.approx(rev, rel=1e-5)
    sym = 0.5 * (rev + _ref_kd(s, t, 3.0))
    assert SymmetricKLLoss(temperature=3.0)(s, t).item() == pytest.approx(sym, rel=1e-5)


def test_mse_logits_matches_reference() -> None:
    s, t, _ = _data(3)
    ref = sum(float(s[i, j] - t[i, j]) ** 2 for i in range(B) for j in range(K)) / (B * K)
    assert MSELogitsLoss()(s, t).item() == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize(
    "loss", [KDLoss(), MSELogitsLoss(), ReverseKLLoss(), SymmetricKLLoss(), DKDLoss(), KDCELoss(alpha=1.0)]
)
def test_zero_when_student_equals_teacher(loss: torch.nn.Module) -> None:
    s, _, y = _data(4)
    assert abs(loss(s, s.clone(), y).item()) < 1e-6


@pytest.mark.parametrize(
    "loss", [KDLoss(), MSELogitsLoss(), ReverseKLLoss(), SymmetricKLLoss(), DKDLoss(), KDCELoss()]
)
def test_gradient_reaches_student_only(loss: torch.nn.Module) -> None:
    s, t, y = _data(5)
    s.requires_grad_(True)
    t.requires_grad_(True)
    loss(s, t, y).backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert t.grad is None


def test_kd_ce_endpoints_and_mixture() -> None:
    s, t, y = _data(6)
    ce = F.cross_entropy(s, y)
    kd = KDLoss(temperature=2.0)(s, t)
    torch.testing.assert_close(KDCELoss(temperature=2.0, alpha=0.0)(s, t, y), ce)
    torch.testing.assert_close(KDCELoss(temperature=2.0, alpha=1.0)(s, t, y), kd)
    torch.testing.assert_close(KDCELoss(temperature=2.0, alpha=0.3)(s, t, y), 0.7 * ce + 0.3 * kd)


def test_kd_ce_ignores_unlabelled_rows() -> None:
    s, t, y = _data(7)
    y_masked = y.clone()
    y_masked[:2] = IGNORE_LABEL
    torch.testing.assert_close(KDCELoss(alpha=0.0)(s, t, y_masked), F.cross_entropy(s[2:], y[2:]))
    # No labelled row at all: the CE part is 0 (not NaN) and KD still counts every row.
    none = torch.full_like(y, IGNORE_LABEL)
    torch.testing.assert_close(KDCELoss(alpha=0.5)(s, t, none), 0.5 * KDLoss()(s, t))


@pytest.mark.parametrize("cls", [KDCELoss, DKDLoss])
def test_label_losses_need_labels(cls: type) -> None:
    s, t, _ = _data()
    with pytest.raises(ValueError, match="needs class labels"):
        cls()(s, t)


def test_dkd_matches_hand_computed_terms() -> None:
    s, t, y = _data(8)
    tckd, nckd = _ref_dkd_terms(s, t, y, 4.0)
    assert DKDLoss(alpha=1.0, beta=0.0)(s, t, y).item() == pytest.approx(tckd, rel=1e-5)
    assert DKDLoss(alpha=0.0, beta=1.0)(s, t, y).item() == pytest.approx(nckd, rel=1e-5)
    assert DKDLoss(alpha=0.5, beta=8.0, temperature=4.0)(s, t, y).item() == pytest.approx(
        0.5 * tckd + 8.0 * nckd, rel=1e-5
    )


def test_dkd_decomposes_kd_per_row() -> None:
    # The paper's identity KD = TCKD + (1 - p_t[y]) * NCKD, checked row by row.
    s, t, y = _data(9)
    for i in range(B):
        si, ti, yi = s[i : i + 1], t[i : i + 1], y[i : i + 1]
        tckd = DKDLoss(alpha=1.0, beta=0.0, temperature=2.0)(si, ti, yi)
        nckd = DKDLoss(alpha=0.0, beta=1.0, temperature=2.0)(si, ti, yi)
        pt_target = soften(ti, 2.0)[0, yi[0]]
        torch.testing.assert_close(tckd + (1 - pt_target) * nckd, KDLoss(temperature=2.0)(si, ti))


def test_dkd_skips_unlabelled_rows() -> None:
    s, t, y = _data(10)
    y_masked = y.clone()
    y_masked[0] = IGNORE_LABEL
    torch.testing.assert_close(DKDLoss()(s, t, y_masked), DKDLoss()(s[1:], t[1:], y[1:]))
    zero = DKDLoss()(s, t, torch.full_like(y, IGNORE_LABEL))
    assert zero.item() == 0.0


def test_soften() -> None:
    x = torch.randn(3, 4)
    torch.testing.assert_close(soften(x, 2.0), torch.softmax(x / 2.0, dim=-1))
    torch.testing.assert_close(soften(x, 2.0).sum(-1), torch.ones(3))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        soften(x, 0.0)


def test_invalid_and_suspicious_settings() -> None:
    with pytest.raises(ConfigError, match=r"`temperature` must be > 0, got -1"):
        KDLoss(temperature=-1)
    with pytest.raises(ConfigError, match=r"`alpha` must be in \[0, 1\], got 1.5"):
        KDCELoss(alpha=1.5)
    with pytest.raises(ConfigError, match=r"`beta` must be >= 0, got -2"):
        DKDLoss(beta=-2)
    with pytest.raises(ConfigError, match=r"`temperature` must be a finite number, got 'hot'"):
        ReverseKLLoss(temperature="hot")  # type: ignore[arg-type]
    with pytest.warns(UserWarning, match="unusually high"):
        KDLoss(temperature=50)


def test_half_precision_inputs_give_float32() -> None:
    s, t, y = _data(11)
    out = KDLoss()(s.bfloat16(), t.bfloat16())
    assert out.dtype == torch.float32 and torch.isfinite(out)


@pytest.mark.parametrize("loss", [KDLoss(), ReverseKLLoss(), SymmetricKLLoss(), DKDLoss(), KDCELoss()])
def test_gradients_match_finite_differences(loss: torch.nn.Module) -> None:
    s, t, y = (x.double() if x.is_floating_point() else x for x in _data(12))
    s.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: loss(x, t, y), (s,))
