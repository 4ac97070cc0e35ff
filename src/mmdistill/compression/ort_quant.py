"""Deployable int8: quantize an exported ONNX student with ONNX Runtime.

Two entry points, both file → file:

* :func:`quantize_static_onnx`: ``quant_pre_process`` (shape inference + graph optimisation) then
  ``quantize_static`` in QDQ format, weights per channel, activation ranges from calibration feeds
  (:func:`calibration_feeds` turns training batches into them). This is the path ENVIRONMENT.md
  measured fastest on the project's CPU (4.1x batch-1 / 2.3x batch-64 over torch fp32 eager).
* :func:`quantize_dynamic_onnx`: int8 weights, activations quantized on the fly, restricted by
  default to ``MatMul/Gemm/LSTM/Gather``: dynamic ``ConvInteger`` was measured 4x *slower* than fp32
  at batch 64 on this CPU.

Per-branch precision: ``fp32_branches=("image",)`` keeps the nodes that torch's exporter put under
that module (see :func:`nodes_of_branch`) in float32, e.g. an encoder that loses accuracy in int8.

onnx and onnxruntime are imported inside the functions; when absent they raise
:class:`~mmdistill.errors.MissingDependencyError` naming the ``onnx`` extra.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from mmdistill.compression import onnx_graph
from mmdistill.compression.onnx_graph import (
    QuantInfo,
    count_quantized_ops,
    file_size,
    load_onnx,
    nodes_of_branch,
    write_sidecar,
)
from mmdistill.compression.onnx_graph import (
    float_compute_nodes as float_compute_nodes,  # re-export only
)
from mmdistill.config.schema_compress import BRANCHES
from mmdistill.errors import ConfigError, DataError, MissingDependencyError
from mmdistill.io_atomic import atomic_path

__all__ = [
    "BRANCHES",
    "calibration_feeds",
    "quantize_dynamic_onnx",
    "quantize_static_onnx",
]
__all__ += onnx_graph.__all__  # re-exported: callers import the graph helpers from here too

ACTIVATION_TYPES = ("QUInt8", "QInt8")
WEIGHT_TYPES = ("QInt8", "QUInt8")
CALIBRATE_METHODS = ("MinMax", "Entropy", "Percentile")
DYNAMIC_DEFAULT_OPS: tuple[str, ...] = ("MatMul", "Gemm", "LSTM", "Gather")
"""Ops :func:`quantize_dynamic_onnx` quantizes by default: no ``Conv`` (ConvInteger is slow here)."""




def _quantization_module() -> Any:
    """``onnxruntime.quantization``, or :class:`MissingDependencyError` naming the extra."""
    try:
        import onnxruntime.quantization as ortq
    except ImportError as exc:
        raise MissingDependencyError("onnxruntime", "onnx", "int8 quantization for ONNX Runtime") from exc
    return ortq


def _check_choice(key: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {list(allowed)}, got {value!r}")


def calibration_feeds(
    batches: Iterable[Any],
    input_names: Sequence[str],
    max_batches: int | None = None,
    *,
    input_shapes: Mapping[str, Sequence[int | str]] | None = None,
) -> list[dict[str, np.ndarray]]:
    """ONNX Runtime feed dicts for calibration from collated batches (training split, as a rule).

    Args:
        batches: collated batches (see :mod:`mmdistill.data.batch`), e.g. a training DataLoader.
        input_names: the exported graph's input names (``ExportInfo.input_names``).
        max_batches: stop after this many batches (None: all). Activation ranges settle after a
            few hundred rows; more only costs calibration time.
        input_shapes: input name → shape (the export's ``ExportInfo.input_shapes``); needed only
            when a batch lacks the image or audio modality, to feed zeros of the right shape.

    Returns:
        One feed dict per batch, built by :func:`mmdistill.export.onnx.onnx_feeds` (modalities a batch
        lacks are fed as zeros with ``<m>_present=False``).

    Raises:
        ValueError: ``max_batches`` < 1.
    """
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be >= 1 or None, got {max_batches}")
    from mmdistill.export.onnx import onnx_feeds

    feeds: list[dict[str, np.ndarray]] = []
    for batch in batches:
        if max_batches is not None and len(feeds) >= max_batches:
            break
        feeds.append(onnx_feeds(batch, list(input_names), input_shapes))
    return feeds


def _checked_feeds(
    calibration: Iterable[dict[str, np.ndarray]], graph_inputs: dict[str, Any], path: Path
) -> list[dict[str, np.ndarray]]:
    """Materialise and check the calibration feeds: non-empty, every graph input present.

    Arrays are cast to the graph's input dtypes (float64 images, int32 lengths or uint8 masks
    would otherwise fail inside ORT with a message that names no input).
    """
    feeds = [dict(f) for f in calibration]
    if not feeds:
        raise DataError(
            "the calibration reader gave no feeds; pass at least one batch (e.g. "
            "calibration_feeds(train_loader, input_names, max_batches=8))",
            path=str(path),
        )
    for i, feed in enumerate(feeds):
        missing = sorted(set(graph_inputs) - set(feed))
        if missing:
            raise DataError(
                f"calibration feed {i} lacks graph inputs {missing} (it has {sorted(feed)}); build feeds "
                "with mmdistill.export.onnx.onnx_feeds(batch, input_names) using the graph's input names",
                path=str(path),
            )
        # Only the graph's inputs, as contiguous arrays: ORT rejects unknown names in a feed.
        feeds[i] = {name: np.ascontiguousarray(feed[name], dtype=dt) for name, dt in graph_inputs.items()}
    return feeds


def _graph_inputs(path: Path) -> dict[str, Any]:
    """Graph input name → numpy dtype, in graph order."""
    model = load_onnx(path)  # MissingDependencyError first if onnx is absent
    from onnx.helper import tensor_dtype_to_np_dtype

    init = {t.name for t in model.graph.initializer}
    return {
        i.name: tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)
        for i in model.graph.input
        if i.name not in init
    }


def _preprocess(src: Path, dst: Path) -> None:
    """``quant_pre_process``: symbolic shape inference + ORT basic optimisations, src → dst."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)


