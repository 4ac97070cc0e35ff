"""progress.json: what a run completed, as --resume reads it; a fresh run forgets only its own stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmdistill.errors import CheckpointError
from mmdistill.training.progress import PROGRESS_FILE, RunProgress, stale_resume_dirs


def test_marks_are_written_at_once_and_read_back_for_resume(tmp_path: Path) -> None:
    progress = RunProgress.fresh(tmp_path, ["teacher", "distill"])
    assert not progress.resuming and not progress.done("teacher", "teacher")
    progress.mark("teacher", "teacher")
    progress.mark("teacher")
    progress.mark("distill", "student-kd")
    progress.mark("distill", "student-kd")  # idempotent
    on_disk = json.loads((tmp_path / PROGRESS_FILE).read_text())
    assert on_disk["status"] == "running"
    assert on_disk["stages"]["distill"] == {"complete": False, "done": ["student-kd"]}
    again = RunProgress.load(tmp_path)
    assert again.resuming and again.done("teacher") and again.done("teacher", "teacher")
    assert again.done("distill", "student-kd") and not again.done("distill")
    assert not again.done("distill", "student-tf") and not again.done("compress")
    assert again.summary() == "teacher, distill (student-kd)"
    again.finish()
    assert json.loads((tmp_path / PROGRESS_FILE).read_text())["status"] == "finished"


def test_fresh_forgets_the_stages_it_runs_and_deletes_stale_resume_state(tmp_path: Path, caplog) -> None:
    first = RunProgress.fresh(tmp_path, ["teacher", "student", "compress"])
    first.mark("teacher", "teacher")
    first.mark("student", "student-scratch")
    for rel in ("teacher/resume", "students/kd/resume", "baselines/audio/resume"):
        (tmp_path / rel).mkdir(parents=True)
        (tmp_path / rel / "state.json").write_text("{}")
    assert [p.relative_to(tmp_path).as_posix() for p in stale_resume_dirs(tmp_path)] == [
        "teacher/resume", "baselines/audio/resume", "students/kd/resume"]
    with caplog.at_level("WARNING", logger="mmdistill.training.progress"):
        second = RunProgress.fresh(tmp_path, ["compress", "evaluate"])  # e.g. `mmdistill compress`
    assert second.done("teacher", "teacher") and second.done("student", "student-scratch")
    assert stale_resume_dirs(tmp_path) == []
    assert "holds the state of an interrupted run (teacher, baselines/audio, students/kd); starting over" \
        in caplog.text and f"mmdistill run --resume {tmp_path}" in caplog.text
    third = RunProgress.fresh(tmp_path, ["teacher"])
    assert not third.done("teacher", "teacher") and third.done("student", "student-scratch")


def test_load_without_progress_or_a_broken_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="progress.json: not found, so it is unknown which stages"):
        RunProgress.load(tmp_path)
    (tmp_path / PROGRESS_FILE).write_text("[1, 2")
    with pytest.raises(CheckpointError, match="progress.json: unreadable"):
        RunProgress.load(tmp_path)
    (tmp_path / PROGRESS_FILE).write_text('{"version": 99}')
    with pytest.raises(CheckpointError, match="not a progress file of format 1"):
        RunProgress.load(tmp_path)
