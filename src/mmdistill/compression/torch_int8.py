"""In-PyTorch int8 (torch.ao dynamic quantization), kept only as a comparison point.

The deployable int8 path is ONNX Runtime (:mod:`mmdistill.compression.ort_quant`). This module
quantizes a model's ``nn.Linear`` and ``nn.LSTM`` layers with ``torch.ao.quantization.quantize_dynamic``
(int8 weights, activations quantized per call) so reports can show what int8 does *inside* PyTorch.

Why it is not deployable (ENVIRONMENT.md, torch 2.13):

* every ``torch.ao.quantization`` entry point is deprecated (its replacement, pt2e, lives in
  torchao); the warning is silenced here and recorded in the metadata (``"deprecated": True``);
* the quantized modules hold packed ``torch.ScriptObject`` weights: ``torch.onnx.export`` and
  ``torch.export`` fail on them, and their state_dict cannot be read back with
  ``torch.load(weights_only=True)``, so the only way to save one would be pickle, which mmdistill
  never writes. The returned model therefore refuses ``state_dict()`` (and so
  :func:`mmdistill.models.checkpoint.save_model`) with a :class:`~mmdistill.errors.CheckpointError`:
  save the fp32 model and re-quantize after loading (quantization takes milliseconds);
* on the project's 2-core CPU it ran 0.75x / 0.91x the speed of fp32 eager at batch 1 / 64.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn

from mmdistill.errors import CheckpointError

__all__ = ["METADATA_ATTR", "TORCH_INT8_METADATA", "quantization_metadata", "torch_dynamic_int8"]

METADATA_ATTR = "quantization_metadata"
"""Attribute of the returned module that holds its metadata dict."""

TORCH_INT8_METADATA: dict[str, Any] = {
    "runtime": "torch",
    "int8": "torch.ao dynamic",
    "deployable": False,
    "deprecated": True,
}
"""The fixed part of the metadata of every :func:`torch_dynamic_int8` result."""

_QUANTIZED_TYPES: dict[str, type[nn.Module]] = {"Linear": nn.Linear, "LSTM": nn.LSTM}


def _refuse_state_dict(module: nn.Module, prefix: str, keep_vars: bool) -> None:
    """``state_dict`` pre-hook: a torch.ao int8 model can only be saved by pickling, so refuse."""
    del prefix, keep_vars
    raise CheckpointError(
        f"cannot save {type(module).__name__}: it is a torch.ao dynamic int8 model (not deployable), whose "
        "packed int8 weights cannot go to safetensors, ONNX or weights_only torch.load, only to pickle, "
        "which mmdistill never writes. Save the float32 model instead and call torch_dynamic_int8 again "
        "after loading it; for a deployable int8 file export to ONNX and use quantize_static_onnx"
    )


def _count(model: nn.Module) -> dict[str, int]:
    """Layer kind → number of float modules of that kind (exact type, not subclasses)."""
    return {name: sum(type(m) is cls for m in model.modules()) for name, cls in _QUANTIZED_TYPES.items()}


def torch_dynamic_int8(model: nn.Module, *, dtype: torch.dtype = torch.qint8) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` and ``nn.LSTM`` dynamically quantized to int8.

    The input model is left untouched. The copy runs on CPU in eval mode, takes the same inputs and
    returns the same outputs (a :class:`~mmdistill.models.outputs.ModelOutput` for a
    :class:`~mmdistill.models.multimodal.MultimodalModel`), and carries metadata under
    :data:`METADATA_ATTR` (see :func:`quantization_metadata`). Convolutions and embeddings stay
    float32: torch.ao's dynamic mode has no int8 kernel for them.

    Args:
        model: a float32 model (moved to CPU in the copy: torch.ao int8 kernels are CPU-only).
        dtype: ``torch.qint8`` (the only weight dtype fbgemm's dynamic Linear/LSTM take here).

    Returns:
        The quantized copy. Its ``state_dict()`` raises :class:`CheckpointError` (see module docs).

    Raises:
        ValueError: ``dtype`` is not ``torch.qint8``, or the model has no Linear/LSTM layer.
    """
    if dtype != torch.qint8:
        raise ValueError(f"dtype must be torch.qint8 for torch.ao dynamic Linear/LSTM, got {dtype}")
    before = _count(model)
    if not any(before.values()):
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear or nn.LSTM layer, so torch.ao dynamic int8 would "
            "change nothing; use quantize_static_onnx (ONNX Runtime) for conv-only models"
        )
    work = copy.deepcopy(model).to("cpu").eval()
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in torch 2.13 (DeprecationWarning on import and call,
        # UserWarning for quantized tensor creation); recorded in the metadata instead of printed.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*deprecated.*", category=UserWarning)
        from torch.ao.quantization import quantize_dynamic

        quantized = quantize_dynamic(work, set(_QUANTIZED_TYPES.values()), dtype=dtype, inplace=True)
    after = _count(quantized)
    meta = {
        **TORCH_INT8_METADATA,
        "dtype": "qint8",
        "quantized_layers": {k: before[k] - after[k] for k in before},
        "float_layers_left": after,
        "note": "torch.ao.quantization is deprecated; the model cannot be exported to ONNX nor saved "
        "without pickle (compare only; deploy with ONNX Runtime int8)",
    }
    setattr(quantized, METADATA_ATTR, meta)
    quantized.register_state_dict_pre_hook(_refuse_state_dict)
    return quantized


def quantization_metadata(model: nn.Module) -> dict[str, Any] | None:
    """The metadata dict :func:`torch_dynamic_int8` attached to ``model``, or None for other models."""
    meta = getattr(model, METADATA_ATTR, None)
    return dict(meta) if isinstance(meta, dict) else None
