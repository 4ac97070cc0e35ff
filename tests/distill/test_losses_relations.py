"""Relation-based losses against hand-written references (loops over pairs and triplets)."""

from __future__ import annotations

import math
from itertools import permutations

import pytest
import torch

from mmdistill.distill.losses.relations import (
    PKTLoss,
    RKDAngleLoss,
    RKDDistanceLoss,
    SimilarityPreservingLoss,
)

B = 5


def _rows(x: torch.Tensor) -> list[list[float]]:
    return [[float(v) for v in row] for row in x.detach()]


def _dist(a: list[float], b: list[float]) -> float:
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))


def _huber(a: float, b: float) -> float:
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


def _ref_rkd_distance(s: torch.Tensor, t: torch.Tensor) -> float:
    def normed(x: list[list[float]]) -> dict[tuple[int, int], float]:
        d = {(i, j): _dist(x[i], x[j]) for i, j in permutations(range(len(x)), 2)}
        mu = sum(d.values()) / len(d)
        return {k: v / mu for k, v in d.items()}

    ds, dt = normed(_rows(s)), normed(_rows(t))
    return sum(_huber(ds[k], dt[k]) for k in ds) / len(ds)


def _ref_rkd_angle(s: torch.Tensor, t: torch.Tensor) -> float:
    def cosines(x: list[list[float]]) -> dict[tuple[int, int, int], float]:
        out = {}
        for i, j, k in permutations(range(len(x)), 3):
            e1 = [a - b for a, b in zip(x[i], x[j], strict=True)]
            e2 = [a - b for a, b in zip(x[k], x[j], strict=True)]
            out[i, j, k] = sum(a * b for a, b in zip(e1, e2, strict=True)) / (
                math.sqrt(sum(a * a for a in e1)) * math.sqrt(sum(b * b for b in e2))
            )
        return out

    cs, ct = cosines(_rows(s)), cosines(_rows(t))
    return sum(_huber(cs[k], ct[k]) for k in cs) / len(cs)


def _ref_sp(s: torch.Tensor, t: torch.Tensor) -> float:
    def sim(x: list[list[float]]) -> list[list[float]]:
        g = [[sum(a * b for a, b in zip(xi, xj, strict=True)) for xj in x] for xi in x]
        return [[v / math.sqrt(sum(w * w for w in row)) for v in row] for row in g]

    gs, gt = sim(_rows(s)), sim(_rows(t))
    n = len(gs)
    return sum((gs[i][j] - gt[i][j]) ** 2 for i in range(n) for j in range(n)) / n**2


def _ref_pkt(s: torch.Tensor, t: torch.Tensor, eps: float = 1e-7) -> float:
    def cond(x: list[list[float]]) -> list[dict[int, float]]:
        n = len(x)
        norms = [math.sqrt(sum(v * v for v in r)) for r in x]
        out = []
        for i in range(n):
            k = {j: (sum(a * b for a, b in zip(x[i], x[j], strict=True)) / (norms[i] * norms[j]) + 1) / 2
                 for j in range(n) if j != i}
            z = sum(k.values())
            out.append({j: v / z for j, v in k.items()})
        return out

    ps, pt = cond(_rows(s)), cond(_rows(t))
    total = sum(
        pt[i][j] * math.log((pt[i][j] + eps) / (ps[i][j] + eps)) for i, row in enumerate(ps) for j in row
    )
    return total / len(ps)


CASES = [
    (RKDDistanceLoss, _ref_rkd_distance),
    (RKDAngleLoss, _ref_rkd_angle),
    (SimilarityPreservingLoss, _ref_sp),
    (PKTLoss, _ref_pkt),
]


@pytest.mark.parametrize(("cls", "ref"), CASES)
def test_matches_reference_with_different_widths(cls: type, ref: object) -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(B, 3, generator=g), torch.randn(B, 7, generator=g) * 4 + 1
    value = cls(3, 7)(s, t)
    assert value.shape == () and value.item() == pytest.approx(ref(s, t), rel=1e-4, abs=1e-6)  # type: ignore[operator]


@pytest.mark.parametrize(("cls", "ref"), CASES)
def test_zero_when_student_equals_teacher_and_teacher_gets_no_grad(cls: type, ref: object) -> None:
    g = torch.Generator().manual_seed(1)
    s = torch.randn(B, 6, generator=g, requires_grad=True)
    t = s.detach().clone().requires_grad_(True)
    loss = cls(6, 6)
    assert loss(s, t).item() == pytest.approx(0.0, abs=1e-6)
    loss(s, torch.randn(B, 6, generator=g) + t).backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert t.grad is None


@pytest.mark.parametrize("cls", [RKDDistanceLoss, RKDAngleLoss])
def test_rkd_is_invariant_to_similarity_transforms(cls: type) -> None:
    # Distances are normalized by their mean and angles ignore scale, rotation and translation.
    g = torch.Generator().manual_seed(2)
    t = torch.randn(B, 4, generator=g)
    rotation, _ = torch.linalg.qr(torch.randn(4, 4, generator=g))
    s = 3.0 * t @ rotation + 5.0
    assert cls(4, 4)(s, t).item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize(("cls", "min_b"), [(RKDDistanceLoss, 2), (RKDAngleLoss, 3), (PKTLoss, 2)])
def test_too_small_batches_give_attached_zero(cls: type, min_b: int) -> None:
    s = torch.randn(min_b - 1, 3, requires_grad=True)
    value = cls(3, 3)(s, torch.randn(min_b - 1, 3))
    assert value.item() == 0.0
    value.backward()
    assert s.grad is not None


def test_duplicate_rows_stay_finite() -> None:
    s = torch.randn(4, 3)
    s[1] = s[0]
    s.requires_grad_(True)
    for cls in (RKDDistanceLoss, RKDAngleLoss):
        value = cls(3, 3)(s, torch.randn(4, 3))
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(s.grad).all()  # type: ignore[arg-type]
        s.grad = None


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="built for student_dim=3, teacher_dim=7"):
        SimilarityPreservingLoss(3, 7)(torch.randn(4, 3), torch.randn(4, 6))
    with pytest.raises(ValueError, match="batch sizes differ"):
        PKTLoss(3, 3)(torch.randn(4, 3), torch.randn(5, 3))


@pytest.mark.parametrize("cls", [RKDDistanceLoss, RKDAngleLoss, SimilarityPreservingLoss, PKTLoss])
def test_gradients_match_finite_differences(cls: type) -> None:
    # The Gram-matrix shortcuts (distances, angles) must differentiate like the plain formulas.
    g = torch.Generator().manual_seed(3)
    s = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 5, generator=g, dtype=torch.float64)
    loss = cls(3, 5)
    assert torch.autograd.gradcheck(lambda x: loss(x, t), (s,))
