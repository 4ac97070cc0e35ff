"""One entry per model of a run: ``eval/<variant>.json`` merged with the summary and export rows.

Every key of the inputs is optional: a model gets the keys its files hold, nothing is invented.
Kinds: ``teacher``, ``baseline`` (unimodal), ``student`` (scratch or distilled), ``compressed``
(pruned, sparse or QAT variant of a student) and ``exported`` (ONNX Runtime and other non-eager
artifacts of the export stage). ``parent`` names the model a compressed or exported one came from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Summary row keys copied into a model entry when its eval file does not already hold them.
_FROM_SUMMARY = ("parameters", "accuracy", "macro_f1", "ece", "teacher_agreement", "compression",
                 "gap_recovered", "not_faster_than", "latency_source", "macs")
_ARTIFACT_KEYS = ("verify", "quantization", "note", "student")
# Quality of an exported artifact through its runtime (``export/results.json`` ``quality``).
_QUALITY_KEYS = ("confusion_matrix", "class_names", "modality_subsets", "drop_one_loss")


def _student_meta(run: Path, name: str) -> dict[str, Any]:
    """``extra`` of ``students/<v>/model.json`` (strategy, teachers, compressed_from), if readable."""
    if not name.startswith("student-"):
        return {}
    path = run / "students" / name.removeprefix("student-") / "model.json"
    try:
        extra = json.loads(path.read_text(encoding="utf-8")).get("extra") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    return extra if isinstance(extra, dict) else {}


def _checkpoint_path(name: str) -> str | None:
    if name == "teacher":
        return "teacher"
    if name.startswith("baseline-"):
        return f"baselines/{name.removeprefix('baseline-')}"
    if name.startswith("student-"):
        return f"students/{name.removeprefix('student-')}"
    return None


def _lineage(
    name: str, artifact: dict[str, Any], meta: dict[str, Any], compressed: dict[str, str], names: set[str]
) -> tuple[str, str | None]:
    """``(kind, parent)`` of one model."""
    if name == "teacher":
        return "teacher", None
    if name.startswith("baseline-"):
        return "baseline", None
    if artifact and artifact.get("runtime") != "torch":
        base = f"student-{artifact.get('student')}"
        suffix = name[len(base) + 1:] if name.startswith(base + ".") else ""
        if suffix in ("", "onnx", "torch-dyn8") or f"{base}.onnx" not in names:
            return "exported", base
        return "exported", f"{base}.onnx"  # int8 files are quantized from the fp32 ONNX file
    variant = name.removeprefix("student-")
    source = meta.get("compressed_from") or compressed.get(variant)
    if source:
        return "compressed", f"student-{source}"
    return "student", None


def _latency_table(lat: dict[str, Any], runtime: str, source: str) -> dict[str, Any]:
    out = {k: v for k, v in lat.items() if isinstance(v, dict)}
    out["runtime"] = lat.get("runtime", runtime)
    out["source"] = source
    return out


def _summary_latency(row: dict[str, Any]) -> dict[str, Any] | None:
    """Latency rebuilt from the summary's flat ``latency_b{N}_ms`` keys (rows without a detailed record)."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key.startswith("latency_b") and key.endswith("_ms") and not key.endswith("_p95_ms"):
            b = key[len("latency_"):-len("_ms")]
            out[b] = {"median_ms": value, "p95_ms": row.get(f"latency_{b}_p95_ms"),
                      "threads": row.get("latency_threads")}
    if not out:
        return None
    out["runtime"] = "onnxruntime" if row.get("runtime") == "onnxruntime" else "pytorch-eager"
    out["source"] = row.get("latency_source", "summary")
    return out


