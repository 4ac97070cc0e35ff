"""ONNX-graph helpers for quantized exports: what a file holds, which nodes are int8, per-branch nodes.

Read-only views of an ``.onnx`` file (``onnx`` is imported lazily, raising
:class:`~mmdistill.errors.MissingDependencyError` naming the ``onnx`` extra), plus the
:class:`QuantInfo` record and its JSON sidecar. :mod:`mmdistill.compression.ort_quant` re-exports
the public names.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmdistill.errors import DataError, MissingDependencyError
from mmdistill.io_atomic import atomic_write_json

__all__ = [
    "QuantInfo",
    "count_quantized_ops",
    "file_size",
    "float_compute_nodes",
    "load_onnx",
    "nodes_of_branch",
    "write_sidecar",
]

COMPUTE_OPS: tuple[str, ...] = ("Conv", "Gemm", "MatMul", "LSTM", "GRU", "Gather", "ConvTranspose")
"""Op types :func:`float_compute_nodes` looks at by default (the ones that carry weights)."""
_WEIGHT_INPUT = {"Gather": 0}  # index of the weight input where it is not 1


@dataclass
class QuantInfo:
    """What a quantization run did (JSON-ready via :meth:`to_dict`).

    Attributes:
        mode: ``"static"`` or ``"dynamic"``.
        fp32_path, out_path: input and output files.
        bytes_before, bytes_after: file sizes in bytes.
        quantized_ops: op type → count of quantization nodes in the output graph
            (``QuantizeLinear``, ``DequantizeLinear``, ``QLinear*``, ``*Integer``, ``DynamicQuantize*``).
        settings: the settings used (types, method, calibration rows, op types, fp32 branches).
        excluded_nodes: node names kept in float32 on request.
    """

    mode: str
    fp32_path: str
    out_path: str
    bytes_before: int
    bytes_after: int
    quantized_ops: dict[str, int]
    settings: dict[str, Any] = field(default_factory=dict)
    excluded_nodes: list[str] = field(default_factory=list)

    @property
    def size_ratio(self) -> float:
        """``bytes_before / bytes_after`` (how many times smaller the int8 file is)."""
        return self.bytes_before / max(self.bytes_after, 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON, with ``size_ratio`` added."""
        return {**asdict(self), "size_ratio": round(self.size_ratio, 4)}


def file_size(path: str | Path) -> int:
    """Size of ``path`` in bytes; FileNotFoundError naming the file and how to make it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"ONNX model {path} does not exist; export it first (mmdistill.export.onnx.export_onnx or "
            "`mmdistill export`)"
        )
    return path.stat().st_size


def load_onnx(path: str | Path) -> Any:
    """``onnx.ModelProto`` of ``path`` (FileNotFoundError / MissingDependencyError otherwise)."""
    file_size(path)
    try:
        import onnx
    except ImportError as exc:
        raise MissingDependencyError("onnx", "onnx", "reading ONNX graphs") from exc
    return onnx.load(str(path))


def _is_quant_op(op_type: str) -> bool:
    return (
        op_type in ("QuantizeLinear", "DequantizeLinear")
        or op_type.startswith(("QLinear", "DynamicQuantize"))
        or op_type.endswith("Integer")
    )


def count_quantized_ops(path: str | Path) -> dict[str, int]:
    """Op type → number of quantization nodes (Q/DQ, QLinear*, *Integer, DynamicQuantize*) in a graph."""
    counts = Counter(n.op_type for n in load_onnx(path).graph.node if _is_quant_op(n.op_type))
    return dict(sorted(counts.items()))


def float_compute_nodes(path: str | Path, op_types: Sequence[str] = COMPUTE_OPS) -> list[str]:
    """Names of ``op_types`` nodes that still compute in float32.

    A node counts as int8 when its weight input (input 1; input 0, the table, for ``Gather``) comes
    from a ``DequantizeLinear``: in QDQ format ORT fuses DQ → op → Q into an int8 kernel. A quantized
    activation alone is not enough (an ``LSTM`` behind a Q/DQ pair still runs in float32 with float
    weights). ``*Integer``/``QLinear*`` nodes are int8 by type and never listed here.
    """
    graph = load_onnx(path).graph
    dq_outputs = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}

    def weight(n: Any) -> str:
        index = _WEIGHT_INPUT.get(n.op_type, 1)
        return n.input[index] if len(n.input) > index else ""

    return [n.name for n in graph.node if n.op_type in op_types and weight(n) not in dq_outputs]


def _branch_depth(names: Sequence[list[str]]) -> int | None:
    """Path depth at which the model's children (``fusion``, ``head``, modalities) appear.

    torch's exporter names nodes by module scope: ``/fusion/proj/Gemm`` for the model itself, or
    ``/m/fusion/proj/Gemm`` when a wrapper holds the model as ``self.m``. The ``encoders``
    ModuleDict is never called, so an encoder's nodes sit directly under its modality
    (``/m/image/stages/.../Conv``). The shallowest depth holding ``fusion`` or ``head`` wins.
    """
    for depth in range(1, 4):
        if any(len(p) > depth + 1 and p[depth] in ("fusion", "head") for p in names):
            return depth
    return None


def nodes_of_branch(onnx_path: str | Path, branch: str) -> list[str]:
    """Names of the nodes torch's exporter placed under one branch of the model.

    Args:
        onnx_path: an ONNX file exported from a :class:`~mmdistill.models.multimodal.MultimodalModel`
            (directly or wrapped), before or after ``quant_pre_process`` (it keeps node names).
        branch: ``"image"``, ``"text"``, ``"audio"`` (or ``"encoders.<m>"``), ``"fusion"`` or ``"head"``.

    Returns:
        Node names in graph order; empty when the branch has no node (e.g. a modality the model lacks).
    """
    branch = branch.removeprefix("encoders.")
    graph = load_onnx(onnx_path).graph
    parts = [n.name.split("/") for n in graph.node]
    depth = _branch_depth(parts)
    if depth is None:
        return []
    nodes = zip(graph.node, parts, strict=True)
    return [n.name for n, p in nodes if len(p) > depth + 1 and p[depth] == branch]


def write_sidecar(fp32_path: Path, out_path: Path, info: QuantInfo) -> Path:
    """Write ``<out_path>.json``: the fp32 export sidecar's entries (if any) plus ``"quantization"``."""
    src = Path(f"{fp32_path}.json")
    meta: dict[str, Any] = {}
    if src.is_file():
        try:
            meta = json.loads(src.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            msg = f"export sidecar is not valid JSON ({exc}); re-export the model"
            raise DataError(msg, path=str(src)) from exc
    meta["quantization"] = info.to_dict()
    dst = Path(f"{out_path}.json")
    return atomic_write_json(dst, meta)
