"""Semantic checks of the ``distill:`` config section (run by ``validation.semantic_problems``).

Each problem is one line ``<dotted.key>: <what is wrong>, got <value>; <fix>``. What can only be
known once models exist (a loaded teacher's class count, a checkpoint's modalities) is checked by
:mod:`mmdistill.recipes.distill` before training starts.
"""

from __future__ import annotations

import importlib
import logging
import re
from typing import Any

from mmdistill.config.schema import Config, DistillStudentConfig, ModelConfig

log = logging.getLogger(__name__)

_VARIANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
RESERVED_VARIANTS: tuple[str, ...] = ("scratch",)
"""Names of ``students/<name>/`` folders that other stages write."""


def baseline_subsets(cfg: Config) -> dict[str, list[str]]:
    """``baselines.subsets`` as folder name → modalities, both in ``data.modalities`` order.

    ``[[text, image]]`` with data ``[image, text, audio]`` gives ``{"image+text": ["image", "text"]}``.
    Modalities the data lacks are kept at the end (validation reports them).
    """
    order = {m: i for i, m in enumerate(cfg.data.modalities)}
    out: dict[str, list[str]] = {}
    for subset in cfg.baselines.subsets:
        mods = sorted(subset, key=lambda m: order.get(m, len(order)))
        out["+".join(mods)] = mods
    return out


def teacher_choices(cfg: Config) -> list[str]:
    """Run models that can teach: ``teacher``, ``baseline-<m>`` for each data modality and
    ``baseline-<a>+<b>`` for each of ``baselines.subsets``."""
    return ["teacher", *(f"baseline-{m}" for m in cfg.data.modalities),
            *(f"baseline-{s}" for s in baseline_subsets(cfg))]


def teacher_modalities(cfg: Config, name: str) -> list[str]:
    """The modalities the run model ``name`` reads, as configured."""
    if name.startswith("baseline-"):
        return name.removeprefix("baseline-").split("+")
    return list(cfg.teacher.modalities or cfg.data.modalities)


def variant_model_config(cfg: Config, v: DistillStudentConfig) -> ModelConfig:
    """The architecture of a distilled student as a :class:`ModelConfig` (see ``DistillStudentConfig``)."""
    base = cfg.student
    if v.preset is None:
        return ModelConfig(
            preset=base.preset,
            modalities=v.modalities if v.modalities is not None else base.modalities,
            encoders={**base.encoders, **v.encoders},
            fusion=v.fusion or base.fusion,
            head=v.head or base.head,
        )
    mods = v.modalities if v.modalities is not None else base.modalities
    return ModelConfig(preset=v.preset, modalities=mods, encoders=v.encoders, fusion=v.fusion, head=v.head)


def variant_teachers(cfg: Config, v: DistillStudentConfig) -> list[str]:
    """The teachers of variant ``v``: its own list, else ``distill.teachers`` (none for teacher-free)."""
    if v.teachers is not None:
        return list(v.teachers)
    meta = _strategy_meta(v.strategy)
    if meta is not None and meta.get("teachers") == "none":
        return []
    return list(cfg.distill.teachers)


def _strategy_meta(name: str) -> dict[str, Any] | None:
    strategies = importlib.import_module("mmdistill.distill.strategies")
    reg = strategies.STRATEGIES
    return dict(reg.entry(name).meta) if name in reg else None


