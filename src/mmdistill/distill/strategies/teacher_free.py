"""Teacher-free distillation ``teacher_free`` (Tf-KD_reg): KD from a hand-made virtual teacher.

L. Yuan, F. E. H. Tay, G. Li, T. Wang, J. Feng, "Revisiting Knowledge Distillation via Label
Smoothing Regularization", CVPR 2020. The virtual teacher of a row with label ``c`` puts
probability ``a`` (``correct_prob``, default 0.9) on ``c`` and ``(1 - a) / (K - 1)`` on every other
class; the student is trained with the usual KD terms against it, so no teacher model is needed.

Here the virtual teacher's *logits* are ``log p_d``, so its softmax at temperature ``T`` is
``p_d^(1/T)`` renormalized, and the KD optimum of the student at ``T`` is ``softmax(z) = p_d``
exactly at temperature 1, for every ``T``: ``T`` only shapes the gradients. (The authors' code
feeds the probabilities themselves as logits, ``softmax(p_d / T)``, which makes the target almost
uniform for large ``T``; the log form keeps ``a`` meaningful.) Rows without a label
(``IGNORE_LABEL``) get the student's own detached logits as target, i.e. no distillation signal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mmdistill.data.batch import IGNORE_LABEL, Batch
from mmdistill.distill.strategies.base import DistillStrategy, OutputCache, TeacherOutputs, Term
from mmdistill.distill.strategies.logit import DEFAULT_LOGIT_TERMS
from mmdistill.errors import ConfigError


def virtual_teacher_logits(labels: torch.Tensor, num_classes: int, correct_prob: float) -> torch.Tensor:
    """``log p_d`` per row: ``log a`` at the label, ``log((1 - a) / (K - 1))`` elsewhere.

    Args:
        labels: class indices; ``IGNORE_LABEL`` rows get all zeros (a uniform distribution).
        num_classes: K >= 2.
        correct_prob: a in ``(0, 1)``; should exceed ``1 / K`` to favour the true class.

    Shapes:
        labels: ``[B]`` long. Returns ``[B, K]`` float32.
    """
    off = math.log((1.0 - correct_prob) / (num_classes - 1))
    out = torch.full((labels.shape[0], num_classes), off, dtype=torch.float32, device=labels.device)
    valid = labels != IGNORE_LABEL
    rows = valid.nonzero().squeeze(1)
    out[rows, labels[rows]] = math.log(correct_prob)
    out[~valid] = 0.0
    return out


class VirtualTeacher:
    """The :data:`~mmdistill.distill.strategies.base.TargetFn` of ``teacher_free``."""

    def __init__(self, correct_prob: float) -> None:
        self.correct_prob = correct_prob

    def __call__(self, outputs: TeacherOutputs, batch: Batch, temperature: float,
                 student_logits: torch.Tensor, student_batch: Batch) -> torch.Tensor:
        labels = batch["label"]
        target = virtual_teacher_logits(labels, int(student_logits.shape[-1]), self.correct_prob)
        unlabelled = (labels == IGNORE_LABEL).unsqueeze(1)
        # The student's own (detached) logits: zero KD loss and gradient on unlabelled rows.
        return torch.where(unlabelled, student_logits.detach().float(), target)


def teacher_free(
    student: nn.Module,
    *,
    teachers: Mapping[str, nn.Module] | None = None,
    caches: Mapping[str, OutputCache] | None = None,
    terms: Sequence[Term | Mapping[str, Any]] | None = None,
    correct_prob: float = 0.9,
    modality_dropout: float | None = None,
    key: str = "distill",
    **common: Any,
) -> DistillStrategy:
    """Tf-KD_reg: KD against a virtual teacher built from the labels (see the module docstring).

    Args:
        teachers: must be empty (this strategy needs none).
        correct_prob: probability the virtual teacher gives the true class, in ``(1/K, 1)``.
        terms: logit terms only; default :data:`~mmdistill.distill.strategies.logit.DEFAULT_LOGIT_TERMS`.
        **common: the other :class:`DistillStrategy` arguments.
    """
    problems = []
    if teachers:
        problems.append(f"{key}.teachers: strategy 'teacher_free' uses no teacher, got {list(teachers)}; "
                        "set teachers: [] for this student")
    k = int(getattr(student, "num_classes", 2))
    if not 1.0 / k < correct_prob < 1.0:
        problems.append(f"{key}.kwargs.correct_prob: must be in (1/K, 1) = ({1.0 / k:.3g}, 1) for K = {k} "
                        f"classes, got {correct_prob}; the paper uses 0.9 to 0.99")
    if problems:
        raise ConfigError(problems)
    return DistillStrategy(student, terms=DEFAULT_LOGIT_TERMS if terms is None else terms, teachers=None,
                           caches=None, target_fn=VirtualTeacher(correct_prob),
                           modality_dropout=modality_dropout or 0.0, name="teacher_free", key=key, **common)
