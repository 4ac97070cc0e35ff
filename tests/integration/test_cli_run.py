"""End-to-end runs of the real `mmdistill` CLI on tiny data (the smoke config)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from _helpers import run_cli_torchrun

CLI = [sys.executable, "-m", "mmdistill.cli.main"]
pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + args, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_run_smoke_builtin_writes_every_artifact(tmp_path: Path) -> None:
    proc = _run(["run", "smoke", "--output-dir", str(tmp_path), "--name", "smoke"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "smoke"
    for rel in ("config.resolved.yaml", "versions.json", "metrics.jsonl", "data.json", "tokenizer.json"):
        assert (run / rel).is_file(), rel
    for rel in ("teacher", "baselines/image", "baselines/text", "baselines/audio", "students/scratch",
                "students/kd"):
        assert (run / rel / "model.safetensors").is_file(), rel
        meta = json.loads((run / rel / "model.json").read_text())
        assert meta["spec"]["num_classes"] == 10
        assert meta["extra"]["classes"][3] == "three"
    summary = json.loads((run / "eval" / "summary.json").read_text())
    names = [r["model"] for r in summary]
    eager = ["teacher", "baseline-audio", "baseline-image", "baseline-text", "student-kd",
             "student-kd-pruned", "student-scratch"]
    # the export stage adds one row per ONNX Runtime artifact of the shipped students
    assert names == eager + ["student-kd.onnx", "student-kd.int8", "student-kd-pruned.onnx",
                             "student-kd-pruned.int8"]
    for row in summary:
        assert 0.0 <= row["accuracy"] <= 1.0
    teacher = summary[0]
    student = summary[len(eager) - 1]
    params = {r["model"]: r["parameters"] for r in summary}
    assert params["student-kd-pruned"] < params["student-kd"]
    assert sum(bool(r.get("ship")) for r in summary) == 1
    for rel in ("export/kd.onnx", "export/kd.int8.onnx", "export/results.json", "compress/summary.json",
                "compress/bit_sweep.json"):
        assert (run / rel).is_file(), rel
    assert student["parameters"] < teacher["parameters"]
    assert student["modalities"] == "image+text+audio"
    assert "baseline-audio" in proc.stdout and "test acc" in proc.stdout
    stages = {json.loads(line)["stage"] for line in (run / "metrics.jsonl").read_text().splitlines()}
    assert {"teacher", "baseline-image", "student-scratch", "student-kd"} <= stages
    eager_students = [r for r in summary if r["model"].startswith("student-") and r["runtime"] == "torch"]
    assert all("gap_recovered" in r for r in eager_students)


def test_run_multitask_reports_each_task(tmp_path: Path) -> None:
    proc = _run(
        ["run", "smoke", "data.tasks=[parity]", "stages=[teacher,evaluate]", "--output-dir", str(tmp_path)],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "smoke" / "eval" / "teacher.json").read_text())
    assert set(res["tasks"]) == {"parity"}  # the primary task is reported at the top level
    assert 0.0 <= res["tasks"]["parity"]["accuracy"] <= 1.0


def _write_manifest(root: Path, n_per_class: int = 6) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    sr = 8000  # not the model's rate: the reader must resample to 16 kHz
    for label, freq in (("low", 300.0), ("high", 1800.0)):
        for i in range(n_per_class):
            img = np.zeros((20, 20), np.uint8)
            if label == "low":
                img[10:] = 200
            else:
                img[:10] = 200
            img = np.clip(img + rng.integers(0, 40, img.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / f"{label}{i}.png")
            t = np.arange(int(0.4 * sr)) / sr
            sf.write(root / f"{label}{i}.wav", (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)
            split = "train" if i < n_per_class - 2 else ("val" if i == n_per_class - 2 else "test")
            row = {"id": f"{label}{i}", "image": f"{label}{i}.png", "audio": f"{label}{i}.wav",
                   "text": f"a {label} sound", "label": label, "split": split}
            if i == 0:
                del row["audio"]  # missing modalities are normal
            rows.append(row)
    path = root / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_run_on_user_manifest(tmp_path: Path) -> None:
    manifest = _write_manifest(tmp_path)
    proc = _run(
        ["run", "smoke", "data.source=manifest", f"data.manifest={manifest}", "--output-dir", str(tmp_path)],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "smoke" / "data.json").read_text())
    assert data["classes"] == ["high", "low"]
    assert data["sizes"] == {"train": 8, "val": 2, "test": 2}
    summary = json.loads((tmp_path / "smoke" / "eval" / "summary.json").read_text())
    assert summary[0]["model"] == "teacher"


def test_run_bad_manifest_names_file_and_row(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"image": "nope.png", "label": "a", "split": "train"}) + "\n")
    proc = _run(
        ["run", "smoke", "data.source=manifest", f"data.manifest={manifest}", "--output-dir", str(tmp_path)],
        tmp_path,
    )
    assert proc.returncode == 2
    assert "nope.png" in proc.stderr and "row 1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_under_torchrun_two_processes(tmp_path: Path) -> None:
    """`torchrun --nproc_per_node=2 -m mmdistill.cli.main run` trains with DDP (gloo) end to end."""
    proc = run_cli_torchrun(["run", "smoke", "stages=[teacher,evaluate]", "--output-dir", str(tmp_path),
                             "--name", "ddp"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "ddp"
    assert json.loads((run / "versions.json").read_text())["world_size"] == 2
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
              if "val/accuracy" in line]
    assert [e["epoch"] for e in epochs] == [1, 2]  # written once per epoch, by rank 0 only
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert [r["model"] for r in summary] == ["teacher"]
    assert 0.0 <= summary[0]["accuracy"] <= 1.0


def test_run_with_tensorboard_writes_readable_event_files(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    proc = _run(["run", "smoke", "stages=[teacher]", "data.limit=64", "logging.tensorboard=true",
                 "--output-dir", str(tmp_path), "-q"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (event_file,) = (tmp_path / "smoke" / "tensorboard").glob("events.out.tfevents.*")
    events = EventAccumulator(str(event_file))
    events.Reload()
    # One point per epoch of the teacher (smoke: 2 epochs, 64 samples = 2 steps of 32 per epoch),
    # the same values as metrics.jsonl.
    points = events.Scalars("teacher/val/accuracy")
    records = [json.loads(line) for line in (tmp_path / "smoke" / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if "val/accuracy" in r]
    assert [p.step for p in points] == [r["step"] for r in epochs] == [2, 4]
    assert [p.value for p in points] == pytest.approx([r["val/accuracy"] for r in epochs])
    assert "teacher/train/loss" in events.Tags()["scalars"]
