"""Cross-modal contrastive distillation: align a student embedding with a teacher embedding.

Typical use: pull a student's audio-branch embedding towards the teacher's fused embedding of the
same sample, and away from the other samples of the batch (in-batch negatives). Unlike the
feature losses, only the *ranking* of pairs matters, so the student keeps its own geometry.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmdistill.distill.losses import _checks
from mmdistill.distill.registries import LOSSES
from mmdistill.errors import ConfigError


@LOSSES.register("contrastive", family="contrastive")
class ContrastiveLoss(nn.Module):
    """InfoNCE between projected student and teacher embeddings, positives on the diagonal.

    ``z_s = normalize(W_s s)``, ``z_t = normalize(W_t t)`` (learned linear projections to
    ``proj_dim``, trainable parts of the loss module), ``L = z_s z_t^T / tau`` (``[B, B]``) and::

        loss_st = CE(L, arange(B))        # each student row must pick its own teacher row
        loss_ts = CE(L^T, arange(B))      # and each teacher row its own student row
        loss = (loss_st + loss_ts) / 2 if symmetric else loss_st

    Cross-entropy is averaged over the batch. The teacher input is detached (its projection still
    learns). The lower bound ``log(B) - loss`` on the mutual information (van den Oord et al.)
    makes larger batches give a stronger signal; a batch of one gives 0.

    References: Y. Tian, D. Krishnan, P. Isola, "Contrastive Representation Distillation",
    ICLR 2020, arXiv:1910.10699 (with in-batch negatives instead of CRD's memory bank);
    A. van den Oord, Y. Li, O. Vinyals, "Representation Learning with Contrastive Predictive
    Coding", arXiv:1807.03748, 2018.

    Args:
        student_dim: student embedding width ``Ds``.
        teacher_dim: teacher embedding width ``Dt``.
        proj_dim: width ``P`` of the shared embedding space.
        temperature: ``tau > 0``; typical 0.05-0.5 (warns above 20).
        symmetric: average both directions (CLIP-style) instead of student → teacher only.

    Shapes:
        student_feat: ``[B, Ds]``; teacher_feat: ``[B, Dt]``. Returns ``[]``.
    """

    def __init__(
        self,
        student_dim: int,
        teacher_dim: int,
        proj_dim: int = 64,
        temperature: float = 0.1,
        symmetric: bool = True,
    ) -> None:
        super().__init__()
        self.student_dim = _checks.dim(student_dim, "student_dim")
        self.teacher_dim = _checks.dim(teacher_dim, "teacher_dim")
        self.proj_dim = _checks.dim(proj_dim, "proj_dim")
        self.temperature = _checks.temperature(temperature)
        if not isinstance(symmetric, bool):
            raise ConfigError(f"`symmetric` must be true or false, got {symmetric!r}")
        self.symmetric = symmetric
        self.student_proj = nn.Linear(self.student_dim, self.proj_dim)
        self.teacher_proj = nn.Linear(self.teacher_dim, self.proj_dim)

    def logits(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        """Similarity logits ``z_s z_t^T / tau``: row ``i`` scores student ``i`` against every teacher row.

        Shapes:
            student_feat: ``[B, Ds]``; teacher_feat: ``[B, Dt]``. Returns ``[B, B]``.
        """
        if (
            student_feat.dim() != 2
            or teacher_feat.dim() != 2
            or student_feat.shape[1] != self.student_dim
            or teacher_feat.shape[1] != self.teacher_dim
            or student_feat.shape[0] != teacher_feat.shape[0]
        ):
            raise ValueError(
                f"loss 'contrastive' was built for [B, {self.student_dim}] student and "
                f"[B, {self.teacher_dim}] teacher embeddings, got {tuple(student_feat.shape)} and "
                f"{tuple(teacher_feat.shape)}"
            )
        z_s = F.normalize(self.student_proj(student_feat.float()), dim=1)
        z_t = F.normalize(self.teacher_proj(teacher_feat.detach().float()), dim=1)
        return z_s @ z_t.T / self.temperature

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        """The InfoNCE loss."""
        logits = self.logits(student_feat, teacher_feat)
        target = torch.arange(logits.shape[0], device=logits.device)
        loss = F.cross_entropy(logits, target)
        if self.symmetric:
            loss = 0.5 * (loss + F.cross_entropy(logits.T, target))
        return loss

    def extra_repr(self) -> str:
        return f"proj_dim={self.proj_dim}, temperature={self.temperature:g}, symmetric={self.symmetric}"
