"""End-to-end runs of `mmdistill export` (and the errors of `mmdistill compress`) against a run folder.

`mmdistill compress` alone is covered in process: tests/cli/test_main.py (wiring, errors) and
tests/recipes/test_compress_recipe.py (the stage); a third CLI run here would double this file's time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "mmdistill.cli.main"]
pytestmark = pytest.mark.slow
# The same data settings for every command; one epoch each and batch-1 timing keep the run short.
SMALL = ["data.limit=64", "baselines.unimodal=false", "distill.students={}", "teacher.train.epochs=1",
         "student.train.epochs=1",
         "export.latency.batch_sizes=[1]", "export.latency.include_teacher=false"]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + args, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_run_then_export_alone(tmp_path: Path) -> None:
    proc = _run(["run", "smoke", *SMALL, "--output-dir", str(tmp_path), "--name", "s", "-q"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "s"
    for rel in ("students/scratch-pruned/model.json", "compress/summary.json", "compress/bit_sweep.json",
                "export/scratch.onnx", "export/scratch-pruned.int8.onnx", "export/results.json"):
        assert (run / rel).is_file(), rel
    first = json.loads((run / "export" / "results.json").read_text())
    assert first["ship"] is not None and first["latency_rows"]

    proc = _run(["export", "smoke", *SMALL, "export.latency.enabled=false", "--run-dir", str(run), "-q"],
                tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((run / "export" / "results.json").read_text())
    assert list(res["artifacts"]) == [f"student-scratch{s}" for s in ("", ".onnx", ".int8", "-pruned",
                                                                      "-pruned.onnx", "-pruned.int8")]
    assert "latency_rows" not in res and res["ship"] is None  # keep_faster needs timings
    assert res["artifacts"]["student-scratch.onnx"]["verify"]["max_abs_error"] <= 1e-4
    assert "ship: none (latency was not measured" in proc.stdout
    assert f"results.json in {(run / 'export').resolve()}" in proc.stdout
    summary = {r["model"]: r for r in json.loads((run / "eval" / "summary.json").read_text())}
    assert summary["student-scratch-pruned.int8"]["runtime"] == "onnxruntime"
    assert "student-scratch.onnx" in proc.stdout  # the summary table is printed
    assert json.loads((run / "versions.json").read_text())["packages"]["mmdistill"]


def test_stage_commands_exit_2_with_the_fix(tmp_path: Path) -> None:
    for command in ("compress", "export"):
        proc = _run([command, "smoke", "--run-dir", str(tmp_path / "missing")], tmp_path)
        assert proc.returncode == 2 and "--run-dir: run folder not found" in proc.stderr
        assert "Traceback" not in proc.stderr