@contextmanager
def _preprocessed(
    fp32_path: Path, out_path: Path, exclude_nodes: Sequence[str], branches: Sequence[str]
) -> Iterator[tuple[Path, list[str]]]:
    """Pre-process ``fp32_path`` into a temporary file; yield it and the node names kept in float32.

    Creates ``out_path``'s folder; the temporary folder is removed when the block ends.
    """
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mmdistill-quant-") as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        _preprocess(fp32_path, pre)
        yield pre, _excluded(pre, exclude_nodes, branches)


def _excluded(path: Path, exclude_nodes: Sequence[str], branches: Sequence[str]) -> list[str]:
    """``exclude_nodes`` (checked to exist in ``path``) plus every node of ``branches``."""
    known = {n.name for n in load_onnx(path).graph.node}
    unknown = [n for n in exclude_nodes if n not in known]
    if unknown:
        raise ConfigError(
            f"exclude_nodes: no node named {unknown[:5]} in {path}; use names of the exported graph "
            "(e.g. from nodes_of_branch) or fp32_branches for whole branches"
        )
    names: list[str] = list(exclude_nodes)
    for branch in branches:
        found = nodes_of_branch(path, branch)
        if not found:
            raise ConfigError(
                f"fp32_branches: no node of branch {branch!r} in {path}; branches are "
                f"{list(BRANCHES)} or a modality the model was exported with"
            )
        names.extend(found)
    return names


