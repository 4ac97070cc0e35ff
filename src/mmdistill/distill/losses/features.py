"""Feature-based losses: match the student's intermediate representations to the teacher's.

Constructors take ``(student_dim, teacher_dim, **own)``. When the widths differ, ``hint`` and
``cosine`` own a learned adapter (``nn.Linear(student_dim, teacher_dim, bias=False)``, a trainable
part of the loss module: put the loss's parameters in the optimizer); with equal widths there is
none (``adapter is None``) and the student is compared as is. The teacher is detached inside.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmdistill.distill.losses import _checks
from mmdistill.distill.registries import LOSSES


def make_adapter(student_dim: int, teacher_dim: int) -> nn.Linear | None:
    """A bias-free linear map student → teacher width, or None when the widths already agree.

    No bias: the adapter only has to change basis; an offset would let it match the teacher's
    mean without the student learning anything.
    """
    return nn.Linear(student_dim, teacher_dim, bias=False) if student_dim != teacher_dim else None


def check_pair(
    student: torch.Tensor, teacher: torch.Tensor, student_dim: int, teacher_dim: int, loss: str
) -> None:
    """Raise ``ValueError`` unless the last dims are the declared widths and the leading dims agree."""
    if student.shape[-1] != student_dim or teacher.shape[-1] != teacher_dim:
        raise ValueError(
            f"loss '{loss}' was built for student_dim={student_dim}, teacher_dim={teacher_dim} but got "
            f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)}"
        )
    if student.shape[:-1] != teacher.shape[:-1]:
        raise ValueError(
            f"loss '{loss}': student {tuple(student.shape)} and teacher {tuple(teacher.shape)} differ "
            "in their leading (batch/token) dims"
        )


@LOSSES.register("hint", family="feature")
class HintLoss(nn.Module):
    """FitNets hint: ``mean((A s - t)^2)`` over every element, ``A`` the adapter (identity if equal dims).

    Reference: A. Romero, N. Ballas, S. E. Kahou, A. Chassang, C. Gatta, Y. Bengio, "FitNets:
    Hints for Thin Deep Nets", ICLR 2015, arXiv:1412.6550.

    Args:
        student_dim: student feature width ``Ds``.
        teacher_dim: teacher feature width ``Dt``.

    Shapes:
        student_feat: ``[B, Ds]`` or ``[B, T, Ds]``; teacher_feat: ``[B, Dt]`` or ``[B, T, Dt]``
        (same leading dims). Returns ``[]``.
    """

    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.student_dim = _checks.dim(student_dim, "student_dim")
        self.teacher_dim = _checks.dim(teacher_dim, "teacher_dim")
        self.adapter = make_adapter(self.student_dim, self.teacher_dim)

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        """The hint regression loss."""
        check_pair(student_feat, teacher_feat, self.student_dim, self.teacher_dim, "hint")
        s = self.adapter(student_feat) if self.adapter is not None else student_feat
        s, t = _checks.upcast(s, teacher_feat.detach())
        return F.mse_loss(s, t)


@LOSSES.register("cosine", family="feature")
class CosineLoss(nn.Module):
    """Direction matching: ``mean(1 - cos(A s, t))`` over rows (and tokens), ``A`` the adapter.

    Scale-free, so it suits students whose feature norms differ from the teacher's; in ``[0, 2]``.

    Reference: the cosine variant of the FitNets hint (Romero et al., ICLR 2015,
    arXiv:1412.6550), as used e.g. by DistilBERT's cosine embedding loss (V. Sanh, L. Debut,
    J. Chaumond, T. Wolf, NeurIPS EMC^2 Workshop 2019, arXiv:1910.01108).

    Args:
        student_dim: student feature width ``Ds``.
        teacher_dim: teacher feature width ``Dt``.

    Shapes:
        student_feat: ``[B, Ds]`` or ``[B, T, Ds]``; teacher_feat: ``[B, Dt]`` or ``[B, T, Dt]``.
        Returns ``[]``.
    """

    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.student_dim = _checks.dim(student_dim, "student_dim")
        self.teacher_dim = _checks.dim(teacher_dim, "teacher_dim")
        self.adapter = make_adapter(self.student_dim, self.teacher_dim)

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        """One minus the mean cosine similarity."""
        check_pair(student_feat, teacher_feat, self.student_dim, self.teacher_dim, "cosine")
        s = self.adapter(student_feat) if self.adapter is not None else student_feat
        s, t = _checks.upcast(s, teacher_feat.detach())
        cos = F.cosine_similarity(s, t, dim=-1, eps=1e-8)
        return 1.0 - cos.mean()


def attention_map(tokens: torch.Tensor, length: int | None = None) -> torch.Tensor:
    """Spatial attention of token features: ``q = mean_c(f^2)``, pooled to ``length``, L2-normalized.

    Args:
        tokens: token features.
        length: number of positions to average-pool ``q`` down to (None: keep ``T``).

    Shapes:
        tokens: ``[B, T, D]``. Returns ``[B, length or T]`` with unit L2 norm per row.
    """
    q = _checks.upcast(tokens)[0].pow(2).mean(dim=-1)
    if length is not None and length != q.shape[1]:
        q = F.adaptive_avg_pool1d(q[:, None, :], length)[:, 0, :]
    return F.normalize(q, dim=1)


@LOSSES.register("attention", family="feature")
class AttentionTransferLoss(nn.Module):
    """Attention transfer on token features: ``mean((a_s - a_t)^2)`` over rows and positions.

    ``a = normalize(mean_c(f^2))`` is the per-position energy of the features, L2-normalized over
    the ``T`` positions, so it is channel-free and needs no adapter. When the token counts differ,
    the longer energy sequence is adaptive-average-pooled to the shorter length before
    normalizing. The reduction (mean over ``B*T`` elements) follows the authors' code, whose
    paper weight ``beta = 1000`` compensates for the small magnitude; set the loss weight likewise.

    Reference: S. Zagoruyko, N. Komodakis, "Paying More Attention to Attention: Improving the
    Performance of Convolutional Neural Networks via Attention Transfer", ICLR 2017,
    arXiv:1612.03928.

    Args:
        student_dim: student token width ``Ds`` (only checked against the input).
        teacher_dim: teacher token width ``Dt`` (only checked against the input).

    Shapes:
        student_feat: ``[B, T, Ds]``; teacher_feat: ``[B, T', Dt]``. Returns ``[]``.
    """

    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.student_dim = _checks.dim(student_dim, "student_dim")
        self.teacher_dim = _checks.dim(teacher_dim, "teacher_dim")

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        """The attention-transfer loss."""
        if student_feat.dim() != 3 or teacher_feat.dim() != 3:
            raise ValueError(
                "loss 'attention' needs token features [B, T, D]; got student "
                f"{tuple(student_feat.shape)} and teacher {tuple(teacher_feat.shape)} "
                "(use 'hint' for pooled ones)"
            )
        if student_feat.shape[0] != teacher_feat.shape[0]:
            raise ValueError(
                f"loss 'attention': batch sizes differ ({student_feat.shape[0]} vs {teacher_feat.shape[0]})"
            )
        if student_feat.shape[-1] != self.student_dim or teacher_feat.shape[-1] != self.teacher_dim:
            raise ValueError(
                f"loss 'attention' was built for student_dim={self.student_dim}, "
                f"teacher_dim={self.teacher_dim} but got student {tuple(student_feat.shape)} and teacher "
                f"{tuple(teacher_feat.shape)}"
            )
        length = min(student_feat.shape[1], teacher_feat.shape[1])
        a_s = attention_map(student_feat, length)
        a_t = attention_map(teacher_feat.detach(), length)
        return (a_s - a_t).pow(2).mean()
