"""Distillation strategies: the registry :data:`STRATEGIES` and :func:`build_strategy`.

A strategy is an ``nn.Module`` (:class:`~mmdistill.distill.strategies.base.DistillStrategy`) that
owns the student, the frozen teacher(s) or their caches and the weighted loss terms (adapters live
inside the feature losses). ``strategy(batch)`` is the student's output; ``strategy(batch,
compute_loss=True)`` is ``{"loss", "logits", "loss/ce", "loss/<term>", ...}``.

Registered names (each a factory ``f(student, *, teachers, caches, terms, ...) -> DistillStrategy``):

==============  ==========================================================================
logit_kd        Hinton KD on the teacher's logits (default term ``kd_ce``)
feature_kd      ``kd_ce`` + FitNets ``hint`` on the ``fused`` feature
multi_teacher   weighted mixture of several teachers (``fixed`` or ``confidence`` weights)
crossmodal      logit KD into a student with a strict subset of the teacher's modalities
robust          logit KD with modalities randomly hidden from the student only (p = 0.3)
teacher_free    Tf-KD_reg: KD from a virtual teacher built from the labels (no teacher)
==============  ==========================================================================

Entry metadata: ``teachers`` = ``"one"``, ``"many"`` or ``"none"``; ``options`` = the names of the
factory's strategy-specific keyword arguments (a config's ``kwargs``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from mmdistill.distill import registries as _registries
from mmdistill.distill.strategies.base import DistillStrategy, Term, as_terms, distill_step
from mmdistill.distill.strategies.feature import feature_kd
from mmdistill.distill.strategies.logit import crossmodal, logit_kd, robust
from mmdistill.distill.strategies.multi_teacher import multi_teacher
from mmdistill.distill.strategies.teacher_free import teacher_free
from mmdistill.registry import Registry

# The losses package may host the registry one day; until then it lives here.
STRATEGIES: Registry = getattr(_registries, "STRATEGIES", None) or Registry("strategy")
"""Strategy factories; see the module docstring for the names and the entry metadata."""

_BUILTIN = (
    ("logit_kd", logit_kd, "one", (), "Hinton KD on the teacher's logits (kd_ce)"),
    ("feature_kd", feature_kd, "one", (), "kd_ce + FitNets hint on the fused feature"),
    ("multi_teacher", multi_teacher, "many", ("teacher_weighting", "teacher_weights"),
     "weighted mixture of several teachers (fixed or confidence weights)"),
    ("crossmodal", crossmodal, "one", (), "KD into a student with fewer modalities than the teacher"),
    ("robust", robust, "one", (), "KD with modalities hidden from the student only (missing-modality "
                                  "robust)"),
    ("teacher_free", teacher_free, "none", ("correct_prob",), "Tf-KD_reg: KD from a label-made virtual "
                                                              "teacher"),
)
for _name, _factory, _teachers, _options, _doc in _BUILTIN:
    if _name not in STRATEGIES:
        STRATEGIES.register(_name, description=_doc, teachers=_teachers, options=_options)(_factory)


def build_strategy(name: str, student: nn.Module, *, key: str = "distill", **kwargs: Any) -> DistillStrategy:
    """Build the strategy registered as ``name`` around ``student``.

    Args:
        name: registry name (``logit_kd``, ...); unknown names fail with a did-you-mean.
        student: the model to train.
        key: config key of this student (``distill.students.kd``), used in error messages.
        **kwargs: the factory's arguments: ``teachers``, ``caches``, ``terms``, ``ce_weight``,
            ``modality_dropout``, ``label_smoothing``, ``task_weights`` and its own options.
    """
    factory = STRATEGIES.get(name, key=f"{key}.strategy")
    return factory(student, key=key, **kwargs)  # type: ignore[operator]


__all__ = ["STRATEGIES", "DistillStrategy", "Term", "as_terms", "build_strategy", "distill_step"]
