"""End-to-end runs of `mmdistill distill` (the distill stage alone against a run folder)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from _helpers import run_cli_torchrun

CLI = [sys.executable, "-m", "mmdistill.cli.main"]
pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + args, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_distill_command_against_a_trained_teacher(tmp_path: Path) -> None:
    proc = _run(["run", "smoke", "stages=[teacher]", "--output-dir", str(tmp_path), "--name", "base"],
                tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    teacher = tmp_path / "base" / "teacher"
    run = tmp_path / "kd"
    proc = _run(["distill", "smoke", "--teacher", str(teacher), "--run-dir", str(run)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The teacher's tokenizer is reused (token ids must not change) and the checkpoint copied in.
    assert (run / "tokenizer.json").read_bytes() == (tmp_path / "base" / "tokenizer.json").read_bytes()
    copied = (run / "teacher" / "model.safetensors").read_bytes()
    assert copied == (teacher / "model.safetensors").read_bytes()
    for variant in ("kd", "scratch"):
        meta = json.loads((run / "students" / variant / "model.json").read_text())
        assert meta["spec"]["num_classes"] == 10
    assert json.loads((run / "students" / "kd" / "model.json").read_text())["extra"]["strategy"] == "logit_kd"
    assert list((run / "cache").glob("teacher-*/logits.npy"))
    assert "teacher outputs: cache" in proc.stderr
    summary = {r["model"]: r for r in json.loads((run / "eval" / "summary.json").read_text())}
    assert list(summary) == ["teacher", "student-kd", "student-scratch"]
    assert "gap_recovered" in summary["student-kd"]
    assert summary["student-scratch"]["gap_recovered"] in (0.0, None)
    assert 0.0 <= summary["student-kd"]["teacher_agreement"] <= 1.0
    assert "student-kd" in proc.stdout and "students/kd" in proc.stdout
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    kd = [r for r in records if r.get("stage") == "student-kd" and "train/loss/kd_ce" in r]
    assert kd and all(r["train/loss/ce"] > 0 for r in kd)


def test_distill_command_errors_name_the_fix(tmp_path: Path) -> None:
    proc = _run(["distill", "smoke", "distill.students={}", "--run-dir", str(tmp_path / "r")], tmp_path)
    assert proc.returncode == 2 and "nothing to distill" in proc.stderr
    proc = _run(["distill", "smoke", "--run-dir", str(tmp_path / "r")], tmp_path)
    assert proc.returncode == 2 and "--teacher PATH" in proc.stderr
    proc = _run(["distill", "smoke", "--teacher", str(tmp_path / "missing")], tmp_path)
    assert proc.returncode == 2 and "teacher.checkpoint: checkpoint folder not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_distill_stage_under_torchrun_two_processes(tmp_path: Path) -> None:
    """The distill stage under DDP: rank 0 builds the teacher cache once, both ranks train the student."""
    proc = run_cli_torchrun(["run", "smoke", "stages=[teacher,student,distill,evaluate]", "--output-dir",
                             str(tmp_path), "--name", "ddp"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "ddp"
    assert len(list((run / "cache").glob("teacher-*/logits.npy"))) == 1  # one cache, shared by the ranks
    assert not list((run / "cache").glob(".tmp-*"))  # no half-written cache left behind
    kd_epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
                 if '"student-kd"' in line and "val/accuracy" in line]
    assert [e["epoch"] for e in kd_epochs] == [1]  # logged once, by rank 0
    assert {"train/loss/kd_ce", "train/loss/ce"} <= set(kd_epochs[0])  # every loss term is logged
    summary = {r["model"]: r for r in json.loads((run / "eval" / "summary.json").read_text())}
    assert set(summary) == {"teacher", "student-kd", "student-scratch"}


def test_routed_student_learns_from_subset_specialists_the_run_trains(tmp_path: Path) -> None:
    """baselines.subsets trains teacher-recipe specialists of modality pairs; a routed student uses them."""
    student = ("{r: {strategy: multi_teacher, teacher_weighting: routed, modality_dropout: 0.5, teachers: "
               "[teacher, baseline-image+text, baseline-audio], train: {epochs: 1, patience: null}}}")
    proc = _run(["run", "smoke", "stages=[teacher,baselines,student,distill,evaluate]",
                 "baselines.unimodal=false", "baselines.subsets=[[text,image]]",
                 f"distill.students={student}", "--output-dir", str(tmp_path), "--name", "routed"], tmp_path)
    # baseline-audio is a teacher, but only subsets are trained: the check names it before training.
    assert proc.returncode == 2 and "'baseline-audio' has no checkpoint" in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "routed" / "teacher").exists()
    proc = _run(["run", "smoke", "stages=[teacher,baselines,student,distill,evaluate]",
                 "baselines.subsets=[[text,image]]", f"distill.students={student}",
                 "--output-dir", str(tmp_path), "--name", "routed"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "routed"
    meta = json.loads((run / "baselines" / "image+text" / "model.json").read_text())
    assert meta["spec"]["modalities"] == ["image", "text"] and meta["extra"]["stage"] == "baseline-image+text"
    kd = json.loads((run / "students" / "r" / "model.json").read_text())["extra"]
    assert kd["strategy"] == "multi_teacher" and kd["teachers"] == ["teacher", "baseline-image+text",
                                                                     "baseline-audio"]
    assert len(list((run / "cache").glob("*/logits.npy"))) == 3  # one cache per teacher
    summary = {r["model"]: r for r in json.loads((run / "eval" / "summary.json").read_text())}
    assert {"baseline-image+text", "baseline-audio", "student-r"} <= set(summary)
    assert summary["baseline-image+text"]["modalities"] == "image+text"
