"""The flat batch layout: a batch as named arrays, its safetensors file, and the filler of absent inputs.

A batch flattened to the ONNX input names of :mod:`mmdistill.export.onnx` (``<m>``, ``<m>_lengths``,
``<m>_present``) plus ``label`` and ``tasks.<task>`` is what child processes receive (one
safetensors file per batch, row ids in its metadata). Its tensors are ONNX Runtime feeds as they
stand; a graph input the batch lacks is fed as :func:`filler_array` (zeros, one step on dynamic
axes, ``*_present`` False), the same filler :func:`mmdistill.export.onnx.onnx_feeds` uses.

Importing this module does not import torch: the ONNX Runtime latency worker
(:mod:`mmdistill.evaluation.latency_worker`) uses :func:`complete_feeds` and must not pay for or
run PyTorch. torch, ``safetensors.torch`` and :mod:`mmdistill.export.onnx` are imported inside
the functions that turn batches into tensors and back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mmdistill import MODALITIES
from mmdistill.io_atomic import atomic_path

if TYPE_CHECKING:
    import torch

    from mmdistill.data.batch import Batch

BATCH_FORMAT = "mmdistill.batch/1"
TASK_PREFIX = "tasks."

ORT_DTYPES: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_,
}
"""ONNX Runtime input type → numpy dtype, for the input types of the mmdistill contract."""


class GraphInput(Protocol):
    """What :func:`complete_feeds` reads of a graph input (``onnxruntime.NodeArg`` has these)."""

    name: str
    type: str
    shape: Sequence[int | str | None]


def filler_array(shape: Sequence[int | str | None], rows: int, dtype: Any) -> np.ndarray:
    """Zeros standing in for an input a batch lacks.

    Zero pixels or mel frames, pad token id 0, length 0, ``present`` False: the model masks the
    rows, so the values never reach the logits.

    Args:
        shape: the input's shape as the graph or the export sidecar gives it (ints, axis names or
            None for dynamic axes).
        rows: the batch size, put on axis 0 whatever ``shape[0]`` says.
        dtype: numpy dtype of the input.

    Shapes:
        ``[rows, d1, d2, ...]`` with ``di = shape[i]`` where it is a positive int, else 1.
    """
    dims = [rows if i == 0 else (d if isinstance(d, int) and d > 0 else 1) for i, d in enumerate(shape)]
    return np.zeros(dims, dtype=dtype)


def complete_feeds(
    arrays: Mapping[str, np.ndarray], inputs: Iterable[GraphInput], *, source: str
) -> dict[str, np.ndarray]:
    """The feed dict for exactly the graph's ``inputs``: ``arrays`` where they hold one, else a filler.

    Args:
        arrays: flat batch arrays (e.g. ``safetensors.numpy.load_file`` of a flat batch file); names
            the graph does not take are left out.
        inputs: the graph inputs (``session.get_inputs()``).
        source: where ``arrays`` came from, for error messages (the batch file).

    Raises:
        ValueError: ``arrays`` holds no array with a batch axis, or lacks an input whose type is
            not one of :data:`ORT_DTYPES`.
    """
    rows = next((int(a.shape[0]) for a in arrays.values() if a.ndim), None)
    if rows is None:
        raise ValueError(f"{source}: batch file holds no tensor to take the batch size from")
    feeds = {}
    for inp in inputs:
        if inp.name in arrays:
            feeds[inp.name] = arrays[inp.name]
        elif inp.type in ORT_DTYPES:
            feeds[inp.name] = filler_array(inp.shape, rows, ORT_DTYPES[inp.type])
        else:
            raise ValueError(f"{source}: lacks input {inp.name!r} of unsupported type {inp.type}")
    return feeds


def batch_to_flat(batch: Batch) -> dict[str, torch.Tensor]:
    """Flatten a batch to the contract's names plus ``label`` and ``tasks.<task>`` (ids are dropped).

    Modalities the batch lacks stay absent (no zeros are invented here); a modality without a
    ``present`` or ``lengths`` entry gets all-True / full lengths.

    Shapes:
        ``image [B, C, H, W]``, ``text [B, T]``, ``audio [B, n_mels, F]``, every other entry ``[B]``.
    """
    import torch

    from mmdistill.export.onnx import input_names_for, model_inputs

    have = [m for m in MODALITIES if isinstance(batch.get(m), torch.Tensor)]
    flat = model_inputs(batch, input_names_for(have))
    if isinstance(batch.get("label"), torch.Tensor):
        flat["label"] = batch["label"].to(torch.int64).contiguous()
    for task, labels in (batch.get("tasks") or {}).items():
        flat[f"{TASK_PREFIX}{task}"] = labels.to(torch.int64).contiguous()
    return flat


def flat_to_batch(flat: Mapping[str, torch.Tensor], ids: Sequence[str] | None = None) -> Batch:
    """Inverse of :func:`batch_to_flat`: the batch dict of :mod:`mmdistill.data.batch`.

    Args:
        flat: name → tensor as written by :func:`batch_to_flat`.
        ids: row ids; default ``"0", "1", ...``.

    Raises:
        ExportError: an unknown name, or no tensor to take the number of rows from.
    """
    import torch

    from mmdistill.export.onnx import _rows_of, _split_name

    batch: Batch = {"present": {}, "lengths": {}}
    tasks: dict[str, torch.Tensor] = {}
    for name, x in flat.items():
        if name == "label":
            batch["label"] = x
        elif name.startswith(TASK_PREFIX):
            tasks[name.removeprefix(TASK_PREFIX)] = x
        else:
            m, kind = _split_name(name)
            if kind == "data":
                batch[m] = x
            else:
                batch[kind][m] = x
    if tasks:
        batch["tasks"] = tasks
    rows = _rows_of(batch)
    if "label" not in batch:
        batch["label"] = torch.zeros(rows, dtype=torch.int64)
    batch["id"] = [str(i) for i in ids] if ids is not None else [str(i) for i in range(rows)]
    return batch


def save_flat_batch(batch: Batch, path: str | Path) -> Path:
    """Write ``batch`` as a safetensors file of :func:`batch_to_flat` tensors (ids in its metadata)."""
    from safetensors.torch import save_file

    path = Path(path)
    ids = [str(i) for i in batch.get("id", [])]
    with atomic_path(path) as tmp:
        save_file(batch_to_flat(batch), str(tmp), metadata={"format": BATCH_FORMAT, "ids": json.dumps(ids)})
    return path


def load_flat_batch(path: str | Path) -> Batch:
    """Read a file written by :func:`save_flat_batch` back into a batch dict (no pickle involved).

    Raises:
        ExportError: the file is missing or not a batch file written by :func:`save_flat_batch`.
    """
    from safetensors import SafetensorError, safe_open

    from mmdistill.export.onnx import ExportError

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: batch file not found; write it with save_flat_batch")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            flat = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise ExportError(
            f"{path}: unreadable safetensors file ({exc}); rewrite it with save_flat_batch"
        ) from exc
    if meta.get("format") != BATCH_FORMAT:
        raise ExportError(
            f"{path}: metadata format is {meta.get('format')!r}, expected '{BATCH_FORMAT}'; "
            "this file was not written by save_flat_batch"
        )
    ids = json.loads(meta.get("ids", "[]")) or None
    return flat_to_batch(flat, ids)
