"""The rows of ``eval/summary.json`` and the terminal table built from them.

One row per model (from its ``eval/<variant>.json``) plus one per ONNX Runtime artifact of the
export stage (from ``export/results.json``). Every key is documented in ``docs/evaluation.md``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

EAGER_RUNTIME = "pytorch-eager"
_LATENCY_MS = re.compile(r"latency_b(\d+)_ms")


def latency_columns(latency: Mapping[str, Any], threads: int | None = None) -> dict[str, Any]:
    """``latency_b<B>_ms`` (median), ``latency_b<B>_p95_ms`` and ``latency_threads`` from a latency dict.

    Args:
        latency: ``{"b1": {"median_ms", "p95_ms"?, "threads"?, ...}, ...}``; entries that are not
            per-batch measurements (e.g. ``"runtime"``) are skipped.
        threads: the thread count to report when no entry states its own.
    """
    cols: dict[str, Any] = {}
    for key, val in latency.items():
        if isinstance(val, Mapping) and "median_ms" in val:
            cols[f"latency_{key}_ms"] = val["median_ms"]
            if val.get("p95_ms") is not None:
                cols[f"latency_{key}_p95_ms"] = val["p95_ms"]
            if threads is None and val.get("threads") is not None:
                threads = int(val["threads"])
    if cols and threads is not None:
        cols["latency_threads"] = threads
    return cols


def _drop_latency(row: dict[str, Any]) -> None:
    """Remove the measured latency columns (the runtime label stays: it describes the model)."""
    for key in [k for k in row if k.startswith("latency_b") or k in ("latency_threads", "latency_source")]:
        del row[key]


def gap_recovered(accuracy: float, scratch: float, teacher: float) -> float | None:
    """Share of the teacher–scratch accuracy gap a student closes: ``(acc - scratch) / (teacher - scratch)``.

    1.0 matches the teacher, 0.0 is no better than the student trained from scratch, negative is
    worse; None when the teacher is not better than the scratch student (no gap to recover).
    """
    gap = teacher - scratch
    return (accuracy - scratch) / gap if gap > 0 else None


def summary_row(
    res: Mapping[str, Any], teacher: Mapping[str, Any] | None, scratch: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The summary row of one model from its ``eval/<variant>.json`` dict (``evaluate_model``)."""
    row: dict[str, Any] = {
        "model": res["name"],
        "modalities": "+".join(res["modalities"]),
        "parameters": res["parameters"],
        "accuracy": res["accuracy"],
        "macro_f1": res["macro_f1"],
    }
    for key, col in (("ece", "ece"), ("bytes_on_disk", "bytes"), ("macs", "macs")):
        if res.get(key) is not None:
            row[col] = res[key]
    if teacher is not None and res["name"] != "teacher":
        row["compression"] = teacher["parameters"] / max(res["parameters"], 1)
        row["teacher_agreement"] = res.get("teacher_agreement")
        if scratch is not None and res["name"].startswith("student-"):
            row["gap_recovered"] = gap_recovered(res["accuracy"], scratch["accuracy"], teacher["accuracy"])
    lat = res.get("latency")
    if lat:
        row.update(latency_columns(lat))
        row.update(latency_runtime=lat.get("runtime", EAGER_RUNTIME), latency_source="in-process")
    return row


