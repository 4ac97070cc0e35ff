"""The teacher and pretrained-encoder interfaces: raw records in, logits and named features out.

A *teacher* here reads :class:`~mmdistill.data.records.RawSample` records and applies its own
preprocessing (its tokenizer, sample rate and mel front end, image normalization), separately from
the student's. Distillation only needs its outputs, which the teacher-output cache stores once per
sample (:func:`mmdistill.teachers.cache.teacher_cache`), so the student loop never runs it.

Adapters (all ``nn.Module`` so a :class:`~mmdistill.distill.strategies.DistillStrategy` can hold
them like any teacher): :class:`~mmdistill.teachers.adapters.TorchTeacher` (an mmdistill model
through :func:`~mmdistill.teachers.adapters.mmdistill_teacher`, or a user module from a plugin),
:class:`~mmdistill.teachers.huggingface.HFClassifierTeacher` (a local Hugging Face classifier),
:class:`~mmdistill.teachers.onnx.OnnxTeacher` (an ONNX file) and
:class:`~mmdistill.teachers.frozen.FrozenEncodersTeacher` (pretrained encoders + a trained head).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from mmdistill.data.records import RawSample
from mmdistill.errors import ConfigError
from mmdistill.models.outputs import ModelOutput

RawBatch = Sequence[RawSample]
"""A list of raw records: what a teacher reads."""


@runtime_checkable
class Teacher(Protocol):
    """Raw records → :class:`ModelOutput` with the teacher's own preprocessing.

    Attributes:
        modalities: the modalities it reads (records may lack some: those rows count as absent).
        num_classes: classes of its logits.
    """

    modalities: list[str]

    @property
    def num_classes(self) -> int: ...

    def feature_dims(self) -> dict[str, int]:
        """Width of each named feature it returns (``"<m>.pooled"``, ``"fused"``, ...)."""
        ...

    def fingerprint(self) -> str:
        """sha256 of everything its outputs depend on: weights, preprocessing, settings."""
        ...

    def forward_raw(self, records: RawBatch) -> ModelOutput:
        """Logits ``[B, K]`` and features ``[B, D]`` for ``records`` (B = len(records))."""
        ...


@runtime_checkable
class PretrainedEncoder(Protocol):
    """One frozen pretrained encoder of one modality, with its own preprocessing.

    Attributes:
        modality: ``"image"``, ``"text"`` or ``"audio"``.
        out_dim: width D of its embedding.
        finetunable: whether :meth:`module` exists (PyTorch / Hugging Face encoders; ONNX is not).
    """

    modality: str
    out_dim: int
    finetunable: bool

    def fingerprint(self) -> str:
        """sha256 over its weights files and preprocessing settings (keys its embedding store)."""
        ...

    def preprocess(self, records: RawBatch) -> list[torch.Tensor]:
        """The encoder's own input tensor for each record (every record must hold the modality)."""
        ...

    def embed(self, records: RawBatch) -> torch.Tensor:
        """Frozen embeddings ``[B, D]`` of records that all hold the modality."""
        ...

    def module(self) -> nn.Module:
        """An mmdistill encoder (``forward(x, lengths) -> EncoderOutput``, ``out_dim``) over
        :meth:`preprocess`'s tensors, for fine-tuning; only when ``finetunable``."""
        ...


def as_model_output(out: Any, *, source: str) -> ModelOutput:
    """A teacher module's result as :class:`ModelOutput`.

    Accepts ``ModelOutput``, a logits tensor ``[B, K]``, or a mapping with ``"logits"`` and
    feature tensors.

    Raises:
        ConfigError: anything else, naming ``source``.
    """
    if isinstance(out, ModelOutput):
        return out
    if isinstance(out, torch.Tensor):
        return ModelOutput(logits=out)
    if isinstance(out, Mapping) and isinstance(out.get("logits"), torch.Tensor):
        features = {str(k): v for k, v in out.items() if k != "logits"}
        return ModelOutput(logits=out["logits"], features=features)
    raise ConfigError(f"{source} returned {type(out).__name__}; a teacher must return ModelOutput, a logits "
                      "tensor [B, K] or a mapping with 'logits' and [B, D] feature tensors")


def reject_batch(batch: Any, name: str) -> None:
    """Raise when a raw-record teacher is called on a collated batch (the online distill path).

    Raises:
        ConfigError: ``batch`` is a dict (a collated student batch).
    """
    if isinstance(batch, Mapping):
        raise ConfigError(f"teacher '{name}' reads raw records with its own preprocessing, not the student's "
                          "batches: its outputs must come from the teacher cache (distill.cache: auto or on)")


def frozen_(module: nn.Module) -> nn.Module:
    """``module`` in eval mode with every parameter frozen (in place); returns it."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def present_rows(records: RawBatch, modality: str) -> list[int]:
    """Indices of the records that hold ``modality``."""
    return [i for i, r in enumerate(records) if getattr(r, modality) is not None]
