"""`mmdistill run --resume`: a run killed twice (in the distill stage, then in the compress stage's
recovery fine-tune) and resumed ends with exactly the numbers of an uninterrupted run.

The kills come from the test-only hook ``MMDISTILL_TEST_KILL_AT`` (see
:mod:`mmdistill.training.resume`): the process SIGKILLs itself at an exact point of an epoch, so the
test is deterministic. Exact equality is expected, not a tolerance: with ``threads: 1`` on CPU every
kernel is deterministic, and the resume state restores weights, optimizer, scheduler, early-stopping
and every RNG bit for bit (modality dropout below makes the training draw random numbers).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

CLI = [sys.executable, "-m", "mmdistill.cli.main"]
pytestmark = pytest.mark.slow

ARGS = ["run", "smoke", "data.limit=128", "student.train.modality_dropout=0.3",
        "distill.students.kd.train.epochs=3", "distill.students.kd.train.modality_dropout=0.3",
        "compress.prune.recover.epochs=2"]
EARLIER = ["teacher", "baselines/image", "baselines/text", "baselines/audio", "students/scratch"]
MODELS = [*EARLIER, "students/kd", "students/kd-pruned"]


def _run(args: list[str], cwd: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="300")  # one log record per line
    env.pop("MMDISTILL_TEST_KILL_AT", None)
    if kill_at is not None:
        env["MMDISTILL_TEST_KILL_AT"] = kill_at
    return subprocess.run(CLI + args, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def _epoch_records(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "val/accuracy" in r]


def _scores(run: Path) -> dict[str, tuple]:
    summary = json.loads((run / "eval" / "summary.json").read_text())
    return {r["model"]: (r["accuracy"], r.get("macro_f1"), r.get("teacher_agreement")) for r in summary}


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("straight")
    proc = _run([*ARGS, "-o", str(root), "-n", "run"], root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "run"


def test_killed_twice_and_resumed_matches_the_uninterrupted_run(straight: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    # 1. Killed in the distill stage, after epoch 2's metrics record but before its resume state.
    proc = _run([*ARGS, "-o", str(tmp_path), "-n", "run"], tmp_path, kill_at="student-kd:2:logged")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    progress = json.loads((run / "progress.json").read_text())
    assert progress["status"] == "running" and "distill" not in progress["stages"]
    assert all(progress["stages"][s]["complete"] for s in ("teacher", "baselines", "student"))
    assert json.loads((run / "students/kd/resume/state.json").read_text())["epoch"] == 1
    assert [r["epoch"] for r in _epoch_records(run) if r["stage"] == "student-kd"] == [1, 2]
    mtimes = {m: (run / m / "model.safetensors").stat().st_mtime_ns for m in EARLIER}

    # 2. Resumed, then killed again in the compress stage's recovery fine-tune (state saved).
    proc = _run(["run", "--resume", str(run)], tmp_path, kill_at="student-kd-pruned:1:saved")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    log = proc.stderr
    assert "resuming" in log and "(done: teacher, baselines, student)" in log
    for name in ("teacher", "baseline-image", "student-scratch"):
        assert f"{name}: done in the interrupted run, skipped" in log
    assert "student-kd: resuming after epoch 1 (best epoch 1)" in log

    # 3. Resumed to the end.
    proc = _run(["run", "--resume", str(run)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "student-kd: done, skipped" in proc.stderr
    assert "student-kd-pruned: resuming after epoch 1" in proc.stderr
    assert "test acc" in proc.stdout  # the summary table, as after any run

    # No stage before the interrupted one was retrained; nothing of the resume machinery is left.
    assert {m: (run / m / "model.safetensors").stat().st_mtime_ns for m in EARLIER} == mtimes
    assert not list(run.glob("**/resume"))
    assert json.loads((run / "progress.json").read_text())["status"] == "finished"

    # The same numbers as the uninterrupted run: scores, weights and every logged epoch.
    assert _scores(run) == _scores(straight)
    for model in MODELS:
        a, b = load_file(straight / model / "model.safetensors"), load_file(run / model / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), model
    ours, ref = _epoch_records(run), _epoch_records(straight)
    assert [(r["stage"], r["epoch"]) for r in ours] == [(r["stage"], r["epoch"]) for r in ref]
    assert [(r["train/loss"], r["val/loss"]) for r in ours] == [(r["train/loss"], r["val/loss"]) for r in ref]


def test_resume_of_a_finished_run_redoes_nothing(straight: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(straight, run)

    def files() -> dict[Path, int]:  # data.json is rewritten by the data stage (same content)
        return {p: p.stat().st_mtime_ns for p in run.rglob("*")
                if p.is_file() and p.name not in ("progress.json", "data.json")}

    before, data = files(), (run / "data.json").read_bytes()
    proc = _run(["run", "--resume", str(run), "--quiet"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test acc" in proc.stdout  # the saved summary is printed again
    assert files() == before and (run / "data.json").read_bytes() == data
