""""Frozen pretrained encoders + a trained head": the teacher built from per-modality encoders.

Each modality of the teacher is one of three branches:

* **stored**: a frozen :class:`~mmdistill.teachers.base.PretrainedEncoder`; its embedding is
  computed once per sample (the embedding store) and read by an ``embedding_<m>`` encoder;
* **fine-tuned**: the same encoder run online as a ``pretrained_<m>`` encoder with its last
  ``finetune_layers`` trainable, on the encoder's own preprocessed inputs (bypasses the store);
* **trained**: an ordinary mmdistill encoder (``cnn``, ...) trained with the head, on inputs made
  by the teacher's own :class:`~mmdistill.teachers.preprocess.PreprocessSpec`.

The trainable part is one :class:`~mmdistill.models.multimodal.MultimodalModel` (the *head
model*: those encoders, an mmdistill fusion and head; spec from :func:`head_spec`), trained by the
usual supervised recipe on :func:`teacher_samples`. :class:`FrozenEncodersTeacher` joins encoders
and head model into a raw-record teacher; :func:`save_frozen_teacher` / :func:`load_frozen_teacher`
write and read ``teacher.json`` + ``head/`` (safetensors, no pickle).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from mmdistill import MODALITIES
from mmdistill.data.batch import Sample
from mmdistill.data.collate import collate
from mmdistill.data.preprocess import Preprocessor
from mmdistill.data.records import RawSample
from mmdistill.distill.cache import TeacherCache
from mmdistill.distill.fingerprint import model_fingerprint
from mmdistill.errors import CheckpointError, ConfigError
from mmdistill.io_atomic import atomic_write_text
from mmdistill.models.builders import model_spec
from mmdistill.models.multimodal import MultimodalModel
from mmdistill.models.outputs import ModelOutput
from mmdistill.teachers.base import PretrainedEncoder, RawBatch, present_rows, reject_batch
from mmdistill.teachers.fingerprint import combine, settings_fingerprint
from mmdistill.teachers.preprocess import PreprocessSpec
from mmdistill.teachers.stores import embed_rows, embedding_feature

TEACHER_FORMAT = "mmdistill.teacher/1"
TEACHER_FILE = "teacher.json"
HEAD_DIR = "head"


@dataclass
class EncoderSpec:
    """How to rebuild one pretrained encoder: a ``PRETRAINED_ENCODERS`` name, a path, kwargs."""

    name: str
    path: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    finetune_layers: int = 0

    def source(self) -> dict[str, Any]:
        """``{"name", "path", "kwargs"}`` (what ``pretrained_<m>`` encoders take as ``encoder``)."""
        return {"name": self.name, "path": self.path, "kwargs": dict(self.kwargs)}


@dataclass
class TeacherPlan:
    """The branches of a frozen-encoders teacher (see the module docstring).

    Attributes:
        modalities: every modality the teacher reads, canonical order.
        specs: modality → :class:`EncoderSpec` of its pretrained encoder (stored or fine-tuned).
        encoders: modality → the built pretrained encoder (same keys as ``specs``).
        preprocessing: the teacher's settings for its trained (mmdistill) modalities.
    """

    modalities: list[str]
    specs: dict[str, EncoderSpec]
    encoders: dict[str, PretrainedEncoder]
    preprocessing: PreprocessSpec

    def __post_init__(self) -> None:
        self.modalities = [m for m in MODALITIES if m in self.modalities]
        if set(self.specs) != set(self.encoders) or not set(self.specs) <= set(self.modalities):
            raise ConfigError(f"teacher.pretrained: encoders {sorted(self.encoders)} must match the specs "
                              f"{sorted(self.specs)} and be among the teacher's modalities {self.modalities}")
        for m, enc in self.encoders.items():
            if enc.modality != m:
                raise ConfigError(f"teacher.pretrained.{m}: encoder '{self.specs[m].name}' reads "
                                  f"{enc.modality}")

    @property
    def stored(self) -> list[str]:
        """Modalities whose embeddings come from the store (frozen, ``finetune_layers: 0``)."""
        return [m for m in self.modalities if m in self.specs and self.specs[m].finetune_layers == 0]

    @property
    def finetuned(self) -> list[str]:
        """Modalities whose pretrained encoder runs online with trainable last layers."""
        return [m for m in self.modalities if m in self.specs and self.specs[m].finetune_layers > 0]

    @property
    def trained(self) -> list[str]:
        """Modalities with an mmdistill encoder trained together with the head."""
        return [m for m in self.modalities if m not in self.specs]

    def fingerprint(self) -> str:
        """The pretrained encoders' fingerprints plus the trained modalities' preprocessing."""
        parts = [f"{m}:{self.specs[m].finetune_layers}:{self.encoders[m].fingerprint()}" for m in self.specs]
        pre = {m: self.preprocessing.describe()[m] for m in self.trained}
        return combine(*parts, settings_fingerprint("frozen-plan", pre))


def head_spec(plan: TeacherPlan, *, num_classes: int, preset: str = "teacher", vocab_size: int = 1,
              image_channels: int = 1, n_mels: int = 40, tasks: dict[str, int] | None = None,
              encoders: Mapping[str, dict[str, Any]] | None = None, fusion: dict[str, Any] | None = None,
              head: dict[str, Any] | None = None, embedding: dict[str, Any] | None = None) -> dict[str, Any]:
    """The head model's spec: ``embedding_<m>`` / ``pretrained_<m>`` / preset encoders, fusion, head.

    Args:
        plan: the teacher's branches.
        num_classes, preset, vocab_size, image_channels, n_mels, tasks, fusion, head: as in
            :func:`~mmdistill.models.builders.model_spec` (``vocab_size`` etc. size the trained encoders).
        encoders: overrides for the *trained* modalities' mmdistill encoders.
        embedding: kwargs of every ``embedding_<m>`` encoder (``dim``, ``norm``, ``dropout``).
    """
    from mmdistill.teachers.head import register_head_encoders

    register_head_encoders()  # the spec names them; whoever builds it next needs them registered
    overrides: dict[str, dict[str, Any]] = {m: dict(c) for m, c in (encoders or {}).items()
                                            if m in plan.trained}
    for m in plan.stored:
        overrides[m] = {"name": f"embedding_{m}", "kwargs": {"in_dim": int(plan.encoders[m].out_dim),
                                                            **(embedding or {})}}
    for m in plan.finetuned:
        overrides[m] = {"name": f"pretrained_{m}", "kwargs": {
            "encoder": plan.specs[m].source(), "finetune_layers": plan.specs[m].finetune_layers,
            "preprocessing": plan.preprocessing.settings()}}
    return model_spec(preset, modalities=plan.modalities, num_classes=num_classes, vocab_size=vocab_size,
                      image_channels=image_channels, n_mels=n_mels, tasks=tasks, encoders=overrides,
                      fusion=fusion, head=head)


def teacher_samples(records: RawBatch, plan: TeacherPlan, stores: Mapping[str, Any] | None = None, *,
                    pre: Preprocessor | None = None) -> list[Sample]:
    """The head model's samples: stored modalities hold embeddings, the others the teacher's inputs.

    Stored embeddings come from ``stores`` (modality → embedding store, built over these same
    records: it is read by id) for ids it holds, else are computed now. A record without a
    modality gives a sample without it (absent, as usual). ``pre``: the trained modalities'
    preprocessor, when the caller keeps one (default: built from ``plan.preprocessing``).

    Shapes:
        stored ``<m>``: ``[D_m]`` float32; fine-tuned: the encoder's own input (token ids ``[T]``);
        trained: as :class:`~mmdistill.data.preprocess.Preprocessor` makes them.
    """
    records = list(records)
    samples: list[Sample] = [{"id": r.id, "label": int(r.label)} for r in records]
    for s, r in zip(samples, records, strict=True):
        if r.tasks:
            s["tasks"] = dict(r.tasks)
    for m in plan.stored:
        rows = present_rows(records, m)
        store = (stores or {}).get(m)
        stored = [i for i in rows if store is not None and records[i].id in store]
        if stored:
            got = store.lookup([records[i].id for i in stored])[embedding_feature(m)]  # type: ignore[union-attr]
            for j, i in enumerate(stored):
                samples[i][m] = got[j]
        fresh = [i for i in rows if store is None or records[i].id not in store]
        if fresh:
            emb = embed_rows(plan.encoders[m], [records[i] for i in fresh])
            for j, i in enumerate(fresh):
                samples[i][m] = emb[j]
    for m in plan.finetuned:
        rows = present_rows(records, m)
        if not rows:  # e.g. the evaluate stage's modality subsets hide m in every record
            continue
        for i, x in zip(rows, plan.encoders[m].preprocess([records[i] for i in rows]), strict=True):
            samples[i][m] = x
    if plan.trained:
        pre = pre if pre is not None else plan.preprocessing.preprocessor(plan.trained)
        own = pre.process_all(records, progress=False)
        for s, o in zip(samples, own, strict=True):
            s.update({m: o[m] for m in plan.trained if m in o})
    return samples


class TeacherSampleTransform:
    """One raw record → its head-model sample (:func:`teacher_samples`), with one preprocessor kept.

    The transform of the streamed train split (``data.stream``) on which the head model trains:
    stored embeddings are read from ``stores`` by id, the trained modalities preprocessed per row.
    """

    def __init__(self, plan: TeacherPlan, stores: Mapping[str, Any] | None = None) -> None:
        self.plan, self.stores = plan, dict(stores or {})
        self._pre: Preprocessor | None = None

    def __call__(self, record: RawSample) -> Sample:
        if self._pre is None and self.plan.trained:
            self._pre = self.plan.preprocessing.preprocessor(self.plan.trained)
        return teacher_samples([record], self.plan, self.stores, pre=self._pre)[0]


class FrozenEncodersTeacher(nn.Module):
    """Pretrained encoders + the trained head model, as a raw-record teacher.

    Args:
        plan: the branches (encoders built, preprocessing).
        head: the trained head model (spec from :func:`head_spec`); frozen in place.
        stores: modality → embedding store, to read stored embeddings instead of recomputing them.

    Features: the head model's ``"<m>.pooled"`` (the normalized embedding of stored modalities)
    and ``"fused"``.
    """

    def __init__(self, plan: TeacherPlan, head: MultimodalModel,
                 stores: Mapping[str, TeacherCache] | None = None) -> None:
        super().__init__()
        if list(head.modalities) != plan.modalities:
            raise ConfigError(f"the head model reads {head.modalities} but the teacher plan "
                              f"{plan.modalities}")
        self.plan = plan
        self.head = head.eval().requires_grad_(False)
        self.stores = dict(stores or {})
        self.modalities = list(plan.modalities)

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def feature_dims(self) -> dict[str, int]:
        return self.head.feature_dims()

    def fingerprint(self) -> str:
        """The head's weights and spec plus :meth:`TeacherPlan.fingerprint`."""
        return combine(model_fingerprint(self.head), self.plan.fingerprint())

    def forward_raw(self, records: RawBatch) -> ModelOutput:
        """Logits ``[B, K]`` and features of the head model on :func:`teacher_samples` of ``records``
        (made on the CPU, moved to the head's device as :class:`~mmdistill.teachers.adapters.TorchTeacher`
        does)."""
        batch = collate(teacher_samples(records, self.plan, self.stores))
        param = next(self.head.parameters(), None)
        if param is not None and param.device.type != "cpu":
            from mmdistill.data.batch import move_batch

            batch = move_batch(batch, param.device)
        return self.head(batch)

    def forward(self, records: RawBatch) -> ModelOutput:
        reject_batch(records, "frozen_encoders")
        return self.forward_raw(records)


