"""`mmdistill run --resume`: a run killed at any point and resumed ends with exactly the numbers of an
uninterrupted run.

The kills come from the test-only hook ``MMDISTILL_TEST_KILL_AT`` (see
:mod:`mmdistill.training.kill_hook`): the process SIGKILLs itself at an exact point (inside an
epoch of the teacher, distillation, pruning recovery and QAT, between a model's save and its
record in ``progress.json``, inside the teacher-cache build, the export, the evaluation, the
report), so those tests are deterministic; one more test sends a real SIGKILL from outside at a
random moment (``MMDISTILL_TEST_KILL_SEED=<n>`` replays one). Exact equality is expected, not a
tolerance: with ``threads: 1`` on CPU every kernel is deterministic, and the resume state restores
weights, optimizer, scheduler, early-stopping and every RNG bit for bit (modality dropout below
makes the training draw random numbers); a stage redone from its start (one killed before it was recorded)
redraws the same numbers from the same seed.

One uninterrupted reference run (module-scoped) serves every test. The kill points are chained in
one interrupted run (each resume is killed at the next point), which costs about one run plus a
process start per point instead of one run per point.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from _helpers import run_cli

CLI = [sys.executable, "-m", "mmdistill.cli.main"]
pytestmark = pytest.mark.slow

ARGS = ["run", "smoke", "data.limit=128", "student.train.modality_dropout=0.3",
        "distill.students.kd.train.epochs=3", "distill.students.kd.train.modality_dropout=0.3",
        "compress.prune.recover.epochs=2", "compress.qat.enabled=true", "compress.qat.bits=4",
        "compress.qat.recover.epochs=2", "export.latency.enabled=false"]
EARLIER = ["teacher", "baselines/image", "baselines/text", "baselines/audio", "students/scratch"]
MODELS = [*EARLIER, "students/kd", "students/kd-pruned", "students/kd-qat4"]


def _run(args: list[str], cwd: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    return run_cli(args, cwd, kill_at=kill_at)


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

    # No stage before the interrupted one was retrained; nothing of the resume machinery is left,
    # and the same numbers as the uninterrupted run: scores, weights and every logged epoch.
    assert {m: (run / m / "model.safetensors").stat().st_mtime_ns for m in EARLIER} == mtimes
    _same_as_straight(run, straight)


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


def _progress(run: Path) -> dict:
    return json.loads((run / "progress.json").read_text())


def _done(run: Path, group: str) -> list[str]:
    return _progress(run)["stages"].get(group, {}).get("done", [])


# (kill point, what the run folder must look like right after the kill at it)
KILL_CHAIN = [
    # inside the teacher's training, after epoch 1's resume state
    ("teacher:1:saved", lambda run: "teacher" not in _progress(run)["stages"]
     and json.loads((run / "teacher/resume/state.json").read_text())["epoch"] == 1),
    # baseline-text saved, progress.json not yet updated: it must be retrained, not trusted
    ("mark:baselines:baseline-text", lambda run: (run / "baselines/text/model.json").is_file()
     and _done(run, "baselines") == ["baseline-image"]),
    # after the scratch student's last epoch's resume state, before its model is saved
    ("student-scratch:2:saved", lambda run: not (run / "students/scratch/model.json").exists()
     and json.loads((run / "students/scratch/resume/state.json").read_text())["epoch"] == 2),
    # the teacher cache's arrays written, its meta.json and rename not
    ("cache:outputs", lambda run: list((run / "cache").glob(".tmp-teacher-*"))
     and not list((run / "cache").glob("teacher-*"))),
    # the distilled student's first epoch logged, its resume state not written: the next resume
    # restarts it from scratch with the teacher cache already there (no build, so the cache must
    # replay the build's draw from torch's global RNG, or the student trains on another stream)
    ("student-kd:1:logged", lambda run: list((run / "cache").glob("teacher-*"))
     and not (run / "students/kd/resume/state.json").exists()),
    # the pruning recovery saved, not recorded
    ("mark:compress:student-kd-pruned", lambda run: (run / "students/kd-pruned/model.json").is_file()
     and "student-kd-pruned" not in _done(run, "compress")),
    # inside the quantization-aware training, after epoch 1's resume state
    ("student-kd-qat4:1:saved", lambda run: "student-kd-qat4" not in _done(run, "compress")
     and json.loads((run / "students/kd-qat4/resume/state.json").read_text())["epoch"] == 1),
    # the first ONNX file of the export stage written, nothing else of it
    ("export:kd:onnx", lambda run: (run / "export/kd.onnx").is_file()
     and not (run / "export/results.json").exists()),
    # the evaluation of the first model written, the summary not
    ("evaluate:teacher", lambda run: (run / "eval/teacher.json").is_file()
     and not (run / "eval/summary.json").exists()),
    # results.json written, the pages not
    ("report:results", lambda run: (run / "results.json").is_file() and not (run / "report.html").exists()
     and _progress(run)["stages"]["evaluate"]["complete"]),
]


def _same_as_straight(run: Path, straight: Path) -> None:
    assert json.loads((run / "progress.json").read_text())["status"] == "finished"
    assert not list(run.glob("**/resume"))
    assert _scores(run) == _scores(straight)
    for model in MODELS:
        a, b = load_file(straight / model / "model.safetensors"), load_file(run / model / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), model
    ours, ref = _epoch_records(run), _epoch_records(straight)
    assert [(r["stage"], r["epoch"]) for r in ours] == [(r["stage"], r["epoch"]) for r in ref]
    assert [(r["train/loss"], r["val/loss"]) for r in ours] == [(r["train/loss"], r["val/loss"]) for r in ref]
    assert all((run / f).is_file() for f in ("results.json", "report.md", "report.html"))


def test_killed_at_every_kind_of_point_and_resumed_matches(straight: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = [*ARGS, "-o", str(tmp_path), "-n", "run"]
    for i, (point, check) in enumerate(KILL_CHAIN):
        proc = _run(first if i == 0 else ["run", "--resume", str(run)], tmp_path, kill_at=point)
        assert proc.returncode == -signal.SIGKILL, f"{point}: not killed there\n{proc.stderr[-3000:]}"
        assert check(run), f"{point}: unexpected state after the kill"
    # What a kill in the middle of an atomic write leaves: a hidden temporary file next to the target.
    torn = [run / "eval" / ".summary.json.0123abcd.tmp", run / "export" / ".kd.89abcdef.tmp.onnx"]
    for path in torn:
        path.write_bytes(b"torn")
    proc = _run(["run", "--resume", str(run)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "removed 2 temporary file(s)" in proc.stderr and not any(p.exists() for p in torn)
    assert "student-kd-pruned: done" not in proc.stderr  # recorded by the previous resume
    _same_as_straight(run, straight)


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def test_sigkill_from_outside_at_a_random_moment(straight: Path, tmp_path: Path) -> None:
    """A real ``kill -9`` from another process, at a moment drawn from the reference run's log."""
    seed = int(os.environ.get("MMDISTILL_TEST_KILL_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    logged = [json.loads(line)["time"] for line in (straight / "metrics.jsonl").read_text().splitlines()]
    target = rng.randint(1, len(logged))  # wait for this many metrics lines, then a delay within what
    # the reference run still had to do (training, compress, export, evaluate, report), so it dies
    remaining = (straight / "progress.json").stat().st_mtime - logged[target - 1]
    delay = rng.uniform(0.0, 0.8 * remaining)
    where = f"MMDISTILL_TEST_KILL_SEED={seed}: after {target} metrics lines + {delay:.2f} s"
    print(where)  # shown when the test fails
    run = tmp_path / "run"
    env = dict(os.environ, COLUMNS="300")
    env.pop("MMDISTILL_TEST_KILL_AT", None)
    with (tmp_path / "killed.log").open("w") as log:
        proc = subprocess.Popen(CLI + [*ARGS, "-o", str(tmp_path), "-n", "run"], cwd=tmp_path, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 240
            while (proc.poll() is None and _lines(run / "metrics.jsonl") < target
                   and time.monotonic() < deadline):
                time.sleep(0.02)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"{where}: {(tmp_path / 'killed.log').read_text()[-3000:]}"
    proc = _run(["run", "--resume", str(run)], tmp_path)
    assert proc.returncode == 0, f"{where}: {proc.stderr[-3000:]}"
    _same_as_straight(run, straight)
