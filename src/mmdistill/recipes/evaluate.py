"""Evaluation stage: test-set quality and CPU efficiency of every model in a run directory.

Writes ``eval/<variant>.json`` per model and ``eval/summary.json``; the pipeline prints the
summary table. Variants are discovered from the run directory alone (``teacher/``,
``baselines/<modality>/``, ``students/<variant>/``), so this stage can run by itself.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from mmdistill.config.schema import Config
from mmdistill.data.collate import collate
from mmdistill.data.loaders import make_loader
from mmdistill.evaluation.efficiency import bytes_on_disk, count_parameters, model_latency
from mmdistill.evaluation.metrics import classification_report
from mmdistill.evaluation.robustness import drop_one_losses, subset_accuracy
from mmdistill.models.multimodal import MultimodalModel
from mmdistill.recipes.data import DataBundle
from mmdistill.recipes.train import load_trained
from mmdistill.training.loop import predict

log = logging.getLogger(__name__)

EVAL_DIR = "eval"


def discover_models(run_dir: Path) -> dict[str, Path]:
    """Variant name → checkpoint directory, for every saved model of the run, in report order."""
    found: dict[str, Path] = {}
    if (run_dir / "teacher" / "model.json").exists():
        found["teacher"] = run_dir / "teacher"
    for group, prefix in (("baselines", "baseline-"), ("students", "student-")):
        base = run_dir / group
        if base.is_dir():
            for d in sorted(p for p in base.iterdir() if (p / "model.json").exists()):
                found[prefix + d.name] = d
    return found


def example_batch_fn(data: DataBundle, split: str = "test"):
    """``batch_size -> batch`` of the first rows of ``split`` (cycled): the inputs latency is timed on."""
    samples = list(data.splits[split].samples)

    def make(batch_size: int) -> dict[str, Any]:
        rows = [samples[i % len(samples)] for i in range(batch_size)]
        return collate(rows)

    return make


def evaluate_model(
    model: MultimodalModel,
    directory: Path,
    data: DataBundle,
    cfg: Config,
    *,
    name: str,
    split: str = "test",
    reference_preds: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Quality and efficiency of one model on ``split``.

    Returns a JSON-serializable dict: accuracy, macro-F1, confusion matrix, per-task metrics,
    parameters, bytes on disk, latency (when ``cfg.eval.latency``) and, when ``reference_preds``
    (the teacher's test predictions) is given, top-1 agreement with it. Models with several
    modalities also get ``modality_subsets`` (accuracy for every non-empty subset of their
    modalities) and ``drop_one_loss`` (points lost when each single modality is removed).
    """
    loader = make_loader(data.splits[split], cfg.data.eval_batch_size, shuffle=False, seed=cfg.seed)
    batches = list(loader)  # collated once, reused by the modality-subset passes below
    preds = predict(model, batches, device="cpu")
    report = classification_report(preds, data.num_classes, class_names=data.classes)
    out: dict[str, Any] = {
        "name": name,
        "split": split,
        "modalities": list(model.modalities),
        "parameters": count_parameters(model),
        "bytes_on_disk": bytes_on_disk(directory / "model.safetensors"),
        **report,
    }
    from mmdistill.evaluation.flops import count_macs

    # MACs of one typical test row (LSTM/GRU counted analytically; torch's counter reports them as 0).
    macs = count_macs(model, example_batch_fn(data, split)(1))
    out["macs"] = int(macs.total)
    out["macs_by_branch"] = dict(macs.by_branch)
    top1 = preds.logits.argmax(-1)
    if len(model.modalities) > 1:
        # Missing-modality robustness: accuracy on every non-empty subset of the model's modalities.
        subsets = subset_accuracy(model, batches, list(model.modalities), full_accuracy=report["accuracy"])
        out["modality_subsets"] = subsets
        out["drop_one_loss"] = drop_one_losses(subsets, list(model.modalities))
    if reference_preds is not None:
        out["teacher_agreement"] = float((top1 == reference_preds).float().mean())
    if cfg.eval.latency:
        out["latency"] = model_latency(
            model,
            example_batch_fn(data, split),
            batch_sizes=tuple(cfg.eval.latency_batch_sizes),
            threads=cfg.eval.latency_threads,
            warmup=cfg.eval.latency_warmup,
            repeats=cfg.eval.latency_repeats,
        )
        out["latency"]["runtime"] = "pytorch-eager"
    out["_top1"] = top1
    return out


