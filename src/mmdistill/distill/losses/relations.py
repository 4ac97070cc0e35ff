"""Relation-based losses: match how samples relate to each other, not the features themselves.

Each compares a ``[B, B]`` (or ``[B, B, B]``) structure computed separately inside the student
batch and inside the teacher batch, so the widths may differ and no adapter is needed.
Constructors take ``(student_dim, teacher_dim, **own)`` like the feature losses; the dims are only
checked against the inputs. Inputs ``[B, D]`` (``[B, ...]`` is flattened per row); the teacher is
detached inside. A batch too small to have a relation (one row; fewer than three for angles)
gives a zero loss that is still attached to the student's graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmdistill.distill.losses import _checks
from mmdistill.distill.registries import LOSSES

_EPS = 1e-12


def _flat(
    student: torch.Tensor, teacher: torch.Tensor, module: nn.Module, loss: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check widths and batch sizes; return ``[B, Ds']`` student and detached ``[B, Dt']`` teacher.

    Both come back in a common dtype of at least float32 (see :func:`_checks.upcast`).
    """
    sd, td = module.student_dim, module.teacher_dim  # type: ignore[attr-defined]
    if student.dim() < 2 or teacher.dim() < 2 or student.shape[-1] != sd or teacher.shape[-1] != td:
        raise ValueError(
            f"loss '{loss}' was built for student_dim={sd}, teacher_dim={td} but got student "
            f"{tuple(student.shape)} and teacher {tuple(teacher.shape)}"
        )
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(f"loss '{loss}': batch sizes differ ({student.shape[0]} vs {teacher.shape[0]})")
    b = student.shape[0]
    s, t = _checks.upcast(student, teacher.detach())
    return s.reshape(b, -1), t.reshape(b, -1)


