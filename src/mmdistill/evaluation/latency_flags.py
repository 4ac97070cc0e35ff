"""Compare compressed variants with their parents on the same runtime: the not-faster flags.

Works on the rows of :func:`mmdistill.evaluation.latency.measure_runtimes` (plain dicts), so it
needs neither torch nor onnxruntime. Re-exported by :mod:`mmdistill.evaluation.latency`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _index(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, int], Mapping[str, Any]]:
    return {(str(r["name"]), str(r["runtime"]), int(r["batch_size"])): r for r in rows}


def flag_not_faster(
    rows: Sequence[Mapping[str, Any]],
    parents: Mapping[str, str],
    *,
    batch_size: int = 1,
    min_speedup: float = 1.0,
) -> list[dict[str, Any]]:
    """Compare each compressed variant with its parent on the same runtime and batch size.

    Args:
        rows: :func:`measure_runtimes` rows (``name``, ``runtime``, ``batch_size``, ``median_ms``).
        parents: variant name → the name it was made from (e.g. ``{"int8": "fp32"}``).
        batch_size: the batch size compared.
        min_speedup: the variant counts as faster only when ``parent / variant`` median latency is
            at least this (1.0: any gain; 1.1: at least 10% faster).

    Returns:
        Per variant row of that batch size: ``name``, ``parent``, ``runtime``, ``batch_size``,
        ``median_ms``, ``parent_median_ms``, ``speedup`` (parent / variant), ``latency_ratio``
        (variant / parent) and ``not_faster`` (``speedup < min_speedup``).

    Raises:
        ValueError: a variant of ``parents`` was not measured at ``batch_size``, or its parent was
            not measured on the same runtime at that batch size.
    """
    index = _index(rows)
    out = []
    for name, parent in parents.items():
        mine = [k for k in index if k[0] == name and k[2] == batch_size]
        if not mine:
            raise ValueError(f"variant {name!r} has no row at batch size {batch_size}; measured: "
                             f"{sorted({(k[0], k[2]) for k in index})}")
        for _, runtime, _ in mine:
            ref = index.get((parent, runtime, batch_size))
            if ref is None:
                raise ValueError(f"parent {parent!r} of {name!r} was not measured on runtime {runtime} at "
                                 f"batch size {batch_size}; measure both on the same runtime to compare them")
            row = index[(name, runtime, batch_size)]
            speedup = float(ref["median_ms"]) / float(row["median_ms"])
            out.append({
                "name": name, "parent": parent, "runtime": runtime, "batch_size": batch_size,
                "median_ms": float(row["median_ms"]), "parent_median_ms": float(ref["median_ms"]),
                "speedup": speedup, "latency_ratio": 1.0 / speedup, "not_faster": speedup < min_speedup,
            })
    return out


def pick_faster(
    rows: Sequence[Mapping[str, Any]],
    variant: str,
    parent: str,
    *,
    batch_size: int = 1,
    min_speedup: float = 1.0,
) -> str:
    """The name to keep: ``variant`` if it is at least ``min_speedup`` times faster than ``parent``
    on every runtime both were measured on (at ``batch_size``), else ``parent``."""
    flags = flag_not_faster(rows, {variant: parent}, batch_size=batch_size, min_speedup=min_speedup)
    return parent if any(f["not_faster"] for f in flags) else variant


__all__ = ["flag_not_faster", "pick_faster"]
