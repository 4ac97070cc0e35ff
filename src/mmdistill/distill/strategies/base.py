"""The one strategy module: a student, frozen teacher(s) or their caches, and weighted loss terms.

Every registered strategy (``logit_kd``, ``feature_kd``, ``multi_teacher``, ...) is a small factory
that configures a :class:`DistillStrategy`; they differ in their default terms, in how the teacher
target of the logit terms is formed (one teacher, a mixture of teachers, a virtual teacher) and in
what the student sees (fewer modalities, randomly hidden modalities).

Training goes through ``strategy(batch, compute_loss=True)`` (the step function
:func:`distill_step`), so under DDP the wrapper's forward is what runs; validation and
:func:`mmdistill.training.predict.predict` call ``strategy(batch)`` and get the student's
:class:`~mmdistill.models.outputs.ModelOutput`, so :func:`~mmdistill.training.loop.fit` trains a
strategy unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mmdistill.data.batch import Batch, batch_size
from mmdistill.distill.mixup import mix_batch, permute_labels, sample_mix
from mmdistill.distill.registries import build_loss, loss_family
from mmdistill.distill.strategies.terms import OutputCache, TargetFn, TeacherOutputs, Term, as_terms
from mmdistill.errors import ConfigError
from mmdistill.models.outputs import ModelOutput
from mmdistill.training.steps import drop_modalities_randomly, labels_for_task, masked_cross_entropy

log = logging.getLogger(__name__)

__all__ = ["DistillStrategy", "OutputCache", "TargetFn", "TeacherOutputs", "Term", "as_terms", "distill_step",
           "single_teacher_target"]


def single_teacher_target(outputs: TeacherOutputs, batch: Batch, temperature: float,
                          student_logits: torch.Tensor, student_batch: Batch) -> torch.Tensor:
    """The target of a one-teacher strategy: that teacher's logits."""
    (only,) = outputs.values()
    return only["logits"]