def _teacher_list_problems(key: str, names: list[str], choices: list[str]) -> list[str]:
    from mmdistill.config.validation import show, suggest

    problems = []
    for i, n in enumerate(names):
        if n not in choices:
            problems.append(f"{key}[{i}]: not a model of this run, got "
                            f"{show(n)}{suggest(n, choices, 'teachers')}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        problems.append(f"{key}: lists {', '.join(dup)} more than once; list each teacher once")
    return problems


def _term_problems(key: str, v: DistillStudentConfig, teachers: list[str], s_mods: list[str],
                   cfg: Config) -> list[str]:
    from mmdistill.config.validation import show
    from mmdistill.distill.registries import LOSSES, build_loss, loss_family, register_all
    from mmdistill.errors import ConfigError

    register_all()
    problems: list[str] = []
    for i, term in enumerate(v.terms or []):
        where = f"{key}.terms[{i}]"
        if term.name not in LOSSES:
            problems.append(LOSSES.unknown_message(term.name, key=f"{where}.name"))
            continue
        try:
            # A throw-away build checks kwargs names and values (temperature > 0, ...) now, not after data.
            build_loss(term.name, student_dim=4, teacher_dim=4, key=where, **term.kwargs)
        except ConfigError as exc:
            problems += exc.problems
        if loss_family(term.name) == "logits":
            if term.student_feature or term.teacher_feature or term.teacher:
                problems.append(f"{where}: '{term.name}' compares logits; remove student_feature, "
                                "teacher_feature and teacher (only feature, relation and contrastive losses "
                                "use them)")
            continue
        teacher = term.teacher or (teachers[0] if teachers else None)
        if teacher is None or teacher not in teachers:
            problems.append(f"{where}.teacher: feature loss '{term.name}' needs one of this student's "
                            f"teachers, got {show(teacher)}; teachers: {', '.join(teachers) or '(none)'}")
            continue
        for side, feat, mods in (("student", term.student_feature, s_mods),
                                 ("teacher", term.teacher_feature, teacher_modalities(cfg, teacher))):
            names = [f"{m}.pooled" for m in mods] + ["fused"]
            if feat is not None and feat not in names:
                problems.append(f"{where}.{side}_feature: the {side} has no feature {show(feat)}; available: "
                                f"{', '.join(names)}")
    return problems


def distill_problems(cfg: Config, model_problems: Any) -> list[str]:
    """Every problem of ``cfg.distill``; ``model_problems(key, ModelConfig, cfg)`` checks architectures."""
    from mmdistill.config.validation import show, suggest

    d = cfg.distill
    choices = teacher_choices(cfg)
    problems = _teacher_list_problems("distill.teachers", d.teachers, choices)
    if d.students and "distill" not in cfg.stages:
        log.info("distill.students is set but 'distill' is not in stages: no student is distilled")
    try:
        importlib.import_module("mmdistill.distill.strategies")
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith("mmdistill.distill"):
            raise
        log.debug("skipping distill checks: %s", exc)
        return problems
    from mmdistill.distill.strategies import STRATEGIES

    for name, v in d.students.items():
        key = f"distill.students.{name}"
        if not _VARIANT_RE.match(name) or name in RESERVED_VARIANTS:
            problems.append(f"{key}: a student name must be a folder name (letters, digits, '_', '.', '-') "
                            f"other than {', '.join(RESERVED_VARIANTS)}, got {show(name)}; rename it")
        if v.strategy not in STRATEGIES:
            problems.append(STRATEGIES.unknown_message(v.strategy, key=f"{key}.strategy"))
            continue
        meta = dict(STRATEGIES.entry(v.strategy).meta)
        model = variant_model_config(cfg, v)
        problems += model_problems(key, model, cfg)
        s_mods = list(model.modalities or cfg.data.modalities)
        teachers = variant_teachers(cfg, v)
        if v.teachers is not None:
            problems += _teacher_list_problems(f"{key}.teachers", v.teachers, choices)
        count = meta.get("teachers")
        if count == "one" and len(teachers) != 1:
            problems.append(f"{key}.teachers: strategy '{v.strategy}' distills from exactly one teacher, got "
                            f"{show(teachers)}; list one, or use strategy multi_teacher")
        elif count == "many" and len(teachers) < 2:
            problems.append(f"{key}.teachers: strategy 'multi_teacher' needs at least two teachers, got "
                            f"{show(teachers)}; e.g. [teacher, baseline-image, baseline-text, "
                            "baseline-audio]")
        elif count == "none" and teachers:
            problems.append(f"{key}.teachers: strategy '{v.strategy}' uses no teacher, got {show(teachers)}; "
                            "remove the key or set it to []")
        if v.strategy != "multi_teacher" and (v.teacher_weighting != "fixed" or v.teacher_weights):
            problems.append(f"{key}.teacher_weighting/teacher_weights: only used by strategy multi_teacher, "
                            f"got {v.teacher_weighting!r} / {show(v.teacher_weights)}; remove them")
        if v.strategy == "multi_teacher" and v.teacher_weighting == "routed" and teachers and not any(
                set(teacher_modalities(cfg, t)) < set(s_mods) for t in teachers if t in choices):
            problems.append(f"{key}.teacher_weighting: 'routed' teaches a row whose student sees fewer "
                            f"modalities by a teacher of just those, but no teacher of {show(teachers)} "
                            f"reads fewer than the student ({'+'.join(s_mods)}); add specialists, e.g. "
                            "baselines.subsets: [[image, text]] and teacher baseline-image+text, or use "
                            "'fixed'")
        for t in v.teacher_weights:
            if t not in teachers:
                problems.append(f"{key}.teacher_weights.{t}: not a teacher of this "
                                f"student{suggest(t, teachers, 'teachers')}")
        options = list(meta.get("options", ()))
        for opt in v.kwargs:
            if opt not in options or opt in ("teacher_weighting", "teacher_weights"):
                accepted = [o for o in options if o not in ("teacher_weighting", "teacher_weights")]
                problems.append(f"{key}.kwargs.{opt}: strategy '{v.strategy}' takes no option '{opt}'"
                                f"{suggest(opt, accepted, 'accepted')}")
        if v.strategy == "crossmodal" and len(teachers) == 1:
            t_mods = teacher_modalities(cfg, teachers[0])
            if not set(s_mods) < set(t_mods):
                problems.append(f"{key}.modalities: strategy 'crossmodal' needs a strict subset of the "
                                f"teacher's modalities ({'+'.join(t_mods)}), got {show(s_mods)}; list fewer "
                                "modalities")
        if v.strategy == "robust" and v.modality_dropout == 0:
            problems.append(f"{key}.modality_dropout: strategy 'robust' needs a probability in (0, 1), got "
                            "0; leave it null (0.3) or use logit_kd")
        problems += mixup_problems(key, v, teachers, cfg)
        problems += _term_problems(key, v, teachers, s_mods, cfg)
    return problems


def mixup_problems(key: str, v: DistillStudentConfig, teachers: list[str], cfg: Config) -> list[str]:
    """Mixup feeds the teachers new (mixed) inputs: they must run online on the student's tensors."""
    if v.mixup <= 0:
        return []
    from mmdistill.teachers.spec import teacher_kind

    problems = []
    if cfg.distill.cache == "on":
        problems.append(f"{key}.mixup: mixed inputs are new every step, so the teacher cannot be read from a "
                        f"cache, and distill.cache is 'on' (cache required), got mixup {v.mixup:g}; set "
                        "distill.cache to auto (this student then runs its teacher online) or mixup to 0")
    if "teacher" in teachers and teacher_kind(cfg) != "mmdistill":
        section = "teacher.external" if teacher_kind(cfg) == "external" else "teacher.pretrained"
        problems.append(f"{key}.mixup: the teacher reads raw records ({section}) and is only "
                        f"available through its cache, so it cannot see mixed inputs, got mixup {v.mixup:g}; "
                        "set mixup to 0 or distill from an mmdistill teacher")
    if not teachers:
        problems.append(f"{key}.mixup: strategy '{v.strategy}' has no teacher to match on mixed inputs, got "
                        f"mixup {v.mixup:g}; set mixup to 0")
    return problems