def _not_faster(flags: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    keep = ("parent", "batch_size", "median_ms", "parent_median_ms", "latency_ratio")
    return [{k: f.get(k) for k in keep} for f in flags if f.get("name") == name and f.get("not_faster")]


def collect_models(
    run: Path,
    evals: dict[str, dict[str, Any]],
    summary: list[dict[str, Any]] | None,
    export: dict[str, Any] | None,
    compress: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """The ``models`` list of ``results.json``, in the summary's order (teacher first, exports last).

    Args:
        run: the run folder (read for ``students/<v>/model.json`` metadata only).
        evals: ``eval/<variant>.json`` contents by variant name.
        summary: ``eval/summary.json`` rows, if written.
        export: ``export/results.json``, if written.
        compress: ``{"summary": compress/summary.json, ...}``, if the compress stage ran.
    """
    arts: dict[str, Any] = (export or {}).get("artifacts") or {}
    flags: list[dict[str, Any]] = (export or {}).get("flags") or []
    ship = ((export or {}).get("ship") or {}).get("name")
    sizes = ((export or {}).get("latency_settings") or {}).get("batch_sizes") or [f.get("batch_size") or 0
                                                                                  for f in flags] or [1]
    smallest = min(sizes)
    rows = {r.get("model"): r for r in summary or [] if isinstance(r, dict)}
    variants = ((compress or {}).get("summary") or {}).get("variants") or {}
    source = ((compress or {}).get("summary") or {}).get("source")
    compressed = {v: source for v in variants if source}
    order = [n for n in rows if n is not None]
    order += [n for n in evals if n not in order]
    if summary is None:  # the evaluate stage decides which exports are current; without it, list them all
        order += [n for n, a in arts.items() if a.get("runtime") != "torch" and n not in order]
    names = set(order)
    models = []
    for name in order:
        ev, row, art = evals.get(name, {}), rows.get(name, {}), arts.get(name, {})
        meta = _student_meta(run, name)
        kind, parent = _lineage(name, art, meta, compressed, names)
        entry: dict[str, Any] = {"name": name, "kind": kind, "runtime": row.get("runtime")
                                 or ("torch" if not art or art.get("runtime") == "torch" else art["runtime"]),
                                 "parent": parent}
        entry.update({k: v for k, v in ev.items() if k not in ("name", "latency")})
        for key in _FROM_SUMMARY:
            if key not in entry and row.get(key) is not None:
                entry[key] = row[key]
        if "modalities" not in entry and row.get("modalities"):
            mods = row["modalities"]
            entry["modalities"] = mods.split("+") if isinstance(mods, str) else list(mods)
        if "bytes_on_disk" not in entry and (row.get("bytes") or art.get("bytes")) is not None:
            entry["bytes_on_disk"] = row.get("bytes") or art.get("bytes")
        if "accuracy" not in entry and art.get("accuracy") is not None:
            entry["accuracy"] = art["accuracy"]
        if kind == "exported":
            entry["path"] = f"export/{Path(art['path']).name}" if art.get("path") else None
            entry.update({k: art[k] for k in _ARTIFACT_KEYS if k in art})
            quality = art.get("quality") or {}  # through the runtime (export stage)
            entry.update({k: quality[k] for k in _QUALITY_KEYS if k in quality and k not in entry})
        else:
            entry["path"] = _checkpoint_path(name)
        for key in ("strategy", "teachers"):
            if key in meta:
                entry[key] = meta[key]
        lat_runtime = "onnxruntime" if entry["runtime"] == "onnxruntime" else "pytorch-eager"
        if art.get("latency"):
            entry["latency"] = _latency_table(art["latency"], lat_runtime, "subprocess")
            if ev.get("latency"):
                entry["latency_in_process"] = _latency_table(ev["latency"], "pytorch-eager", "in-process")
        elif ev.get("latency"):
            entry["latency"] = _latency_table(ev["latency"], "pytorch-eager", "in-process")
        elif summary_latency := _summary_latency(row):
            entry["latency"] = summary_latency
        slow = _not_faster(flags, name)
        if slow:
            entry["not_faster"] = slow
            at_smallest = sorted({str(f["parent"]) for f in slow if f["batch_size"] == smallest})
            if "not_faster_than" not in entry and at_smallest:
                entry["not_faster_than"] = at_smallest  # as in eval/summary.json: the smallest batch
        entry["ship"] = name == ship or bool(row.get("ship"))
        models.append(entry)
    return models
