"""examples/: the same run in plain Python, each script run as a user would, on tiny settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
pytestmark = pytest.mark.slow


def _run(script: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def _rows(stdout: str) -> dict[str, list[str]]:
    """The summary table's rows, by model name."""
    return {line.split()[0]: line.split() for line in stdout.splitlines() if line.startswith(("teacher",
                                                                                              "student-"))}


def test_run_pipeline_runs_the_configured_stages_and_prints_the_summary(tmp_path: Path) -> None:
    proc = _run("run_pipeline.py", ["smoke", "data.limit=64", "stages=[teacher, student, evaluate]",
                                    "--output-dir", str(tmp_path)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(_rows(proc.stdout)) == {"teacher", "student-scratch"}
    assert f"results are in {(tmp_path / 'smoke').resolve()}" in proc.stdout
    summary = json.loads((tmp_path / "smoke" / "eval" / "summary.json").read_text())
    assert [r["model"] for r in summary] == ["teacher", "student-scratch"]


def test_step_by_step_trains_teacher_scratch_and_kd_then_evaluates(tmp_path: Path) -> None:
    proc = _run("step_by_step.py", ["data.limit=64", "--output-dir", str(tmp_path)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(proc.stdout)
    assert set(rows) == {"teacher", "student-kd", "student-scratch"}
    run = tmp_path / "step-by-step"
    for rel in ("teacher", "students/scratch", "students/kd"):
        assert (run / rel / "model.safetensors").is_file(), rel
    meta = json.loads((run / "students" / "kd" / "model.json").read_text())
    assert meta["extra"]["strategy"] == "logit_kd" and meta["extra"]["teachers"] == ["teacher"]
    stages = {json.loads(line)["stage"] for line in (run / "metrics.jsonl").read_text().splitlines()}
    assert stages == {"teacher", "student-scratch", "student-kd"}
    summary = {r["model"]: r for r in json.loads((run / "eval" / "summary.json").read_text())}
    assert set(summary) == set(rows)
    for name, row in rows.items():  # model, modalities, params, x smaller, test acc, ...
        assert row[4] == f"{summary[name]['accuracy']:.4f}"