class _FeedReader:
    """A ``CalibrationDataReader`` over a list of feed dicts (ORT needs ``get_next``/``rewind``)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds = feeds
        self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._feeds)


def quantize_static_onnx(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: Iterable[dict[str, np.ndarray]],
    *,
    per_channel: bool = True,
    activation_type: str = "QUInt8",
    weight_type: str = "QInt8",
    calibrate_method: str = "MinMax",
    op_types: Sequence[str] | None = None,
    exclude_nodes: Sequence[str] = (),
    fp32_branches: Sequence[str] = (),
) -> QuantInfo:
    """Static int8 (QDQ) quantization of an ONNX file with calibrated activation ranges.

    Args:
        fp32_path: the exported float32 model.
        out_path: where the int8 model goes (a JSON sidecar ``<out_path>.json`` is written too,
            copying the fp32 sidecar's entries, if any, plus ``"quantization"``).
        calibration: feed dicts (graph input name → array), e.g. from :func:`calibration_feeds`.
            Bool/int64 inputs (presence masks, lengths, token ids) are fed as they are; ORT only
            collects ranges of float tensors.
        per_channel: one weight scale per output channel (recommended; per-tensor loses accuracy).
        activation_type: ``"QUInt8"`` or ``"QInt8"``.
        weight_type: ``"QInt8"`` or ``"QUInt8"``.
        calibrate_method: ``"MinMax"``, ``"Entropy"`` or ``"Percentile"``.
        op_types: op types to quantize (None: every type ORT's QDQ quantizer supports).
        exclude_nodes: node names (of the pre-processed graph) to keep in float32.
        fp32_branches: branches to keep in float32 (``"image"``, ``"text"``, ``"audio"``,
            ``"fusion"``, ``"head"``); their nodes are found with :func:`nodes_of_branch`.

    Returns:
        :class:`QuantInfo` with sizes, quantized-op counts and the settings used.

    Raises:
        FileNotFoundError: ``fp32_path`` does not exist.
        DataError: no calibration feed, or a feed lacks a graph input.
        ConfigError: an unknown type/method, an unknown ``exclude_nodes`` name, or a branch without nodes.
        MissingDependencyError: onnx/onnxruntime are not installed.
    """
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    ortq = _quantization_module()
    _check_choice("activation_type", activation_type, ACTIVATION_TYPES)
    _check_choice("weight_type", weight_type, WEIGHT_TYPES)
    _check_choice("calibrate_method", calibrate_method, CALIBRATE_METHODS)
    file_size(fp32_path)  # FileNotFoundError naming the file before any work
    feeds = _checked_feeds(calibration, _graph_inputs(fp32_path), fp32_path)
    with _preprocessed(fp32_path, out_path, exclude_nodes, fp32_branches) as (pre, excluded):
        with atomic_path(out_path) as tmp:
            ortq.quantize_static(
                str(pre),
                str(tmp),
                _FeedReader(feeds),
                quant_format=ortq.QuantFormat.QDQ,
                op_types_to_quantize=None if op_types is None else list(op_types),
                per_channel=per_channel,
                activation_type=getattr(ortq.QuantType, activation_type),
                weight_type=getattr(ortq.QuantType, weight_type),
                nodes_to_exclude=excluded,
                calibrate_method=getattr(ortq.CalibrationMethod, calibrate_method),
                calibration_providers=["CPUExecutionProvider"],
            )
    settings: dict[str, Any] = {
        "format": "QDQ",
        "per_channel": per_channel,
        "activation_type": activation_type,
        "weight_type": weight_type,
        "calibrate_method": calibrate_method,
        "calibration_batches": len(feeds),
        "calibration_rows": int(sum(next(iter(f.values())).shape[0] for f in feeds)),
        "op_types": None if op_types is None else list(op_types),
        "fp32_branches": list(fp32_branches),
    }
    return _finish("static", fp32_path, out_path, settings, excluded)


def quantize_dynamic_onnx(
    fp32_path: str | Path,
    out_path: str | Path,
    op_types: Sequence[str] = DYNAMIC_DEFAULT_OPS,
    *,
    per_channel: bool = False,
    weight_type: str = "QInt8",
    exclude_nodes: Sequence[str] = (),
    fp32_branches: Sequence[str] = (),
) -> QuantInfo:
    """Dynamic int8 quantization (int8 weights, activation ranges computed per call).

    Needs no calibration data. Slower than :func:`quantize_static_onnx` on this project's CPU for
    conv-heavy students, but a reasonable choice for MatMul/LSTM-bound ones.

    Args:
        fp32_path: the exported float32 model.
        out_path: where the int8 model goes (plus a ``<out_path>.json`` sidecar).
        op_types: op types to quantize. ``Conv`` is left out by default: dynamic ``ConvInteger``
            ran 0.23x the speed of fp32 at batch 64 on the project CPU (ENVIRONMENT.md); asking for
            it works but warns.
        per_channel: per-channel weight scales.
        weight_type: ``"QInt8"`` or ``"QUInt8"``.
        exclude_nodes: node names (of the pre-processed graph) to keep in float32.
        fp32_branches: branches to keep in float32 (see :func:`nodes_of_branch`).

    Returns:
        :class:`QuantInfo`.

    Raises:
        FileNotFoundError: ``fp32_path`` does not exist.
        ConfigError: unknown weight type, empty ``op_types``, an unknown ``exclude_nodes`` name, or a
            branch without nodes.
        MissingDependencyError: onnx/onnxruntime are not installed.
    """
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    ortq = _quantization_module()
    _check_choice("weight_type", weight_type, WEIGHT_TYPES)
    if isinstance(op_types, str) or not op_types:
        raise ConfigError(f"op_types must be a non-empty list of ONNX op types, got {op_types!r}")
    if "Conv" in op_types:
        warnings.warn(
            "quantize_dynamic_onnx: 'Conv' in op_types makes ConvInteger nodes, measured about 4x slower "
            "than float32 at batch 64 on this CPU; prefer quantize_static_onnx for conv branches",
            UserWarning,
            stacklevel=2,
        )
    file_size(fp32_path)
    with _preprocessed(fp32_path, out_path, exclude_nodes, fp32_branches) as (pre, excluded):
        with atomic_path(out_path) as tmp:
            ortq.quantize_dynamic(
                str(pre),
                str(tmp),
                op_types_to_quantize=list(op_types),
                per_channel=per_channel,
                weight_type=getattr(ortq.QuantType, weight_type),
                nodes_to_exclude=excluded,
            )
    settings = {
        "per_channel": per_channel,
        "weight_type": weight_type,
        "op_types": list(op_types),
        "fp32_branches": list(fp32_branches),
    }
    return _finish("dynamic", fp32_path, out_path, settings, excluded)


def _finish(
    mode: str, fp32_path: Path, out_path: Path, settings: dict[str, Any], excluded: list[str]
) -> QuantInfo:
    info = QuantInfo(
        mode=mode,
        fp32_path=str(fp32_path),
        out_path=str(out_path),
        bytes_before=file_size(fp32_path),
        bytes_after=file_size(out_path),
        quantized_ops=count_quantized_ops(out_path),
        settings=settings,
        excluded_nodes=excluded,
    )
    write_sidecar(fp32_path, out_path, info)
    return info
