"""Multi-teacher distillation: the student matches a per-row weighted mixture of teachers.

Typical use: the fused (all-modality) teacher plus the run's unimodal baselines as per-modality
specialists. The target distribution of row b at temperature T is

    q_b = sum_i w_bi * softmax(z_ib / T)          (sum_i w_bi = 1)

and the logit terms receive ``T * log q_b`` as "teacher logits", whose softmax at T is exactly
``q_b``, so every logit loss of the registry works unchanged.

Weights (``teacher_weighting``):

- ``fixed``: the given ``teacher_weights`` (default equal), the same for every row.
- ``confidence``: per row, a softmax over teachers of their negative entropy
  ``-H(softmax(z_ib)) = sum_k p log p`` (at T = 1), times the fixed weights as a prior:
  ``w_bi ∝ prior_i * exp(-H_ib)``. A teacher that is sure of a row (low entropy) counts more
  there; entropy rather than the max probability, because it also sees how the rest of the
  mass is spread. Confidence weights are computed from the teachers alone, so they never
  depend on the student or the labels.

- ``routed``: per row, only the teachers that read exactly what the *student* sees in that row count:
  with ``V_b`` the student's visible modalities (after modality dropout and the data's own missing
  ones), the eligible teachers are those whose modalities ``S_i`` are a subset of ``V_b``, and of
  those the ones with the largest ``|S_i|`` get the fixed weights. With the run's subset
  specialists as teachers (``baselines.subsets``, e.g. ``[teacher, baseline-image+text,
  baseline-image+audio, baseline-text+audio]``), a row whose audio was hidden from the student is
  taught by the image+text specialist instead of by the full teacher, whose answer rests on audio
  the student cannot see. A row no teacher fits (no ``S_i ⊆ V_b``) falls back to ``fixed``.

In ``fixed`` and ``confidence`` a teacher that sees none of its modalities in a row (a unimodal
specialist on a row missing its modality) gets weight 0 there, unless no teacher sees the row (then
the row keeps the unmasked weights). References: S. You et al., "Learning from Multiple Teacher
Networks", KDD 2017 (averaged soft targets of several teachers).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmdistill.data.batch import Batch
from mmdistill.distill.strategies.base import DistillStrategy, OutputCache, TeacherOutputs, Term
from mmdistill.distill.strategies.logit import DEFAULT_LOGIT_TERMS
from mmdistill.errors import ConfigError

WEIGHTINGS: tuple[str, ...] = ("fixed", "confidence", "routed")


def confidence_weights(
    teacher_logits: Sequence[torch.Tensor], prior: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-row teacher weights ``softmax_i(log prior_i - H_ib)`` (see the module docstring).

    Args:
        teacher_logits: one ``[B, K]`` tensor per teacher.
        prior: ``[N]`` non-negative teacher weights (default equal).

    Shapes:
        returns ``[B, N]``; each row sums to 1.
    """
    stacked = torch.stack([z.float() for z in teacher_logits], dim=1)  # [B, N, K]
    log_p = F.log_softmax(stacked, dim=-1)
    neg_entropy = (log_p.exp() * log_p).sum(-1)  # [B, N], in [-log K, 0]
    if prior is not None:
        neg_entropy = neg_entropy + torch.log(prior.to(neg_entropy)).unsqueeze(0)
    return torch.softmax(neg_entropy, dim=1)


