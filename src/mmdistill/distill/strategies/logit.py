"""Response-based strategies: ``logit_kd``, ``crossmodal`` and ``robust`` (one teacher each).

All three train the student on the teacher's softened logits (default term: Hinton's ``kd_ce``,
which already holds the cross-entropy, so the separate CE weight defaults to 0); they differ in what
the student sees:

- ``logit_kd``: the same inputs as the teacher.
- ``crossmodal``: a student with a strict subset of the teacher's modalities (e.g. an image+text
  student of an image+text+audio teacher): the teacher's multimodal knowledge flows into a model
  that never reads the missing modality. Add a ``contrastive`` term (student ``<m>.pooled`` vs
  teacher ``fused``) to also align the representations.
- ``robust``: modalities are randomly hidden from the student only (probability
  ``modality_dropout``, default 0.3), while the teacher (or its cache) sees the full batch, so the
  student learns to predict what the full-input teacher says from partial input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from mmdistill.distill.strategies.base import DistillStrategy, OutputCache, Term
from mmdistill.errors import ConfigError

DEFAULT_LOGIT_TERMS: tuple[Term, ...] = (Term("kd_ce", 1.0, {"temperature": 4.0, "alpha": 0.9}),)
"""Default terms of the logit strategies: ``(1 - 0.9) CE + 0.9 T^2 KL`` at ``T = 4``."""

ROBUST_MODALITY_DROPOUT = 0.3
"""Default probability of hiding a modality from the ``robust`` strategy's student."""


def require_one_teacher(teachers: Mapping[str, nn.Module], name: str, key: str) -> None:
    if len(teachers) != 1:
        raise ConfigError(
            f"{key}.teachers: strategy '{name}' distills from exactly one teacher, got {list(teachers)}; "
            "keep one, or use strategy 'multi_teacher' to combine several"
        )


def logit_kd(
    student: nn.Module,
    *,
    teachers: Mapping[str, nn.Module],
    caches: Mapping[str, OutputCache] | None = None,
    terms: Sequence[Term | Mapping[str, Any]] | None = None,
    modality_dropout: float | None = None,
    key: str = "distill",
    **common: Any,
) -> DistillStrategy:
    """Classic knowledge distillation on the teacher's logits (Hinton et al., 2015).

    Args:
        student: the model to train.
        teachers: exactly one teacher, name → model.
        caches: optional name → precomputed outputs of that teacher on the training split.
        terms: default :data:`DEFAULT_LOGIT_TERMS`.
        modality_dropout: probability of hiding a modality from the student (default 0).
        **common: the other :class:`DistillStrategy` arguments (ce_weight, label_smoothing, ...).
    """
    require_one_teacher(teachers, "logit_kd", key)
    default = DEFAULT_LOGIT_TERMS if terms is None else terms
    return DistillStrategy(student, terms=default, teachers=teachers, caches=caches,
                           modality_dropout=modality_dropout or 0.0, name="logit_kd", key=key, **common)


def crossmodal(
    student: nn.Module,
    *,
    teachers: Mapping[str, nn.Module],
    caches: Mapping[str, OutputCache] | None = None,
    terms: Sequence[Term | Mapping[str, Any]] | None = None,
    modality_dropout: float | None = None,
    key: str = "distill",
    **common: Any,
) -> DistillStrategy:
    """Cross-modal distillation: a student with fewer modalities learns from a multimodal teacher.

    Raises:
        ConfigError: the student's modalities are not a strict subset of the teacher's.
    """
    require_one_teacher(teachers, "crossmodal", key)
    (teacher_name, teacher), = teachers.items()
    s_mods = list(getattr(student, "modalities", []))
    t_mods = list(getattr(teacher, "modalities", []))
    if not (set(s_mods) < set(t_mods)):
        raise ConfigError(
            f"{key}.modalities: strategy 'crossmodal' needs a student with a strict subset of the teacher's "
            f"modalities ({'+'.join(t_mods)} for '{teacher_name}'), got {'+'.join(s_mods)}; list fewer "
            "modalities, or use strategy logit_kd for a student with the same inputs"
        )
    default = DEFAULT_LOGIT_TERMS if terms is None else terms
    return DistillStrategy(student, terms=default, teachers=teachers, caches=caches,
                           modality_dropout=modality_dropout or 0.0, name="crossmodal", key=key, **common)


def robust(
    student: nn.Module,
    *,
    teachers: Mapping[str, nn.Module],
    caches: Mapping[str, OutputCache] | None = None,
    terms: Sequence[Term | Mapping[str, Any]] | None = None,
    modality_dropout: float | None = None,
    key: str = "distill",
    **common: Any,
) -> DistillStrategy:
    """Missing-modality robust distillation: the student sees randomly hidden modalities, the teacher all.

    Args:
        modality_dropout: probability of hiding each modality of a row from the student
            (default :data:`ROBUST_MODALITY_DROPOUT`; every row keeps at least one modality).
    """
    require_one_teacher(teachers, "robust", key)
    p = ROBUST_MODALITY_DROPOUT if modality_dropout is None else modality_dropout
    if not p > 0:
        raise ConfigError(f"{key}.modality_dropout: strategy 'robust' needs a probability in (0, 1), got "
                          f"{p}; use logit_kd for no modality dropout")
    return DistillStrategy(student, terms=DEFAULT_LOGIT_TERMS if terms is None else terms, teachers=teachers,
                           caches=caches, modality_dropout=p, name="robust", key=key, **common)