def save_frozen_teacher(directory: str | Path, teacher: FrozenEncodersTeacher, *,
                        extra: dict[str, Any] | None = None) -> Path:
    """Write ``teacher.json`` (branches, encoder specs and fingerprints) and ``head/`` (safetensors)."""
    from mmdistill.models.checkpoint import save_model

    directory = Path(directory)
    plan = teacher.plan
    save_model(teacher.head, directory / HEAD_DIR, extra=extra)
    meta = {"format": TEACHER_FORMAT, "kind": "frozen_encoders", "modalities": plan.modalities,
            "encoders": {m: {**s.source(), "finetune_layers": s.finetune_layers}
                         for m, s in plan.specs.items()},
            "encoder_fingerprints": {m: e.fingerprint() for m, e in plan.encoders.items()},
            "preprocessing": plan.preprocessing.describe(), "head": HEAD_DIR}
    # Written last and atomically: a teacher.json on disk always means the head next to it is complete.
    atomic_write_text(directory / TEACHER_FILE, json.dumps(meta, indent=2) + "\n")
    return directory


def read_format_json(path: Path, fmt: str, hint: str) -> dict[str, Any]:
    """The JSON object in ``path`` whose ``format`` is ``fmt``.

    Raises:
        CheckpointError: the file is unreadable, not JSON, or of another format (``hint`` says what to do).
    """
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc}); {hint}") from exc
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise CheckpointError(f"{path}: not a '{fmt}' file; {hint}")
    return meta