def merge_export_results(
    summary: list[dict[str, Any]], run_dir: Path, teacher: Mapping[str, Any] | None,
    teacher_top1: Any = None,
) -> list[dict[str, Any]]:
    """Add the export stage's artifacts (``export/results.json``) to the summary.

    Eager rows take the latency measured in a separate process per runtime when the export stage
    timed them (``latency_source: subprocess``; median, p95 and threads of that measurement);
    every ONNX Runtime artifact gets its own row with its test accuracy through that runtime, its
    size, latency and flags (``not_faster_than`` its parent at the smallest batch size), its
    macro-F1 and ECE through that runtime, its parent's MACs (same graph; int8 does not change the
    count) and, given ``teacher_top1`` (the teacher's ``[N]`` test predictions, dataset order), its
    top-1 agreement with the teacher from the logits the export stage saved.
    """
    path = run_dir / "export" / "results.json"
    if not path.exists():
        return summary
    res = json.loads(path.read_text())
    arts: dict[str, Any] = res.get("artifacts", {})
    settings = res.get("latency_settings", {})
    threads = settings.get("threads")
    slower: dict[str, list[str]] = {}
    smallest = min(settings.get("batch_sizes", [1]))
    for f in res.get("flags", []):
        if f["not_faster"] and f["batch_size"] == smallest:
            slower.setdefault(f["name"], []).append(f["parent"])
    by_name = {r["model"]: r for r in summary}
    ship = (res.get("ship") or {}).get("name")
    for r in summary:
        r["runtime"] = "torch"
        lat = arts.get(r["model"], {}).get("latency")
        if lat:
            _drop_latency(r)
            r.update(latency_columns(lat, threads), latency_source="subprocess")
            r["latency_runtime"] = EAGER_RUNTIME
    written = path.stat().st_mtime
    for name, a in arts.items():
        if a["runtime"] == "torch" or name in by_name:
            continue
        weights = run_dir / "students" / str(a.get("student")) / "model.safetensors"
        if weights.exists() and weights.stat().st_mtime > written:
            log.warning("summary: %s left out: students/%s changed after export/results.json was "
                        "written; rerun the export stage (mmdistill export) to measure it again",
                        name, a.get("student"))
            continue
        src = by_name.get(f"student-{a.get('student')}", {})
        row: dict[str, Any] = {
            "model": name, "modalities": src.get("modalities"), "parameters": src.get("parameters"),
            "accuracy": a.get("accuracy"), "runtime": a["runtime"], "bytes": a.get("bytes"),
        }
        if teacher is not None and src.get("parameters"):
            row["compression"] = teacher["parameters"] / max(src["parameters"], 1)
        quality = a.get("quality") or {}
        row.update({k: quality[k] for k in ("macro_f1", "ece") if k in quality})
        if src.get("macs") is not None:
            row["macs"] = src["macs"]
        agreement = _agreement(run_dir / "export" / str(quality.get("test_logits")), teacher_top1)
        if quality.get("test_logits") and agreement is not None:
            row["teacher_agreement"] = agreement
        if a.get("latency"):
            row.update(latency_columns(a["latency"], threads), latency_source="subprocess")
        summary.append(row)
    for r in summary:
        if r["model"] in slower:
            r["not_faster_than"] = slower[r["model"]]
        if r["model"] == ship:
            r["ship"] = True
    return summary


def _agreement(logits_path: Path, teacher_top1: Any) -> float | None:
    """Top-1 agreement of saved ``[N, K]`` logits with the teacher's ``[N]`` predictions (None if n/a)."""
    if teacher_top1 is None or not logits_path.is_file():
        return None
    logits = np.load(logits_path, allow_pickle=False)
    ref = np.asarray(teacher_top1.cpu() if hasattr(teacher_top1, "cpu") else teacher_top1)
    if logits.ndim != 2 or logits.shape[0] != ref.shape[0]:
        log.warning("summary: %s has %s rows, the teacher's test predictions %d: agreement left out; "
                    "rerun the export stage (mmdistill export)", logits_path, logits.shape[:1], ref.shape[0])
        return None
    return float((logits.argmax(1) == ref).mean())


def _note(row: Mapping[str, Any]) -> str | None:
    notes = []
    if row.get("ship"):
        notes.append("ship")
    if row.get("not_faster_than"):
        notes.append("NOT FASTER than " + ", ".join(row["not_faster_than"]))
    return "; ".join(notes) or None


def format_summary(summary: list[dict[str, Any]]) -> str:
    """The summary as a plain-text table (also used for the terminal).

    Latency columns: the median per batch size, and the p95 of the smallest batch size only (the
    tail a single-request service sees), to keep the table narrow. Columns no row has are left out.
    """
    cols = [
        ("model", "model", "{}"),
        ("runtime", "runtime", "{}"),
        ("modalities", "modalities", "{}"),
        ("parameters", "params", "{:,}"),
        ("compression", "x smaller", "{:.1f}"),
        ("accuracy", "test acc", "{:.4f}"),
        ("macro_f1", "macro-F1", "{:.4f}"),
        ("teacher_agreement", "agree", "{:.3f}"),
        ("gap_recovered", "gap rec.", "{:.2f}"),
    ]
    sizes = sorted({int(m.group(1)) for r in summary for k in r if (m := _LATENCY_MS.fullmatch(k))})
    for b in sizes:
        cols.append((f"latency_b{b}_ms", f"b{b} ms", "{:.2f}"))
        if b == sizes[0]:
            cols.append((f"latency_b{b}_p95_ms", f"b{b} p95", "{:.2f}"))
    cols.append(("flag", "note", "{}"))
    summary = [r | {"flag": _note(r)} for r in summary]
    cols = [c for c in cols if any(r.get(c[0]) is not None for r in summary)]
    cells = [[c[1] for c in cols]]
    for r in summary:
        cells.append([c[2].format(r[c[0]]) if r.get(c[0]) is not None else "-" for c in cols])
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


__all__ = ["format_summary", "gap_recovered", "latency_columns", "merge_export_results", "summary_row"]
