"""Run folders for the report tests: one real smoke run (once per session) and hand-built ones.

``smoke_run`` runs the real CLI (``mmdistill run smoke`` on 128 rows, every stage including compress
and export, eager latency on) once per test session, ~20 s on the shared 2-core VM. ``make_run`` writes a
small run folder by hand, with exactly the files and keys a test wants.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

CLASSES = ["zero", "one", "two"]


def _eval(name: str, mods: list[str], acc: float, params: int, **extra: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "name": name, "split": "test", "modalities": mods, "parameters": params, "bytes_on_disk": params * 4,
        "n": 30, "accuracy": acc, "macro_f1": acc - 0.05, "ece": 0.1,
        "confusion_matrix": [[8, 1, 1], [2, 7, 1], [0, 3, 7]], "class_names": CLASSES,
        "per_class": {}, "tasks": {}, "macs": params * 10, "macs_by_branch": {},
    }
    if len(mods) > 1:
        res["modality_subsets"] = {"image+text": acc, "image": acc - 0.2, "text": acc - 0.1}
        res["drop_one_loss"] = {"image": 0.1, "text": 0.2}
    return res | extra


def write_run(root: Path, *, name: str = "tiny", student: str = "student-kd", export: bool = True,
              config_extra: dict[str, Any] | None = None) -> Path:
    """A hand-built run folder: teacher, an image baseline, scratch and ``student`` students.

    With ``export``: ``<student>.onnx`` (shipped) and ``<student>.int8`` (NOT FASTER than the .onnx).
    """
    run = root / name
    (run / "eval").mkdir(parents=True)
    cfg = {"name": name, "seed": 3, "stages": ["teacher", "evaluate"], "export": {"keep_faster": True,
                                                                                  "max_accuracy_drop": 0.5}}
    (run / "config.resolved.yaml").write_text(json.dumps(cfg | (config_extra or {})))  # JSON is YAML
    versions = {"packages": {"torch": "2.13.0"}, "machine": {"cpu_count": 2}, "seed": 3, "world_size": 1}
    (run / "versions.json").write_text(json.dumps(versions))
    v = student.removeprefix("student-")
    evals = [
        _eval("teacher", ["image", "text"], 0.9, 1000),
        _eval("baseline-image", ["image"], 0.6, 100, teacher_agreement=0.6),
        _eval("student-scratch", ["image", "text"], 0.7, 200, teacher_agreement=0.7),
        _eval(student, ["image", "text"], 0.8, 200, teacher_agreement=0.85,
              alignment={"image": {"linear_cka": 0.9, "cosine": 0.8},
                         "text": {"linear_cka": 0.5, "cosine": None}},
              latency={"b1": {"median_ms": 2.0, "p95_ms": 2.5, "threads": 1}, "runtime": "pytorch-eager"}),
    ]
    for res in evals:
        (run / "eval" / f"{res['name'].replace('/', '_')}.json").write_text(json.dumps(res))
    summary = [{"model": r["name"], "modalities": "+".join(r["modalities"]), "parameters": r["parameters"],
                "accuracy": r["accuracy"], "runtime": "torch"} for r in evals]
    summary[3]["gap_recovered"] = 0.5
    if export:
        (run / "export").mkdir()
        lat = {"b1": {"median_ms": 1.0, "p95_ms": 1.2, "threads": 1}}
        slow = {"b1": {"median_ms": 1.5, "p95_ms": 1.9, "threads": 1}}
        arts = {
            student: {"runtime": "torch", "path": f"/x/students/{v}", "bytes": 800, "accuracy": 0.8,
                      "student": v, "latency": {"b1": {"median_ms": 2.1, "p95_ms": 2.4, "threads": 1}}},
            f"{student}.onnx": {"runtime": "onnxruntime", "path": f"/x/export/{v}.onnx", "bytes": 900,
                                "accuracy": 0.8, "student": v, "latency": lat,
                                "verify": {"max_abs_error": 1e-7, "agreement": 1.0}},
            f"{student}.int8": {"runtime": "onnxruntime", "path": f"/x/export/{v}.int8.onnx", "bytes": 400,
                                "accuracy": 0.79, "student": v, "latency": slow,
                                "quantization": {"size_ratio": 2.25}},
        }
        flags = [{"name": f"{student}.int8", "parent": f"{student}.onnx", "runtime": "onnxruntime",
                  "batch_size": 1, "median_ms": 1.5, "parent_median_ms": 1.0, "latency_ratio": 1.5,
                  "not_faster": True}]
        ship = {"name": f"{student}.onnx", "reason": "fastest at batch 1", "accuracy": 0.8, "path": "/x"}
        (run / "export" / "results.json").write_text(json.dumps(
            {"format": "mmdistill.export/1", "source": v, "artifacts": arts, "flags": flags, "ship": ship,
             "latency_settings": {"threads": 1, "batch_sizes": [1]}}))
        summary += [{"model": f"{student}.onnx", "modalities": "image+text", "parameters": 200,
                     "accuracy": 0.8, "runtime": "onnxruntime", "bytes": 900, "latency_b1_ms": 1.0,
                     "ship": True},
                    {"model": f"{student}.int8", "modalities": "image+text", "parameters": 200,
                     "accuracy": 0.79, "runtime": "onnxruntime", "bytes": 400, "latency_b1_ms": 1.5,
                     "not_faster_than": [f"{student}.onnx"]}]
    (run / "eval" / "summary.json").write_text(json.dumps(summary))
    lines = [{"stage": "teacher", "epoch": e, "step": e * 4, "time": 0.0, "train/loss": 2.0 / e,
              "val/loss": 2.1 / e, "val/accuracy": 0.3 * e, "seconds": 0.5} for e in (1, 2, 3)]
    lines += [{"stage": student, "epoch": 1, "step": 4, "time": 0.0, "train/loss": 1.5, "train/loss/kd": 1.0,
               "train/loss/ce": 0.5, "val/accuracy": 0.7, "seconds": 0.4}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return run


@pytest.fixture
def make_run(tmp_path: Path) -> Callable[..., Path]:
    """``make_run(**kwargs)`` → a hand-built run folder under ``tmp_path`` (see :func:`write_run`)."""
    return lambda **kwargs: write_run(tmp_path, **kwargs)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run folder: `mmdistill run smoke` on 128 rows with every stage, eager latency on."""
    out = tmp_path_factory.mktemp("report-smoke")
    args = ["run", "smoke", "data.limit=128", "eval.latency=true", "eval.latency_batch_sizes=[1,8]",
            "eval.latency_repeats=3", "eval.latency_warmup=1", "--output-dir", str(out), "--name", "smoke",
            "-q"]
    proc = subprocess.run([sys.executable, "-m", "mmdistill.cli.main", *args], cwd=out, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "smoke"


@pytest.fixture(scope="session")
def smoke_report(smoke_run: Path) -> dict[str, Path]:
    """``write_report`` of the smoke run: ``{"results", "markdown", "html"}`` paths."""
    from mmdistill.report import write_report

    return write_report(smoke_run)