class DistillStrategy(nn.Module):
    """Student + frozen teachers (or caches) + weighted losses; ``forward`` returns the training dict.

    Total loss ``L = ce_weight * CE(student, labels) + sum_i w_i * L_i``, where logit terms compare
    the student's logits with the target built by ``target_fn`` from the teachers' outputs, and
    feature terms compare ``student.features[student_feature]`` with the named teacher's
    ``features[teacher_feature]`` (the loss owns the adapter when widths differ).

    The teachers are deliberately *not* submodules: DDP does not wrap them, ``parameters()``,
    ``state_dict()`` and the best-epoch copy of :func:`~mmdistill.training.loop.fit` leave them out.
    They stay in eval mode with ``requires_grad=False`` and run under ``torch.no_grad()`` on the
    full batch (the student may see fewer modalities); ``.to(device)`` moves them along.

    Args:
        student: the model being trained (a :class:`~mmdistill.models.multimodal.MultimodalModel`).
        terms: the distillation terms (may be empty: then only CE is trained).
        teachers: name → frozen teacher model, in priority order (the first is the default for
            feature terms). A teacher with a cache is not run; its model only gives feature widths.
        caches: name → cache for teachers whose outputs were precomputed on the training split.
        ce_weight: weight of the supervised cross-entropy; None = 0 when a ``kd_ce`` term (which
            already holds CE) is present, else 1.
        modality_dropout: probability of hiding each modality of a row from the *student only*
            (None = 0).
        target_fn: see :data:`TargetFn`; default: the single teacher's logits.
        task_weights: multi-task students: task → CE weight (default 1 each).
        label_smoothing: of the CE term.
        mixup: Beta parameter of multimodal input mixup ("function matching", Beyer et al. 2022;
            :mod:`mmdistill.distill.mixup`); 0 = off. Teacher and student see the same mixed
            batch, so the teachers run online: no cache may be given.
        name: the strategy's registry name (logs and error messages).
        key: config key of the strategy (error messages), e.g. ``distill.students.kd``.
    """

    def __init__(
        self,
        student: nn.Module,
        *,
        terms: Sequence[Term | Mapping[str, Any]] = (),
        teachers: Mapping[str, nn.Module] | None = None,
        caches: Mapping[str, OutputCache] | None = None,
        ce_weight: float | None = None,
        modality_dropout: float | None = 0.0,
        target_fn: TargetFn | None = None,
        task_weights: Mapping[str, float] | None = None,
        label_smoothing: float = 0.0,
        mixup: float = 0.0,
        name: str = "strategy",
        key: str = "distill",
    ) -> None:
        super().__init__()
        teachers = dict(teachers or {})
        modality_dropout = float(modality_dropout or 0.0)
        caches = {n: c for n, c in (caches or {}).items() if c is not None}
        parsed = as_terms(terms, key=f"{key}.terms")
        problems: list[str] = []
        if not 0.0 <= modality_dropout < 1.0:
            problems.append(f"{key}.modality_dropout: must be in [0, 1), got {modality_dropout}")
        if not float(mixup) >= 0:
            problems.append(f"{key}.mixup: must be >= 0 (0 = off), got {mixup}")
        elif float(mixup) > 0 and caches:
            problems.append(f"{key}.mixup: mixed inputs need the teachers online, but caches were given for "
                            f"{sorted(caches)}; drop the caches or set mixup to 0")
        if ce_weight is not None and not ce_weight >= 0:
            problems.append(f"{key}.ce_weight: must be >= 0, got {ce_weight}")
        if sorted(set(caches) - set(teachers)):
            problems.append(f"{key}: caches given for {sorted(set(caches) - set(teachers))}, which are not "
                            f"teachers ({sorted(teachers)})")
        if target_fn is None and len(teachers) > 1:
            problems.append(f"{key}.teachers: strategy '{name}' distills from one teacher, got "
                            f"{sorted(teachers)}; keep one or use strategy 'multi_teacher'")
        if problems:
            raise ConfigError(problems)
        self.student = student
        self.strategy_name = name
        self.modality_dropout = float(modality_dropout)
        self.task_weights = dict(task_weights or {})
        self.label_smoothing = float(label_smoothing)
        self.mixup = float(mixup)
        self.target_fn: TargetFn = target_fn or single_teacher_target
        for t in teachers.values():
            t.eval().requires_grad_(False)
        # object.__setattr__ keeps the teachers out of nn.Module's bookkeeping (see the class doc).
        object.__setattr__(self, "_teachers", {n: t for n, t in teachers.items() if n not in caches})
        object.__setattr__(self, "_caches", caches)
        self.teacher_names: list[str] = list(teachers)
        self.teacher_modalities: dict[str, list[str]] = {
            n: list(getattr(t, "modalities", [])) for n, t in teachers.items()
        }
        teacher_dims = {n: dict(t.feature_dims()) for n, t in teachers.items() if hasattr(t, "feature_dims")}
        self.terms, self.losses = self._build_terms(parsed, teacher_dims, key)
        self.families = {k: loss_family(t.name) for k, t in self.terms.items()}
        if ce_weight is None:
            ce_weight = 0.0 if any(t.name == "kd_ce" for t in self.terms.values()) else 1.0
        self.ce_weight = float(ce_weight)
        self.temperatures = {k: float(getattr(m, "temperature", 1.0)) for k, m in self.losses.items()}

    # ----------------------------------------------------------------------------- construction
    def _build_terms(
        self, terms: list[Term], teacher_dims: dict[str, dict[str, int]], key: str
    ) -> tuple[dict[str, Term], nn.ModuleDict]:
        """Check feature names and build one loss module per term, keyed by its log name."""
        student_dims = dict(self.student.feature_dims())
        problems: list[str] = []
        built: dict[str, Term] = {}
        modules = nn.ModuleDict()
        for i, term in enumerate(terms):
            where = f"{key}.terms[{i}]"
            if not term.weight >= 0:
                problems.append(f"{where}.weight: must be >= 0, got {term.weight}")
            try:
                family = loss_family(term.name, key=f"{where}.name")
            except ConfigError as exc:
                problems += exc.problems
                continue
            log_key = term.name if term.name not in built and term.name != "ce" else f"{term.name}_{i}"
            if family == "logits":
                if term.student_feature or term.teacher_feature:
                    problems.append(f"{where}: '{term.name}' compares logits; remove student_feature/"
                                    "teacher_feature (only feature, relation and contrastive losses use "
                                    "them)")
                elif not self.teacher_names and self.target_fn is single_teacher_target:
                    problems.append(f"{where}.name: '{term.name}' needs a teacher, and this strategy has "
                                    "none")
                dims: dict[str, int | None] = {"student_dim": None, "teacher_dim": None}
            else:
                teacher = term.teacher or (self.teacher_names[0] if self.teacher_names else None)
                s_feat, t_feat = term.student_feature or "fused", term.teacher_feature or "fused"
                if teacher not in teacher_dims:
                    problems.append(f"{where}.teacher: feature term '{term.name}' needs a teacher model, got "
                                    f"{teacher!r}; available teachers: {', '.join(teacher_dims) or '(none)'}")
                    continue
                missing = [
                    f"{where}.{side}_feature: the {side} has no feature {feat!r}; available: "
                    f"{', '.join(avail)}"
                    for side, feat, avail in (("student", s_feat, student_dims),
                                              ("teacher", t_feat, teacher_dims[teacher]))
                    if feat not in avail
                ]
                if missing:
                    problems += missing
                    continue
                term = Term(term.name, term.weight, term.kwargs, s_feat, t_feat, teacher)
                dims = {"student_dim": student_dims[s_feat], "teacher_dim": teacher_dims[teacher][t_feat]}
            try:
                modules[log_key] = build_loss(term.name, key=where, **dims, **dict(term.kwargs))
            except ConfigError as exc:
                problems += exc.problems
                continue
            built[log_key] = term
        if problems:
            raise ConfigError(problems)
        return built, modules

    # ----------------------------------------------------------------------------- teachers
    @property
    def teachers(self) -> dict[str, nn.Module]:
        """The teachers that run online (those with a cache are not kept)."""
        return dict(self._teachers)

    @property
    def caches(self) -> dict[str, OutputCache]:
        """Teacher name → the cache its outputs come from."""
        return dict(self._caches)

    def required_features(self) -> dict[str, list[str]]:
        """Teacher name → the features its terms read (what a cache of that teacher must hold)."""
        need: dict[str, list[str]] = {n: [] for n in self.teacher_names}
        for term in self.terms.values():
            feats = need.get(term.teacher or "", [])
            if term.teacher is not None and term.teacher_feature and term.teacher_feature not in feats:
                feats.append(term.teacher_feature)
        return need

    def attach_caches(self, caches: Mapping[str, OutputCache]) -> None:
        """Take these teachers' outputs from ``caches`` from now on (their models are released)."""
        unknown = sorted(set(caches) - set(self.teacher_names))
        if unknown:
            raise ConfigError(f"caches given for {unknown}, which are not teachers ({self.teacher_names})")
        if self.mixup > 0 and caches:
            raise ConfigError(f"mixup {self.mixup:g} needs the teachers online on mixed inputs; caches "
                              f"given for {sorted(caches)}")
        self._caches.update(caches)
        for name in caches:
            self._teachers.pop(name, None)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> DistillStrategy:
        # .to()/.cuda()/.float() go through _apply; move the unregistered teachers with the student.
        super()._apply(fn, recurse)
        for teacher in self._teachers.values():
            teacher._apply(fn)
        return self

    def teacher_outputs(self, batch: Batch) -> TeacherOutputs:
        """Every teacher's logits and features for ``batch``: cache lookup by id, else online forward.

        Shapes:
            returns name → ``{"logits": [B, K], "<feature>": [B, D], ...}`` (no gradient).
        """
        device = next(self.student.parameters()).device
        out: TeacherOutputs = {}
        for name in self.teacher_names:
            cache = self._caches.get(name)
            if cache is not None:
                got = cache.lookup([str(i) for i in batch["id"]])
                out[name] = {k: v.to(device=device, dtype=torch.float32) for k, v in got.items()}
                continue
            with torch.no_grad():
                t_out = self._teachers[name](batch)
            out[name] = {"logits": t_out.logits, **t_out.features}  # no_grad: nothing to detach
        return out

    # ----------------------------------------------------------------------------- forward
    def supervised_loss(self, out: ModelOutput, batch: Batch) -> torch.Tensor:
        """Cross-entropy on the labels (weighted sum over heads for multi-task students)."""
        if not out.task_logits:
            return masked_cross_entropy(out.logits, batch["label"], label_smoothing=self.label_smoothing)
        total = out.logits.new_zeros((), dtype=torch.float32)
        for task, logits in out.task_logits.items():
            labels = labels_for_task(batch, task)
            if labels is not None:
                term = masked_cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
                total = total + self.task_weights.get(task, 1.0) * term
        return total

    def forward(self, batch: Batch, compute_loss: bool = False) -> ModelOutput | dict[str, torch.Tensor]:
        """The student's output, or (``compute_loss=True``) the training dict.

        Shapes:
            returns ``ModelOutput`` as the student does, or ``{"loss": scalar, "logits": [B, K],
            "loss/ce": scalar, "loss/<term>": scalar, ...}``.
        """
        if not compute_loss:
            return self.student(batch)
        partner: Batch | None = None  # mixup: the same rows with their partners' labels
        lam = 1.0
        if self.training and self.mixup > 0:
            perm, lam = sample_mix(batch_size(batch), self.mixup)
            batch = mix_batch(batch, perm, lam)
            partner = permute_labels(batch, perm)

        def mixed(fn: Callable[[Batch], torch.Tensor]) -> torch.Tensor:
            # lam * L(y_a) + (1 - lam) * L(y_b): mixup's criterion; equal to L for label-free losses.
            return fn(batch) if partner is None else lam * fn(batch) + (1.0 - lam) * fn(partner)

        student_batch = batch
        if self.training and self.modality_dropout > 0:
            # Only the student loses modalities; the teachers (and caches) keep the full input.
            student_batch = drop_modalities_randomly(batch, self.modality_dropout)
        out = self.student(student_batch)
        teacher_out = self.teacher_outputs(batch) if self.teacher_names else {}
        ce = mixed(lambda b: self.supervised_loss(out, b))
        result: dict[str, torch.Tensor] = {"logits": out.logits, "loss/ce": ce.detach()}
        total = self.ce_weight * ce
        for log_key, term in self.terms.items():
            loss = self.losses[log_key]
            if self.families[log_key] == "logits":
                target = self.target_fn(teacher_out, batch, self.temperatures[log_key], out.logits.detach(),
                                        student_batch)
                target = target.to(out.logits.dtype)
                value = mixed(lambda b, loss=loss, target=target: loss(out.logits, target, b["label"]))
            else:
                assert term.teacher is not None and term.student_feature and term.teacher_feature
                t_feat = teacher_out[term.teacher][term.teacher_feature]
                value = loss(out.features[term.student_feature], t_feat)
            result[f"loss/{log_key}"] = value.detach()
            total = total + term.weight * value
        result["loss"] = total
        return result

    def extra_repr(self) -> str:
        sources = [f"{n}: {'cache' if n in self._caches else 'online'}" for n in self.teacher_names]
        terms = [f"{k} x{t.weight:g}" for k, t in self.terms.items()]
        return (f"strategy={self.strategy_name}, teachers=[{', '.join(sources)}], "
                f"ce_weight={self.ce_weight:g}, terms=[{', '.join(terms)}], "
                f"modality_dropout={self.modality_dropout:g}"
                + (f", mixup={self.mixup:g}" if self.mixup else ""))


def distill_step(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
    """The step function for :func:`~mmdistill.training.loop.fit`: the strategy's (DDP) forward."""
    return model(batch, compute_loss=True)