def mixture_logits(
    teacher_logits: Sequence[torch.Tensor], weights: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T * log(sum_i w_bi softmax(z_ib / T))``: logits whose softmax at ``T`` is the mixture.

    Computed in log space (``logsumexp``) so that a zero weight or a near-zero probability never
    produces NaN.

    Shapes:
        teacher_logits: ``N`` tensors ``[B, K]``; weights: ``[B, N]`` (rows sum to 1). Returns ``[B, K]``.
    """
    log_p = torch.stack([F.log_softmax(z.float() / temperature, dim=-1) for z in teacher_logits], dim=1)
    log_w = torch.log(weights.float()).unsqueeze(-1)  # [B, N, 1]; log 0 = -inf drops that teacher
    return temperature * torch.logsumexp(log_p + log_w, dim=1)


def visible(batch: Batch, modalities: Sequence[str], rows: int, device: torch.device) -> torch.Tensor:
    """``[B, M]`` bool: is modality ``modalities[j]`` in ``batch`` and present in row b."""
    present = batch.get("present", {})
    cols = []
    for m in modalities:
        mask = present.get(m) if m in batch else torch.zeros(rows, dtype=torch.bool)
        cols.append(torch.ones(rows, dtype=torch.bool) if mask is None else mask)
    return torch.stack([c.to(device) for c in cols], dim=1)


def availability(batch: Batch, teacher_modalities: Sequence[Sequence[str]], rows: int,
                 device: torch.device) -> torch.Tensor:
    """``[B, N]`` bool: does teacher i see at least one of its modalities in row b (always, for none)."""
    cols = [visible(batch, mods, rows, device).any(dim=1) if mods
            else torch.ones(rows, dtype=torch.bool, device=device) for mods in teacher_modalities]
    return torch.stack(cols, dim=1)


def routed_weights(teacher_modalities: Sequence[Sequence[str]], seen: torch.Tensor, modalities: Sequence[str],
                   prior: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the prior restricted to the largest teachers that read only visible modalities.

    Args:
        teacher_modalities: each teacher's modalities ``S_i``.
        seen: ``[B, M]`` bool, the student's visible modalities (columns in ``modalities`` order).
        modalities: the column names of ``seen``.
        prior: ``[N]`` non-negative teacher weights.

    Shapes:
        returns (weights ``[B, N]``, routed ``[B]`` bool); a routed row's weights sum to 1, an
        unrouted row (no teacher with ``S_i ⊆ V_b`` and a weight > 0) is all zeros.
    """
    device = seen.device
    member = torch.tensor([[m in mods for m in modalities] for mods in teacher_modalities],
                          dtype=torch.bool, device=device)  # [N, M]
    # A teacher reading nothing, or a modality the student does not read, never fits a row.
    never = torch.tensor([not mods or not set(mods) <= set(modalities) for mods in teacher_modalities],
                         device=device)
    fits = ~(member.unsqueeze(0) & ~seen.bool().unsqueeze(1)).any(dim=-1) & ~never  # [B, N]: S_i ⊆ V_b
    score = torch.where(fits, member.sum(dim=1).unsqueeze(0), -1)  # |S_i| where it fits
    chosen = (score == score.max(dim=1, keepdim=True).values) & fits
    w = chosen.to(prior.dtype) * prior.unsqueeze(0)
    sums = w.sum(dim=1, keepdim=True)
    return w / sums.clamp_min(1e-12), sums.squeeze(1) > 0


class TeacherMixture:
    """The :data:`~mmdistill.distill.strategies.base.TargetFn` of ``multi_teacher`` (see the module doc).

    Args:
        names: teacher names, in the order of ``prior``.
        modalities: each teacher's modalities (for the availability mask).
        weighting: ``fixed``, ``confidence`` or ``routed``.
        prior: ``[N]`` non-negative weights, not all zero.
        student_modalities: what the student reads (``routed`` only looks at these).
    """

    def __init__(self, names: Sequence[str], modalities: Sequence[Sequence[str]], weighting: str,
                 prior: torch.Tensor, student_modalities: Sequence[str] = ()) -> None:
        self.names = list(names)
        self.modalities = [list(m) for m in modalities]
        self.weighting = weighting
        self.prior = prior / prior.sum()
        every = sorted({m for ms in self.modalities for m in ms})
        self.student_modalities = list(student_modalities) or every

    def weights(self, outputs: TeacherOutputs, batch: Batch,
                student_batch: Batch | None = None) -> torch.Tensor:
        """Per-row teacher weights ``[B, N]`` (rows sum to 1); ``routed`` reads ``student_batch``
        (default ``batch``: the student saw what the teachers saw)."""
        logits = [outputs[n]["logits"] for n in self.names]
        rows, device = logits[0].shape[0], logits[0].device
        prior = self.prior.to(device)
        if self.weighting == "confidence":
            w = confidence_weights(logits, prior)
        else:
            w = prior.unsqueeze(0).expand(rows, -1)
        avail = availability(batch, self.modalities, rows, device)
        masked = w * avail
        sums = masked.sum(dim=1, keepdim=True)
        # Rows that no teacher sees keep the unmasked weights instead of dividing by zero.
        fixed = torch.where(sums > 0, masked / sums.clamp_min(1e-12), w)
        if self.weighting != "routed":
            return fixed
        view = batch if student_batch is None else student_batch
        seen = visible(view, self.student_modalities, rows, device)
        routed, ok = routed_weights(self.modalities, seen, self.student_modalities, prior)
        return torch.where(ok.unsqueeze(1), routed, fixed)

    def __call__(self, outputs: TeacherOutputs, batch: Batch, temperature: float,
                 student_logits: torch.Tensor, student_batch: Batch) -> torch.Tensor:
        w = self.weights(outputs, batch, student_batch)
        return mixture_logits([outputs[n]["logits"] for n in self.names], w, temperature)


def multi_teacher(
    student: nn.Module,
    *,
    teachers: Mapping[str, nn.Module],
    caches: Mapping[str, OutputCache] | None = None,
    terms: Sequence[Term | Mapping[str, Any]] | None = None,
    teacher_weighting: str = "fixed",
    teacher_weights: Mapping[str, float] | None = None,
    key: str = "distill",
    **common: Any,
) -> DistillStrategy:
    """Distill from several teachers through a weighted mixture of their softened outputs.

    Args:
        teachers: at least two; name → model.
        teacher_weighting: ``fixed``, ``confidence`` or ``routed``.
        teacher_weights: name → weight >= 0 (missing names weigh 1); the prior under ``confidence``.
        **common: the other :class:`DistillStrategy` arguments.
    """
    names = list(teachers)
    weights = dict(teacher_weights or {})
    problems = []
    if len(names) < 2:
        problems.append(f"{key}.teachers: multi_teacher needs at least two teachers, got {names}; add one "
                        "(e.g. baseline-image) or use strategy logit_kd")
    if teacher_weighting not in WEIGHTINGS:
        problems.append(f"{key}.teacher_weighting: must be one of {list(WEIGHTINGS)}, got "
                        f"{teacher_weighting!r}")
    for n, w in weights.items():
        if n not in names:
            problems.append(f"{key}.teacher_weights.{n}: not a teacher of this student; teachers: "
                            f"{', '.join(names)}")
        elif not (w >= 0 and math.isfinite(w)):
            problems.append(f"{key}.teacher_weights.{n}: must be a finite number >= 0, got {w}")
    prior = torch.tensor([float(weights.get(n, 1.0)) for n in names], dtype=torch.float32)
    if not problems and not bool((prior > 0).any()):
        problems.append(f"{key}.teacher_weights: at least one teacher needs a weight > 0, got {weights}")
    if problems:
        raise ConfigError(problems)
    mods = [list(getattr(teachers[n], "modalities", [])) for n in names]
    mixture = TeacherMixture(names, mods, teacher_weighting, prior, list(getattr(student, "modalities", [])))
    return DistillStrategy(student, terms=DEFAULT_LOGIT_TERMS if terms is None else terms, teachers=teachers,
                           caches=caches, target_fn=mixture, name="multi_teacher", key=key, **common)
