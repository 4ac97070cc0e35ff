"""Cross-modal contrastive (InfoNCE) loss against a hand-written reference."""

from __future__ import annotations

import math

import pytest
import torch

from mmdistill.distill.losses.crossmodal import ContrastiveLoss
from mmdistill.errors import ConfigError


def _ref(loss: ContrastiveLoss, s: torch.Tensor, t: torch.Tensor, symmetric: bool) -> float:
    def project(x: torch.Tensor, lin: torch.nn.Linear) -> list[list[float]]:
        w, b = lin.weight.detach(), lin.bias.detach()
        rows = []
        for row in x.detach():
            z = [float(b[o]) + sum(float(w[o, i]) * float(row[i]) for i in range(x.shape[1]))
                 for o in range(w.shape[0])]
            n = math.sqrt(sum(v * v for v in z))
            rows.append([v / n for v in z])
        return rows

    zs, zt = project(s, loss.student_proj), project(t, loss.teacher_proj)
    n = len(zs)
    logits = [[sum(a * b for a, b in zip(zs[i], zt[j], strict=True)) / loss.temperature for j in range(n)]
              for i in range(n)]

    def ce(rows: list[list[float]]) -> float:
        return sum(math.log(sum(math.exp(v) for v in r)) - r[i] for i, r in enumerate(rows)) / len(rows)

    forward = ce(logits)
    if not symmetric:
        return forward
    return 0.5 * (forward + ce([[logits[i][j] for i in range(n)] for j in range(n)]))


@pytest.mark.parametrize("symmetric", [True, False])
def test_matches_reference(symmetric: bool) -> None:
    torch.manual_seed(0)
    loss = ContrastiveLoss(5, 9, proj_dim=4, temperature=0.2, symmetric=symmetric)
    s, t = torch.randn(6, 5), torch.randn(6, 9)
    assert loss(s, t).item() == pytest.approx(_ref(loss, s, t, symmetric), rel=1e-5)


def test_aligned_pairs_score_lower_than_shuffled() -> None:
    torch.manual_seed(1)
    loss = ContrastiveLoss(8, 8, proj_dim=8, temperature=0.1)
    with torch.no_grad():  # the same projection on both sides: an aligned pair maps to the same point
        loss.teacher_proj.weight.copy_(loss.student_proj.weight)
        loss.teacher_proj.bias.copy_(loss.student_proj.bias)
    t = torch.randn(16, 8)
    s = t + 0.05 * torch.randn(16, 8)
    aligned = loss(s, t).item()
    shuffled = loss(s, t[torch.roll(torch.arange(16), 1)]).item()
    assert aligned < 0.5 < shuffled
    assert aligned < math.log(16) < shuffled  # below / above chance level


def test_gradients_reach_student_and_projections_only() -> None:
    loss = ContrastiveLoss(5, 9)
    s, t = torch.randn(4, 5, requires_grad=True), torch.randn(4, 9, requires_grad=True)
    loss(s, t).backward()
    assert s.grad is not None and t.grad is None
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in loss.parameters())
    assert loss.logits(s, t).shape == (4, 4)


def test_errors() -> None:
    with pytest.raises(ConfigError, match=r"`temperature` must be > 0, got 0"):
        ContrastiveLoss(4, 4, temperature=0)
    with pytest.raises(ConfigError, match=r"`proj_dim` must be a positive integer, got -3"):
        ContrastiveLoss(4, 4, proj_dim=-3)
    with pytest.raises(ConfigError, match=r"`symmetric` must be true or false, got 'yes'"):
        ContrastiveLoss(4, 4, symmetric="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"built for \[B, 4\] student and \[B, 6\] teacher"):
        ContrastiveLoss(4, 6)(torch.randn(3, 4), torch.randn(2, 6))
