"""ONNX export of a :class:`~mmdistill.models.multimodal.MultimodalModel` and the named-input contract.

Graph inputs, per modality ``m`` of the model in ``model.modalities`` order::

    m            image float32 [B, C, H, W] | text int64 [B, T] | audio float32 [B, n_mels, F]
    m_lengths    int64 [B]   (text and audio only)
    m_present    bool  [B]

and one output ``logits`` float32 ``[B, K]``. Batch, text ``T`` and audio ``F`` are dynamic. A modality
absent for a row is fed as zeros with ``m_present = False``; the traced model runs every encoder on
every row and masks (see ``is_exporting`` in :mod:`mmdistill.models.encoders.common`), which gives the
eager numbers. A batch flattened to these names (plus ``label``, ``tasks.<t>``) is also the
safetensors layout used to hand batches to child processes (:mod:`mmdistill.export.flat`, whose
functions are re-exported here).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmdistill import MODALITIES
from mmdistill.data.batch import PAD_ID, SEQUENCE_MODALITIES, Batch
from mmdistill.errors import MissingDependencyError, MMDistillError
from mmdistill.export.flat import (
    BATCH_FORMAT,
    TASK_PREFIX,
    batch_to_flat,
    filler_array,
    flat_to_batch,
    load_flat_batch,
    save_flat_batch,
)
from mmdistill.io_atomic import atomic_path, atomic_write_json
from mmdistill.models.multimodal import MultimodalModel

__all__ = [
    "BATCH_FORMAT",
    "EXPORT_FORMAT",
    "OUTPUT_NAME",
    "SIDECAR_SUFFIX",
    "TASK_PREFIX",
    "ExportError",
    "ExportInfo",
    "OnnxWrapper",
    "batch_to_flat",
    "export_onnx",
    "flat_to_batch",
    "input_names_for",
    "load_export_info",
    "load_flat_batch",
    "model_inputs",
    "onnx_feeds",
    "save_flat_batch",
    "sidecar_path",
]

EXPORT_FORMAT = "mmdistill.onnx/1"
SIDECAR_SUFFIX = ".json"
OUTPUT_NAME = "logits"
_DTYPES = {"image": torch.float32, "text": torch.int64, "audio": torch.float32}
# Axis index → symbolic name of the dynamic axes, per input kind.
_DYNAMIC = {
    "image": {0: "batch"}, "text": {0: "batch", 1: "text_steps"}, "audio": {0: "batch", 2: "audio_frames"}
}


class ExportError(MMDistillError):
    """A model cannot be exported, or an exported file or its sidecar is missing or unusable."""


@dataclass
class ExportInfo:
    """What :func:`export_onnx` wrote; saved as the JSON sidecar ``<model>.onnx.json``.

    Attributes:
        path: the ``.onnx`` file.
        input_names: graph input names, in order (see the module docstring).
        inputs: name → ``{"dtype": "float32"|"int64"|"bool", "shape": [int | axis name, ...]}``.
        modalities: the model's modalities, in order.
        num_classes: width of ``logits``.
        opset: ONNX opset version.
        checkpoint: the source checkpoint directory (relative to the sidecar's folder when it lies
            below a common root, else absolute), or None when exported from memory.
        spec: the model spec (``model.json``'s ``spec``) the file was exported from.
        output_names: graph outputs (``["logits"]``).
        format: sidecar format tag.
    """

    path: str
    input_names: list[str]
    inputs: dict[str, dict[str, Any]]
    modalities: list[str]
    num_classes: int
    opset: int
    checkpoint: str | None = None
    spec: dict[str, Any] | None = None
    output_names: list[str] = field(default_factory=lambda: [OUTPUT_NAME])
    format: str = EXPORT_FORMAT

    @property
    def input_shapes(self) -> dict[str, list[int | str]]:
        """Input name → shape (axis names for dynamic axes), for :func:`onnx_feeds`."""
        return {n: list(v["shape"]) for n, v in self.inputs.items()}

    def checkpoint_dir(self) -> Path | None:
        """The source checkpoint directory resolved against the sidecar's folder (None if unknown)."""
        if self.checkpoint is None:
            return None
        p = Path(self.checkpoint)
        return p if p.is_absolute() else (Path(self.path).parent / p)


def input_names_for(modalities: Sequence[str]) -> list[str]:
    """Graph input names for a model over ``modalities`` (in the model's order)."""
    names: list[str] = []
    for m in modalities:
        names.append(m)
        if m in SEQUENCE_MODALITIES:
            names.append(f"{m}_lengths")
        names.append(f"{m}_present")
    return names


def _split_name(name: str) -> tuple[str, str]:
    """``"text_lengths"`` → ``("text", "lengths")``; ``"image"`` → ``("image", "data")``."""
    for m in MODALITIES:
        if name == m:
            return m, "data"
        for kind in ("lengths", "present"):
            if name == f"{m}_{kind}":
                return m, kind
    raise ExportError(
        f"unknown ONNX input name {name!r}; mmdistill graphs take <modality>, <modality>_lengths and "
        f"<modality>_present for modalities {list(MODALITIES)}: re-export the model with export_onnx"
    )


def _rows_of(batch: Batch) -> int:
    if isinstance(batch.get("label"), torch.Tensor):
        return int(batch["label"].shape[0])
    for m in MODALITIES:
        if isinstance(batch.get(m), torch.Tensor):
            return int(batch[m].shape[0])
    raise ExportError(f"batch holds no 'label' and no modality tensor to size it; keys: {sorted(batch)}")


def _filler(name: str, rows: int, shapes: Mapping[str, Sequence[int | str]] | None) -> torch.Tensor:
    """Zeros for modality input ``name`` absent from the batch (one step on dynamic length axes)."""
    m = name
    if m == "text":
        return torch.full((rows, 1), PAD_ID, dtype=torch.int64)
    shape = None if shapes is None else shapes.get(name)
    if shape is None:
        raise ExportError(
            f"the batch has no '{name}', so zeros of its shape must be fed, but its shape is unknown; "
            f"pass input_shapes (ExportInfo.input_shapes or the session's inputs) to onnx_feeds"
        )
    return torch.from_numpy(filler_array(shape, rows, np.float32)).to(_DTYPES[m])


def model_inputs(
    batch: Batch, input_names: Sequence[str], input_shapes: Mapping[str, Sequence[int | str]] | None = None
) -> dict[str, torch.Tensor]:
    """The contract's named tensors for ``batch``: zeros and ``present=False`` where it lacks a modality.

    Args:
        batch: a collated batch (layout in :mod:`mmdistill.data.batch`).
        input_names: the graph's input names (:attr:`ExportInfo.input_names`).
        input_shapes: shapes of the inputs; needed only for image/audio absent from ``batch``.

    Shapes:
        per the module docstring; every tensor has the batch's ``B`` rows.
    """
    rows = _rows_of(batch)
    out: dict[str, torch.Tensor] = {}
    for name in input_names:
        m, kind = _split_name(name)
        have = isinstance(batch.get(m), torch.Tensor)
        if kind == "data":
            out[name] = batch[m].to(_DTYPES[m]) if have else _filler(name, rows, input_shapes)
        elif kind == "lengths":
            lengths = batch.get("lengths", {}).get(m)
            if have and lengths is None:  # no lengths given: every row is full length
                lengths = torch.full((rows,), int(batch[m].shape[-1]), dtype=torch.int64)
            out[name] = lengths.to(torch.int64) if have else torch.zeros(rows, dtype=torch.int64)
        else:
            present = batch.get("present", {}).get(m)
            if have and present is None:
                present = torch.ones(rows, dtype=torch.bool)
            out[name] = present.to(torch.bool) if have else torch.zeros(rows, dtype=torch.bool)
    return {k: v.contiguous() for k, v in out.items()}


def onnx_feeds(
    batch: Batch, input_names: Sequence[str], input_shapes: Mapping[str, Sequence[int | str]] | None = None
) -> dict[str, np.ndarray]:
    """The ONNX Runtime feed dict for ``batch`` (see :func:`model_inputs`; numpy arrays on CPU)."""
    return {k: v.detach().cpu().numpy() for k, v in model_inputs(batch, input_names, input_shapes).items()}


class OnnxWrapper(nn.Module):
    """Maps the contract's positional inputs back to a batch dict and returns the model's logits."""

    def __init__(self, model: MultimodalModel, input_names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.input_names = list(input_names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Shapes: inputs per the contract, in ``input_names`` order. Returns logits ``[B, K]``."""
        batch: Batch = {"present": {}, "lengths": {}}
        for name, x in zip(self.input_names, inputs, strict=True):
            m, kind = _split_name(name)
            if kind == "data":
                batch[m] = x
            else:
                batch[kind][m] = x
        return self.model(batch).logits


def _shape_entry(name: str, x: torch.Tensor) -> dict[str, Any]:
    m, kind = _split_name(name)
    axes = _DYNAMIC[m] if kind == "data" else {0: "batch"}
    dtype = {torch.float32: "float32", torch.int64: "int64", torch.bool: "bool"}[x.dtype]
    return {"dtype": dtype, "shape": [axes.get(i, int(d)) for i, d in enumerate(x.shape)]}


def _describe(model: MultimodalModel) -> str:
    spec = model.spec or {}
    encoders = {m: (e or {}).get("name") for m, e in (spec.get("encoders") or {}).items()}
    fusion = (spec.get("fusion") or {}).get("name")
    encoders = encoders or {m: type(e).__name__ for m, e in model.encoders.items()}
    return f"encoders {encoders}, fusion {fusion!r}"


def _relative_checkpoint(checkpoint: str | Path | None, onnx_dir: Path) -> str | None:
    if checkpoint is None:
        return None
    ckpt = Path(checkpoint).resolve()
    try:
        return os.path.relpath(ckpt, onnx_dir.resolve())
    except ValueError:  # another drive on Windows
        return str(ckpt)


def export_onnx(
    model: MultimodalModel,
    path: str | Path,
    example_batch: Batch,
    *,
    opset: int = 17,
    checkpoint: str | Path | None = None,
) -> ExportInfo:
    """Export ``model`` to ONNX (TorchScript exporter) and write the sidecar ``<path>.json``.

    Args:
        model: the model; exported in eval mode (its training flag is restored afterwards).
        path: target ``.onnx`` file (parent folders are created).
        example_batch: a collated batch holding every modality of the model (any lengths).
        opset: ONNX opset version.
        checkpoint: the directory the model was loaded from, recorded in the sidecar so that
            ``mmdistill predict`` finds the classes, tokenizer and preprocessing.

    Returns:
        the :class:`ExportInfo` also written as JSON next to the file.

    Raises:
        MissingDependencyError: ``onnx`` is not installed.
        ExportError: the example batch lacks a modality, or a component cannot be exported.
    """
    try:
        import onnx
    except ImportError as exc:
        raise MissingDependencyError("onnx", "onnx", "ONNX export") from exc
    path = Path(path)
    missing = [m for m in model.modalities if not isinstance(example_batch.get(m), torch.Tensor)]
    if missing:
        raise ExportError(
            f"export of {path}: example_batch lacks modalities {missing} of the model {model.modalities}; "
            "pass a batch in which every modality of the model is present (tracing needs each input)"
        )
    names = input_names_for(model.modalities)
    example = model_inputs(example_batch, names)
    axes = {n: (_DYNAMIC[_split_name(n)[0]] if _split_name(n)[1] == "data" else {0: "batch"}) for n in names}
    axes[OUTPUT_NAME] = {0: "batch"}
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    wrapper = OnnxWrapper(model, names).eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # dynamo=False: the dynamo exporter fails on LSTMs and ceil-mode pools (ENVIRONMENT.md);
            # the TorchScript exporter is deprecated and says so on every call. Tracer warnings
            # about shape-dependent Python values are expected: dynamic axes are tested, not assumed.
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            # The LSTM/GRU "batch_size other than 1" warning: no initial states are fed, and other
            # batch sizes are checked by verify_onnx and the tests.
            warnings.filterwarnings("ignore", message="Exporting a model to ONNX with a batch_size other")
            with atomic_path(path) as tmp:  # a failed or killed export never leaves a torn .onnx
                torch.onnx.export(
                    wrapper, tuple(example[n] for n in names), str(tmp), dynamo=False,
                    opset_version=int(opset), input_names=names, output_names=[OUTPUT_NAME],
                    dynamic_axes=axes,
                )
    except (RuntimeError, TypeError, ValueError, NotImplementedError, torch.onnx.OnnxExporterError) as exc:
        raise ExportError(
            f"cannot export {path} ({_describe(model)}) at opset {opset}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}; try another opset (export.opset) or swap the "
            "component named in the message for an exportable one (mmdistill list)"
        ) from exc
    finally:
        model.train(was_training)
    graph_inputs = [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]
    info = ExportInfo(
        path=str(path),
        input_names=[n for n in names if n in graph_inputs],
        inputs={n: _shape_entry(n, example[n]) for n in names if n in graph_inputs},
        modalities=list(model.modalities),
        num_classes=int(model.num_classes),
        opset=int(opset),
        checkpoint=_relative_checkpoint(checkpoint, path.parent),
        spec=model.spec,
    )
    atomic_write_json(sidecar_path(path), asdict(info))
    return info


def sidecar_path(path: str | Path) -> Path:
    """``model.onnx`` → ``model.onnx.json``."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def load_export_info(path: str | Path) -> ExportInfo:
    """Read the sidecar of ``path`` (the ``.onnx`` file or the ``.onnx.json`` itself).

    Raises:
        ExportError: the sidecar is missing, not JSON, or not written by :func:`export_onnx`.
    """
    path = Path(path)
    side = path if path.name.endswith(".onnx" + SIDECAR_SUFFIX) else sidecar_path(path)
    onnx_path = side.with_name(side.name.removesuffix(SIDECAR_SUFFIX))
    if not side.is_file():
        raise ExportError(
            f"{onnx_path}: its sidecar {side} is missing; it names the inputs and the checkpoint the "
            "model came from: export with mmdistill's export_onnx (or the export stage), which writes both"
        )
    try:
        raw = json.loads(side.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExportError(f"{side}: not valid JSON ({exc}); re-export the model to rewrite it") from exc
    if not isinstance(raw, dict) or raw.get("format") != EXPORT_FORMAT:
        got = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise ExportError(f"{side}: expected format '{EXPORT_FORMAT}', got {got!r}; re-export the model")
    known = set(ExportInfo.__dataclass_fields__)
    try:
        info = ExportInfo(**{k: v for k, v in raw.items() if k in known})
    except TypeError as exc:
        raise ExportError(f"{side}: incomplete sidecar ({exc}); re-export the model") from exc
    info.path = str(onnx_path)  # the files may have moved together since export
    return info