def _gram_and_distances(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gram matrix and Euclidean distance matrix of the rows of ``x`` ``[B, D]`` → ``[B, B]`` each.

    Rows are centred first: distances and angles are translation invariant, and centring avoids
    the cancellation of ``|x_i|^2 + |x_j|^2 - 2 x_i.x_j`` for features with a large common offset.
    The clamp keeps ``sqrt`` differentiable on the diagonal (which callers mask out).
    """
    x = x - x.mean(dim=0, keepdim=True)
    gram = x @ x.T
    sq = gram.diagonal()
    dist = (sq[:, None] + sq[None, :] - 2.0 * gram).clamp_min(_EPS).sqrt()
    return gram, dist


@LOSSES.register("rkd_distance", family="relation")
class RKDDistanceLoss(nn.Module):
    """RKD distance-wise loss: ``mean_{i != j} huber(d_s(i,j) / mu_s, d_t(i,j) / mu_t)``.

    ``d(i,j) = ||x_i - x_j||_2`` and ``mu`` is the mean of ``d`` over the ``B(B-1)`` ordered pairs
    ``i != j`` (the paper's normalization, which makes the loss scale-free); huber is smooth L1
    with ``delta = 1``. Mean over the ``B(B-1)`` pairs (the authors' code also averages in the
    ``B`` zero diagonal entries, a factor ``(B-1)/B`` smaller).

    Reference: W. Park, D. Kim, Y. Lu, M. Cho, "Relational Knowledge Distillation", CVPR 2019,
    arXiv:1904.05068.

    Args:
        student_dim: student feature width ``Ds`` (checked against the input).
        teacher_dim: teacher feature width ``Dt`` (checked against the input).

    Shapes:
        student_feat: ``[B, Ds]``; teacher_feat: ``[B, Dt]``. Returns ``[]``.
    """

    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.student_dim = _checks.dim(student_dim, "student_dim")
        self.teacher_dim = _checks.dim(teacher_dim, "teacher_dim")

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        """The distance-wise RKD loss."""
        s, t = _flat(student_feat, teacher_feat, self, "rkd_distance")
        b = s.shape[0]
        if b < 2:
            return student_feat.sum() * 0.0
        off = ~torch.eye(b, dtype=torch.bool, device=s.device)
        d_s = _gram_and_distances(s)[1][off]
        d_t = _gram_and_distances(t)[1][off]
        return F.smooth_l1_loss(d_s / d_s.mean().clamp_min(_EPS), d_t / d_t.mean().clamp_min(_EPS))


def _angles(x: torch.Tensor) -> torch.Tensor:
    """``cos`` of the angle at ``x_j`` between ``x_i`` and ``x_k``, as ``[j, i, k]`` → ``[B, B, B]``.

    ``<x_i - x_j, x_k - x_j> = G_ik - G_ij - G_jk + G_jj`` from the Gram matrix ``G``, so memory is
    ``O(B^3)`` rather than the ``O(B^2 D)`` of materialising every difference vector.
    """
    gram, dist = _gram_and_distances(x)
    diag = gram.diagonal()
    dot = gram[None, :, :] - gram[:, :, None] - gram[:, None, :] + diag[:, None, None]
    cos = dot / (dist[:, :, None] * dist[:, None, :])
    # Duplicate rows give 0/0-like noise; a cosine is in [-1, 1] whatever the rounding.
    return cos.clamp(-1.0, 1.0)


@LOSSES.register("rkd_angle", family="relation")
class RKDAngleLoss(nn.Module):
    """RKD angle-wise loss: ``mean_{i,j,k distinct} huber(cos_s(i,j,k), cos_t(i,j,k))``.

    ``cos(i,j,k) = <e_ij, e_kj>`` with ``e_ij = (x_i - x_j) / ||x_i - x_j||``, the cosine of the
    angle at ``x_j``; huber is smooth L1 with ``delta = 1``. Mean over the ``B(B-1)(B-2)`` ordered
    triplets of distinct rows (the paper's set; the authors' code also averages in degenerate
    triplets). Cost is ``O(B^3)`` time and memory: ``B = 256`` needs ~0.3 GB.

    Reference: W. Park, D. Kim, Y. Lu, M. Cho, "Relational Knowledge Distillation", CVPR 2019,
    arXiv:1904.05068.

    Args:
        student_dim: student feature width ``Ds`` (checked against the input).
        teacher_dim: teacher feature width ``Dt`` (checked against the input).

    Shapes:
        student_feat: ``[B, Ds]``; teacher_feat: ``[B, Dt]``. Returns ``[]``.
    """

    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.student_dim = _checks.dim(student_dim, "student_dim")
        self.teacher_dim = _checks.dim(teacher_dim, "teacher_dim")

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        """The angle-wise RKD loss."""
        s, t = _flat(student_feat, teacher_feat, self, "rkd_angle")
        b = s.shape[0]
        if b < 3:
            return student_feat.sum() * 0.0
        eye = torch.eye(b, dtype=torch.bool, device=s.device)
        # [j, i, k] is kept iff i != j, k != j and i != k.
        distinct = ~(eye[:, :, None] | eye[:, None, :] | eye[None, :, :])
        return F.smooth_l1_loss(_angles(s)[distinct], _angles(t)[distinct])


def _similarity(x: torch.Tensor) -> torch.Tensor:
    """Row-L2-normalized Gram matrix ``normalize(x x^T)`` of ``x`` ``[B, D]`` → ``[B, B]``."""
    return F.normalize(x @ x.T, dim=1)


@LOSSES.register("sp", family="relation")
class SimilarityPreservingLoss(nn.Module):
    """Similarity-preserving KD: ``||norm(G_s) - norm(G_t)||_F^2 / B^2``.

    ``G = F F^T`` is the ``[B, B]`` batch similarity of the flattened features and ``norm``
    L2-normalizes each of its rows. Divided by ``B^2`` as in the paper (a mean over the entries).

    Reference: F. Tung, G. Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019,
    arXiv:1907.09682.

    Args:
        student_dim: student feature width ``Ds`` (checked against the input).
        teacher_dim: teacher feature width ``Dt`` (checked against the input).

    Shapes:
        student_feat: ``[B, Ds]``; teacher_feat: ``[B, Dt]``. Returns ``[]``.
    """

    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.student_dim = _checks.dim(student_dim, "student_dim")
        self.teacher_dim = _checks.dim(teacher_dim, "teacher_dim")

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        """The similarity-preserving loss."""
        s, t = _flat(student_feat, teacher_feat, self, "sp")
        return (_similarity(s) - _similarity(t)).pow(2).mean()


def _conditional(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``p(j|i) = K(i, j) / sum_{k != i} K(i, k)``, ``K = (cos + 1) / 2``, self excluded → ``[B, B-1]``."""
    b = x.shape[0]
    unit = F.normalize(x, dim=1, eps=eps)
    kernel = (unit @ unit.T + 1.0) / 2.0
    kernel = kernel[~torch.eye(b, dtype=torch.bool, device=x.device)].reshape(b, b - 1)
    return kernel / kernel.sum(dim=1, keepdim=True).clamp_min(eps)


@LOSSES.register("pkt", family="relation")
class PKTLoss(nn.Module):
    """Probabilistic knowledge transfer: ``mean_i sum_{j != i} p_t(j|i) log(p_t(j|i) / p_s(j|i))``.

    ``p(j|i)`` is the cosine-similarity kernel ``K = (cos(x_i, x_j) + 1) / 2`` normalized over
    ``j != i`` (the paper's conditional distribution). KL summed over ``j``, mean over anchors ``i``
    (``eps = 1e-7`` inside the log as in the authors' code, which instead averages over all ``B^2``
    entries and keeps ``j = i``: a factor ``1/B`` smaller).

    Reference: N. Passalis, A. Tefas, "Learning Deep Representations with Probabilistic
    Knowledge Transfer", ECCV 2018, arXiv:1803.10837.

    Args:
        student_dim: student feature width ``Ds`` (checked against the input).
        teacher_dim: teacher feature width ``Dt`` (checked against the input).

    Shapes:
        student_feat: ``[B, Ds]``; teacher_feat: ``[B, Dt]``. Returns ``[]``.
    """

    eps: float = 1e-7

    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.student_dim = _checks.dim(student_dim, "student_dim")
        self.teacher_dim = _checks.dim(teacher_dim, "teacher_dim")

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        """The PKT loss."""
        s, t = _flat(student_feat, teacher_feat, self, "pkt")
        if s.shape[0] < 2:
            return student_feat.sum() * 0.0
        p_s, p_t = _conditional(s, self.eps), _conditional(t, self.eps)
        return (p_t * torch.log((p_t + self.eps) / (p_s + self.eps))).sum(dim=1).mean()