def evaluate_run(run_dir: Path, data: DataBundle, cfg: Config) -> list[dict[str, Any]]:
    """Evaluate every model found in ``run_dir``; write per-variant JSON and ``eval/summary.json``."""
    models = discover_models(run_dir)
    if not models:
        log.warning("no trained model found in %s: nothing to evaluate", run_dir)
        return []
    out_dir = run_dir / EVAL_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    teacher_top1: torch.Tensor | None = None
    for name, directory in models.items():
        log.info("evaluating %s", name)
        trained = load_trained(directory)
        res = evaluate_model(trained.model, directory, data, cfg, name=name, reference_preds=teacher_top1)
        top1 = res.pop("_top1")
        if name == "teacher":
            teacher_top1 = top1
        (out_dir / f"{name}.json").write_text(json.dumps(res, indent=2))
        results.append(res)
    teacher = next((r for r in results if r["name"] == "teacher"), None)
    scratch = next((r for r in results if r["name"] == "student-scratch"), None)
    summary = [_summary_row(r, teacher, scratch) for r in results]
    summary = merge_export_results(summary, run_dir, teacher)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def merge_export_results(
    summary: list[dict[str, Any]], run_dir: Path, teacher: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Add the export stage's artifacts (``export/results.json``) to the summary.

    Eager rows take the latency measured in a separate process per runtime when the export stage
    timed them (``latency_source: subprocess``); every ONNX Runtime artifact gets its own row with
    its test accuracy through that runtime, its size and flags (``not_faster`` vs its parent).
    """
    path = run_dir / "export" / "results.json"
    if not path.exists():
        return summary
    res = json.loads(path.read_text())
    arts: dict[str, Any] = res.get("artifacts", {})
    slower: dict[str, list[str]] = {}
    smallest = min(res.get("latency_settings", {}).get("batch_sizes", [1]))
    for f in res.get("flags", []):
        if f["not_faster"] and f["batch_size"] == smallest:
            slower.setdefault(f["name"], []).append(f["parent"])
    by_name = {r["model"]: r for r in summary}
    ship = (res.get("ship") or {}).get("name")
    for r in summary:
        r["runtime"] = "torch"
        lat = arts.get(r["model"], {}).get("latency")
        if lat:
            for key in [k for k in r if k.startswith("latency_")]:
                del r[key]
            r.update({f"latency_{b}_ms": v["median_ms"] for b, v in lat.items()}, latency_source="subprocess")
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
        row.update({f"latency_{b}_ms": v["median_ms"] for b, v in a.get("latency", {}).items()})
        if a.get("latency"):
            row["latency_source"] = "subprocess"
        summary.append(row)
    for r in summary:
        if r["model"] in slower:
            r["not_faster_than"] = slower[r["model"]]
        if r["model"] == ship:
            r["ship"] = True
    return summary


def gap_recovered(accuracy: float, scratch: float, teacher: float) -> float | None:
    """Share of the teacher–scratch accuracy gap a student closes: ``(acc - scratch) / (teacher - scratch)``.

    1.0 matches the teacher, 0.0 is no better than the student trained from scratch, negative is
    worse; None when the teacher is not better than the scratch student (no gap to recover).
    """
    gap = teacher - scratch
    return (accuracy - scratch) / gap if gap > 0 else None


def _summary_row(
    res: dict[str, Any], teacher: dict[str, Any] | None, scratch: dict[str, Any] | None = None
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "model": res["name"],
        "modalities": "+".join(res["modalities"]),
        "parameters": res["parameters"],
        "accuracy": res["accuracy"],
        "macro_f1": res["macro_f1"],
    }
    if teacher is not None and res["name"] != "teacher":
        row["compression"] = teacher["parameters"] / max(res["parameters"], 1)
        row["teacher_agreement"] = res.get("teacher_agreement")
        if scratch is not None and res["name"].startswith("student-"):
            row["gap_recovered"] = gap_recovered(res["accuracy"], scratch["accuracy"], teacher["accuracy"])
    lat = res.get("latency")
    if lat:
        for key, val in lat.items():
            if isinstance(val, dict) and "median_ms" in val:
                row[f"latency_{key}_ms"] = val["median_ms"]
    return row


def _note(row: dict[str, Any]) -> str | None:
    notes = []
    if row.get("ship"):
        notes.append("ship")
    if row.get("not_faster_than"):
        notes.append("NOT FASTER than " + ", ".join(row["not_faster_than"]))
    return "; ".join(notes) or None


def format_summary(summary: list[dict[str, Any]]) -> str:
    """The summary as a plain-text table (also used for the terminal)."""
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
    sizes = sorted({int(k[len("latency_b"):-3]) for r in summary for k in r
                    if k.startswith("latency_b") and k.endswith("_ms")})
    cols += [(f"latency_b{b}_ms", f"b{b} ms", "{:.2f}") for b in sizes]
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
