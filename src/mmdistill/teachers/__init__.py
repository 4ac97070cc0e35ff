"""Bring your own teacher: pretrained PyTorch, Hugging Face and ONNX models as mmdistill teachers.

A teacher reads raw records (:class:`~mmdistill.data.records.RawSample`) through its *own*
preprocessing and returns logits and named features; its outputs are cached once per sample, so
students stay small mmdistill models that need none of its dependencies. Guide: ``docs/teachers.md``.

Importing this package registers the built-in pretrained encoders (``minilm``, ``hf_text``,
``speech_embedding``, ``mmdistill``, ``torch``) in :data:`PRETRAINED_ENCODERS`; optional packages are
imported only when an encoder is built. The head-model encoders (``embedding_<m>``,
``pretrained_<m>``) join the model ``ENCODERS`` only through :func:`register_head_encoders`.
"""

from __future__ import annotations

from mmdistill.teachers.adapters import TorchTeacher, load_mmdistill_teacher, mmdistill_teacher, torch_teacher
from mmdistill.teachers.base import PretrainedEncoder, RawBatch, Teacher
from mmdistill.teachers.frozen import (
    EncoderSpec,
    FrozenEncodersTeacher,
    TeacherPlan,
    head_spec,
    load_frozen_teacher,
    save_frozen_teacher,
    teacher_samples,
)
from mmdistill.teachers.head import register_head_encoders
from mmdistill.teachers.preprocess import PreprocessSpec
from mmdistill.teachers.registry import PRETRAINED_ENCODERS, TORCH_MODULES, register_all
from mmdistill.teachers.stores import (
    EMBEDDINGS_DIR,
    embedding_store,
    streamed_teacher_cache,
    teacher_cache,
)

register_all()

__all__ = [
    "EMBEDDINGS_DIR", "EncoderSpec", "FrozenEncodersTeacher", "PRETRAINED_ENCODERS", "PreprocessSpec",
    "PretrainedEncoder", "RawBatch", "TORCH_MODULES", "Teacher", "TeacherPlan", "TorchTeacher",
    "embedding_store", "head_spec", "load_frozen_teacher", "load_mmdistill_teacher", "mmdistill_teacher",
    "register_all", "register_head_encoders", "save_frozen_teacher", "streamed_teacher_cache",
    "teacher_cache", "teacher_samples", "torch_teacher",
]