def load_frozen_teacher(directory: str | Path, *, stores: Mapping[str, TeacherCache] | None = None,
                        build: Callable[..., PretrainedEncoder] | None = None) -> FrozenEncodersTeacher:
    """Rebuild a teacher saved by :func:`save_frozen_teacher`.

    Args:
        directory: the teacher folder.
        stores: embedding stores to attach.
        build: ``(modality, source, preprocessing=...) -> PretrainedEncoder`` (default
            :func:`mmdistill.teachers.spec.build_encoder`).

    Raises:
        CheckpointError: ``teacher.json`` is missing or not this format, or a pretrained encoder's
            files changed since the head was trained (its embeddings would no longer fit the head).
    """
    from mmdistill.models.checkpoint import load_model
    from mmdistill.teachers.head import register_head_encoders

    register_head_encoders()
    directory = Path(directory)
    path = directory / TEACHER_FILE
    meta = read_format_json(path, TEACHER_FORMAT, "train the teacher again")
    if build is None:
        from mmdistill.teachers.spec import build_encoder as build
    specs = {m: EncoderSpec(**s) for m, s in meta["encoders"].items()}
    encoders = {m: build(m, s.source(), preprocessing=meta["preprocessing"]) for m, s in specs.items()}
    for m, enc in encoders.items():
        if enc.fingerprint() != meta["encoder_fingerprints"].get(m):
            raise CheckpointError(f"{path}: the {m} encoder '{specs[m].name}' changed since this teacher's "
                                  f"head "
                                  "was trained (other weights files or settings); retrain the teacher")
    pre = PreprocessSpec.from_settings(meta["preprocessing"])
    plan = TeacherPlan(list(meta["modalities"]), specs, encoders, pre)
    head, _ = load_model(directory / meta.get("head", HEAD_DIR))
    return FrozenEncodersTeacher(plan, head, stores=stores)
