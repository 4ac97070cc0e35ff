"""Feature-based strategy ``feature_kd``: logits KD plus a hint on an intermediate representation.

Default terms: Hinton's ``kd_ce`` on the logits and a FitNets ``hint`` (MSE through a learned
linear adapter when the widths differ) between the student's and the teacher's ``fused`` feature
(Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015). Any feature, relation or
contrastive loss of the registry can replace or join the hint, on any pair of features the models
expose (``"fused"``, ``"<modality>.pooled"``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from mmdistill.distill.strategies.base import DistillStrategy, OutputCache, Term
from mmdistill.distill.strategies.logit import DEFAULT_LOGIT_TERMS, require_one_teacher

DEFAULT_FEATURE_TERMS: tuple[Term, ...] = (
    *DEFAULT_LOGIT_TERMS,
    Term("hint", 1.0, {}, student_feature="fused", teacher_feature="fused"),
)
"""Default terms of ``feature_kd``: ``kd_ce`` (T = 4, alpha = 0.9) + ``hint`` on ``fused`` (weight 1)."""


def feature_kd(
    student: nn.Module,
    *,
    teachers: Mapping[str, nn.Module],
    caches: Mapping[str, OutputCache] | None = None,
    terms: Sequence[Term | Mapping[str, Any]] | None = None,
    modality_dropout: float | None = None,
    key: str = "distill",
    **common: Any,
) -> DistillStrategy:
    """Logit KD plus feature hints (see the module docstring).

    Args:
        teachers: one teacher (its features are compared); name → model.
        terms: default :data:`DEFAULT_FEATURE_TERMS`.
        **common: the other :class:`DistillStrategy` arguments.
    """
    require_one_teacher(teachers, "feature_kd", key)
    default = DEFAULT_FEATURE_TERMS if terms is None else terms
    return DistillStrategy(student, terms=default, teachers=teachers, caches=caches,
                           modality_dropout=modality_dropout or 0.0, name="feature_kd", key=key, **common)
