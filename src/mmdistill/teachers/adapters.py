"""Whole-model teachers over PyTorch modules: an mmdistill model, or a user module from a plugin.

Both read raw records through the teacher's own :class:`~mmdistill.teachers.preprocess.PreprocessSpec`
(mmdistill transforms with the teacher's settings), collate them into the batch layout of
:mod:`mmdistill.data.batch` and run the module frozen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmdistill.data.collate import collate
from mmdistill.distill.fingerprint import model_fingerprint
from mmdistill.errors import ConfigError
from mmdistill.models.multimodal import MultimodalModel
from mmdistill.models.outputs import ModelOutput
from mmdistill.teachers.base import RawBatch, as_model_output, frozen_, reject_batch
from mmdistill.teachers.encoders import build_module, load_weights_
from mmdistill.teachers.fingerprint import combine, settings_fingerprint
from mmdistill.teachers.preprocess import PreprocessSpec, checkpoint_preprocessing
from mmdistill.teachers.registry import TORCH_MODULES


class TorchTeacher(nn.Module):
    """A frozen ``nn.Module`` over collated batches, fed from raw records by its own preprocessing.

    Args:
        module: ``forward(batch) -> ModelOutput | logits [B, K] | {"logits": ..., "<feature>": ...}``.
        preprocessing: the teacher's own settings; its modalities are what the module reads.
        num_classes: classes of the logits (default ``module.num_classes``).
        feature_dims: name → width of the features it returns (default ``module.feature_dims()``, else none).
        identity: JSON description of the module (part of the fingerprint).
    """

    def __init__(self, module: nn.Module, preprocessing: PreprocessSpec, *, num_classes: int | None = None,
                 feature_dims: dict[str, int] | None = None, identity: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.module = frozen_(module)
        self.modalities = list(getattr(module, "modalities", None) or preprocessing.modalities)
        k = num_classes if num_classes is not None else getattr(module, "num_classes", None)
        if k is None:
            raise ConfigError(f"teacher module {type(module).__name__} has no num_classes attribute; pass "
                              "num_classes")
        self._num_classes = int(k)
        if feature_dims is None and callable(getattr(module, "feature_dims", None)):
            feature_dims = dict(module.feature_dims())
        self._dims = dict(feature_dims or {})
        self.preprocessing = preprocessing
        self._pre = preprocessing.preprocessor(self.modalities)
        self._settings = {"identity": identity or {"class": type(module).__qualname__},
                          "preprocessing": preprocessing.describe()}

    @property
    def num_classes(self) -> int:
        return self._num_classes

    def feature_dims(self) -> dict[str, int]:
        return dict(self._dims)

    def fingerprint(self) -> str:
        """Weights (state dict bytes, class, spec) plus the preprocessing settings."""
        return combine(model_fingerprint(self.module), settings_fingerprint("torch-teacher", self._settings))

    def samples(self, records: RawBatch) -> list[dict[str, Any]]:
        """The teacher's own tensor samples of ``records`` (what its module was trained on)."""
        return self._pre.process_all(list(records), progress=False)

    def forward_raw(self, records: RawBatch) -> ModelOutput:
        """Preprocess, collate and run the module."""
        param = next(self.module.parameters(), None)
        batch = collate(self.samples(records))
        if param is not None and param.device.type != "cpu":
            from mmdistill.data.batch import move_batch

            batch = move_batch(batch, param.device)
        with torch.no_grad():
            return as_model_output(self.module(batch), source=f"teacher module {type(self.module).__name__}")

    def forward(self, records: RawBatch) -> ModelOutput:
        reject_batch(records, type(self.module).__name__)
        return self.forward_raw(records)


def mmdistill_teacher(model: MultimodalModel, preprocessing: PreprocessSpec) -> TorchTeacher:
    """An mmdistill model as a raw-record teacher with its own preprocessing (a
    :class:`TorchTeacher` whose classes, modalities and feature widths come from the model)."""
    return TorchTeacher(model, preprocessing, num_classes=model.num_classes,
                        feature_dims=model.feature_dims(),
                        identity={"class": "MultimodalModel"})


def load_mmdistill_teacher(path: str | Path, preprocessing: PreprocessSpec | None = None) -> TorchTeacher:
    """A saved mmdistill model (``model.json`` + ``model.safetensors``) as a raw-record teacher.

    Args:
        path: the checkpoint folder.
        preprocessing: override of the preprocessing; default: the settings and tokenizer it was
            trained with (its ``model.json`` metadata), which is almost always right.
    """
    from mmdistill.models.checkpoint import load_model

    model, extra = load_model(Path(path))
    pre = preprocessing or checkpoint_preprocessing(path, extra, model.modalities)
    return mmdistill_teacher(model, pre)


def torch_teacher(module: str, preprocessing: PreprocessSpec, *, path: str | Path | None = None,
                  kwargs: dict[str, Any] | None = None, num_classes: int | None = None) -> TorchTeacher:
    """A teacher class registered in ``TORCH_MODULES`` by a plugin, weights from ``path`` (safetensors).

    Raises:
        ConfigError: unknown module name (did-you-mean), bad constructor kwargs.
        CheckpointError: the weights file is missing, a pickle, or does not fit the class.
    """
    cls = TORCH_MODULES.get(module, key="teacher.external.module")
    net = build_module(cls, kwargs, key="teacher.external.kwargs", name=module)  # seeded: see build_module
    if path:
        load_weights_(net, path)
    return TorchTeacher(net, preprocessing, num_classes=num_classes,
                        identity={"module": module, "kwargs": kwargs or {}})
