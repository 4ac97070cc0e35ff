"""The pieces a strategy is made of: loss terms, teacher-output types and the cache protocol."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from mmdistill.data.batch import Batch
from mmdistill.errors import ConfigError

TeacherOutputs = dict[str, dict[str, torch.Tensor]]
"""Teacher name → ``{"logits": [B, K], "<feature>": [B, D], ...}`` for one batch."""

TargetFn = Callable[[TeacherOutputs, Batch, float, torch.Tensor, Batch], torch.Tensor]
"""``target(teacher_outputs, batch, temperature, student_logits, student_batch) -> teacher logits
[B, K]`` for the logit terms: logits whose softmax at ``temperature`` is the distribution the
student should match. ``batch`` is what the teachers saw, ``student_batch`` the student's view of
it (the same rows, with the modalities that modality dropout hid marked absent)."""


class OutputCache(Protocol):
    """What a strategy needs from a teacher cache (:class:`mmdistill.distill.cache.TeacherCache`)."""

    directory: Any

    def lookup(self, ids: Sequence[str]) -> dict[str, torch.Tensor]: ...


@dataclass(frozen=True)
class Term:
    """One weighted loss term of a strategy.

    Attributes:
        name: loss registry name (``kd``, ``kd_ce``, ``hint``, ...).
        weight: multiplier of the term in the total loss (>= 0).
        kwargs: the loss's own constructor arguments (``{"temperature": 4.0}``).
        student_feature / teacher_feature: for feature, relation and contrastive losses, the names of
            :attr:`ModelOutput.features` they compare (default ``"fused"``); unused by logit losses.
        teacher: which teacher the features come from (default: the first teacher).
    """

    name: str
    weight: float = 1.0
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    student_feature: str | None = None
    teacher_feature: str | None = None
    teacher: str | None = None


def as_terms(terms: Sequence[Term | Mapping[str, Any]], *, key: str = "terms") -> list[Term]:
    """Terms from :class:`Term` objects or config mappings (``{name, weight, kwargs, ...}``)."""
    out = []
    for i, t in enumerate(terms):
        if isinstance(t, Term):
            out.append(t)
            continue
        unknown = sorted(set(t) - set(Term.__dataclass_fields__))
        if unknown or "name" not in t:
            raise ConfigError(
                f"{key}[{i}]: a term is a mapping with 'name' and optional weight, kwargs, student_feature, "
                f"teacher_feature, teacher; got {dict(t)!r}"
            )
        out.append(Term(**{**t, "kwargs": dict(t.get("kwargs") or {})}))
    return out
