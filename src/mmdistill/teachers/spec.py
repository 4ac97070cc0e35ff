"""Teacher spec → teacher: turn the config's ``teacher`` section into encoders, plans and teachers.

:func:`teacher_kind` tells the recipes which path a config takes (``mmdistill``: train or load an
mmdistill model as before; ``frozen_encoders``: ``teacher.pretrained`` encoders + a trained head;
``external``: ``teacher.external``). Building never downloads and never unpickles.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from mmdistill import MODALITIES
from mmdistill.config.schema import Config, ExternalTeacherConfig
from mmdistill.errors import ConfigError
from mmdistill.teachers.base import PretrainedEncoder, Teacher
from mmdistill.teachers.frozen import EncoderSpec, TeacherPlan, head_spec
from mmdistill.teachers.preprocess import PreprocessSpec
from mmdistill.teachers.registry import PRETRAINED_ENCODERS, register_all

TeacherKind = Literal["mmdistill", "frozen_encoders", "external"]
_RESERVED = ("modality", "path", "preprocessing")


def teacher_kind(cfg: Config) -> TeacherKind:
    """Which kind of teacher ``cfg.teacher`` describes."""
    if cfg.teacher.external is not None:
        return "external"
    return "frozen_encoders" if cfg.teacher.pretrained else "mmdistill"


def teacher_modalities(cfg: Config) -> list[str]:
    """The modalities the configured teacher reads, canonical order."""
    mods = cfg.teacher.modalities or cfg.data.modalities
    return [m for m in MODALITIES if m in mods]


def encoder_kwargs_problems(key: str, name: str, kwargs: Mapping[str, Any]) -> list[str]:
    """Unknown kwargs of pretrained encoder ``name`` (the factory's signature decides)."""
    from mmdistill.config.validation import suggest

    params = inspect.signature(PRETRAINED_ENCODERS.get(name)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return []  # a plugin's factory that takes anything checks its own kwargs
    accepted = [n for n in params if n not in _RESERVED]
    return [f"{key}.kwargs.{k}: pretrained encoder '{name}' takes no argument "
            f"'{k}'{suggest(k, accepted, 'accepted')}"
            for k in kwargs if k not in accepted]


def build_encoder(modality: str, source: Mapping[str, Any], *,
                  preprocessing: PreprocessSpec | Mapping[str, Any] | None = None,
                  key: str | None = None) -> PretrainedEncoder:
    """Build the pretrained encoder ``{"name", "path", "kwargs"}`` for ``modality``.

    Raises:
        ConfigError: unknown name (did-you-mean), wrong modality, unknown kwargs.
        MissingDependencyError: its optional package is not installed (names the extra).
        CheckpointError: its files are missing or do not match the declared inputs.
    """
    from mmdistill.teachers.deps import require

    register_all()
    key = key or f"teacher.pretrained.{modality}"
    name = str(source.get("name"))
    entry = PRETRAINED_ENCODERS.entry(name, key=f"{key}.name")
    reads = entry.meta.get("modality")
    if reads is not None and reads != modality:
        raise ConfigError(f"{key}.name: pretrained encoder '{name}' reads {reads}, not {modality}")
    kwargs = dict(source.get("kwargs") or {})
    problems = encoder_kwargs_problems(key, name, kwargs)
    if problems:
        raise ConfigError(problems)
    if entry.meta.get("needs"):
        require(entry.meta["needs"], f"the '{name}' {modality} encoder")
    pre = (preprocessing if isinstance(preprocessing, PreprocessSpec)
           else PreprocessSpec.from_settings(preprocessing))
    return entry.obj(modality=modality, path=source.get("path"), preprocessing=pre, **kwargs)


def teacher_preprocessing(cfg: Config, *, tokenizer: str | Path | None = None) -> PreprocessSpec:
    """The teacher's own settings for every modality it reads (``teacher.preprocessing.<m>``, else
    ``data.<m>``); text uses ``teacher.preprocessing.text.tokenizer``, else ``tokenizer`` (the run's)."""
    own, data = cfg.teacher.preprocessing, cfg.data
    mods = teacher_modalities(cfg)
    text = None
    if "text" in mods and (own.text is not None and own.text.tokenizer or tokenizer is not None):
        tok = own.text.tokenizer if own.text is not None and own.text.tokenizer else str(tokenizer)
        text = {"tokenizer": tok, "max_length": own.text.max_length if own.text else data.text.max_length}
    return PreprocessSpec(
        image=(own.image or data.image).model_dump() if "image" in mods else None,
        audio=(own.audio or data.audio).model_dump() if "audio" in mods else None,
        text=text,
    )


def encoder_specs(cfg: Config) -> dict[str, EncoderSpec]:
    """``teacher.pretrained`` as :class:`EncoderSpec` per modality."""
    return {m: EncoderSpec(c.name, c.path, dict(c.kwargs), c.finetune_layers)
            for m, c in cfg.teacher.pretrained.items()}


def build_plan(cfg: Config, preprocessing: PreprocessSpec) -> TeacherPlan:
    """The frozen-encoders teacher's branches with every pretrained encoder built."""
    specs = encoder_specs(cfg)
    encoders = {m: build_encoder(m, s.source(), preprocessing=preprocessing) for m, s in specs.items()}
    return TeacherPlan(teacher_modalities(cfg), specs, encoders, preprocessing)


def config_head_spec(cfg: Config, plan: TeacherPlan, *, num_classes: int,
                     tasks: dict[str, int] | None = None) -> dict[str, Any]:
    """The head model's spec for ``cfg.teacher`` (preset, encoder overrides of the trained
    modalities, fusion, head, ``embedding`` kwargs), sized by the teacher's own preprocessing."""
    t, pre = cfg.teacher, plan.preprocessing
    vocab = pre.tokenizer().vocab_size if "text" in plan.trained and pre.text is not None else 1
    return head_spec(
        plan, num_classes=num_classes, preset=t.preset, vocab_size=vocab,
        image_channels=int((pre.image or {}).get("channels", cfg.data.image.channels)),
        n_mels=int((pre.audio or {}).get("n_mels", cfg.data.audio.n_mels)), tasks=tasks,
        encoders={m: c.model_dump() for m, c in t.encoders.items()},
        fusion=t.fusion.model_dump() if t.fusion else None, head=t.head.model_dump() if t.head else None,
        embedding=dict(t.embedding),
    )


def build_external_teacher(cfg: Config, preprocessing: PreprocessSpec) -> Teacher:
    """The ``teacher.external`` model as a raw-record teacher."""
    if cfg.teacher.external is None:
        raise ConfigError("teacher.external: not set")
    return build_external(cfg.teacher.external, preprocessing)


def build_external(ext: ExternalTeacherConfig, preprocessing: PreprocessSpec) -> Teacher:
    """A raw-record teacher from one ``teacher.external`` section (also as saved in a run folder).

    Raises:
        ConfigError: unknown ``kwargs`` of a ``huggingface`` / ``onnx`` teacher (with the accepted names).
    """
    from mmdistill.teachers.checks import external_kwargs_problems

    problems = external_kwargs_problems(ext.kind, ext.kwargs)
    if problems:
        raise ConfigError(problems)
    if ext.kind == "torch":
        from mmdistill.teachers.adapters import torch_teacher

        return torch_teacher(str(ext.module), preprocessing, path=ext.path, kwargs=ext.kwargs,
                             num_classes=ext.num_classes)
    if ext.kind == "huggingface":
        from mmdistill.teachers.huggingface import HFClassifierTeacher

        return HFClassifierTeacher(str(ext.path), **ext.kwargs)
    from mmdistill.teachers.onnx import InputSpec, OnnxTeacher

    inputs = None if ext.inputs is None else [InputSpec(i.name, i.dtype, tuple(i.shape), i.source)
                                              for i in ext.inputs]
    return OnnxTeacher(str(ext.path), preprocessing, inputs=inputs, logits=ext.logits, features=ext.features,
                       **ext.kwargs)
