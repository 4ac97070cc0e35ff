"""Per-runtime latency in child processes (no timing thresholds) and the not-faster flags."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest
import torch

from mmdistill.errors import DataError
from mmdistill.evaluation import latency
from mmdistill.evaluation.latency import (
    LatencyVariant,
    LatencyWorkerError,
    flag_not_faster,
    measure_runtimes,
    pick_faster,
    write_batch_files,
)
from mmdistill.models.builders import build_model, model_spec
from mmdistill.models.checkpoint import save_model


def _batch(rows: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 7, (rows,), generator=g)
    text = torch.randint(1, 30, (rows, 6), generator=g)
    text = text.masked_fill(torch.arange(6)[None] >= lengths[:, None], 0)
    return {
        "id": [str(i) for i in range(rows)], "label": torch.zeros(rows, dtype=torch.long),
        "image": torch.randn(rows, 1, 8, 8, generator=g), "text": text,
        "lengths": {"text": lengths},
        # Row 0 has no image: eager masks it, ORT gets zeros with image_present False (same numbers).
        "present": {"image": torch.arange(rows) > 0, "text": torch.ones(rows, dtype=torch.bool)},
    }


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny image+text checkpoint, its ONNX export and flat batch files for B = 1 and 3."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from mmdistill.export.onnx import export_onnx

    root = tmp_path_factory.mktemp("latency")
    torch.manual_seed(0)
    spec = model_spec("tiny", modalities=["image", "text"], num_classes=3, vocab_size=30)
    model = build_model(spec).eval()
    save_model(model, root / "ckpt")
    export_onnx(model, root / "m.onnx", _batch(2, 0))
    files = write_batch_files({1: _batch(1, 1), 3: _batch(3, 2)}, root / "batches")
    return {"ckpt": root / "ckpt", "onnx": root / "m.onnx", "files": files}


def test_torch_and_ort_variants_run_in_their_own_processes(artifacts: dict) -> None:
    variants = [LatencyVariant("eager", "torch", artifacts["ckpt"]),
                LatencyVariant("ort", "onnxruntime", artifacts["onnx"])]
    rows = measure_runtimes(variants, artifacts["files"], threads=1, warmup=2, repeats=5, rounds=2)
    assert [(r["name"], r["batch_size"]) for r in rows] == [("eager", 1), ("eager", 3), ("ort", 1),
                                                             ("ort", 3)]
    for r in rows:
        assert r["median_ms"] > 0 and r["p95_ms"] >= r["median_ms"] >= r["min_ms"] > 0
        assert r["threads"] == 1 and r["thread_settings"]["env_threads"]["OMP_NUM_THREADS"] == "1"
        assert r["n"] == 10 and len(r["round_median_ms"]) == 2
        assert r["samples_per_s"] == pytest.approx(r["batch_size"] * 1e3 / r["median_ms"])
    by = {(r["name"], r["batch_size"]): r for r in rows}
    assert by[("eager", 1)]["pid"] == by[("eager", 3)]["pid"]  # one long-lived child per variant
    assert len({by[("eager", 1)]["pid"], by[("ort", 1)]["pid"], os.getpid()}) == 3
    assert "torch" in by[("eager", 1)]["versions"] and "onnxruntime" in by[("ort", 1)]["versions"]
    assert not by[("ort", 1)]["torch_imported"] and by[("eager", 1)]["torch_imported"]
    assert by[("ort", 1)]["thread_settings"]["allow_spinning"] is False
    # Same model, same batch file: both runtimes compute the same logits (absent-image row included).
    for bs in (1, 3):
        eager = by[("eager", bs)]["output_checksum"]
        assert by[("ort", bs)]["output_checksum"] == pytest.approx(eager, abs=1e-4)


def test_broken_path_names_the_variant_and_shows_child_stderr(artifacts: dict, tmp_path: Path) -> None:
    variants = [LatencyVariant("lost", "torch", tmp_path / "no-such-checkpoint")]
    with pytest.raises(LatencyWorkerError) as info:
        measure_runtimes(variants, artifacts["files"], warmup=0, repeats=1, rounds=1, timeout_s=120)
    msg = str(info.value)
    assert "variant 'lost'" in msg and "CheckpointError" in msg and "model.json" in msg
    assert "child stderr" in msg and "Traceback" in msg


def test_ort_missing_file_and_hung_child_fail_clearly(
    artifacts: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(LatencyWorkerError, match=r"variant 'gone'.*no such ONNX file"):
        measure_runtimes([LatencyVariant("gone", "onnxruntime", tmp_path / "x.onnx")], artifacts["files"],
                         warmup=0, repeats=1, rounds=1, timeout_s=120)
    script = "import sys, time; print('stuck', file=sys.stderr, flush=True); time.sleep(60)"
    hang = [sys.executable, "-c", script]
    monkeypatch.setattr(latency, "_worker_command", lambda: hang)
    with pytest.raises(LatencyWorkerError, match=r"(?s)variant 'slow'.*timed out after 2 s.*stuck"):
        measure_runtimes([LatencyVariant("slow", "torch", artifacts["ckpt"])], artifacts["files"],
                         timeout_s=2)


_FAKE_WORKER = """
import json, os, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg["cmd"] == "quit":
        break
    if msg["cmd"] == "init":
        reply = {"pid": os.getpid(), "threads": msg["threads"], "versions": {}, "torch_imported": False,
                 "checksums": {b: 0.0 for b in msg["batch_files"]}}
    else:
        reply = {"times_ns": [1000 * (k + 1) for k in range(msg["repeats"])]}
    print(json.dumps({"ok": True, **reply}), flush=True)
"""


def test_progress_bar_or_round_log_lines(
    artifacts: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A protocol-speaking stand-in child (no model, no torch): fast, and the times are known.
    monkeypatch.setattr(latency, "_worker_command", lambda: [sys.executable, "-c", _FAKE_WORKER])
    variants = [LatencyVariant(n, "torch", artifacts["ckpt"]) for n in ("a", "b")]
    caplog.set_level(logging.INFO, logger="mmdistill.evaluation.latency")
    rows = measure_runtimes(variants, artifacts["files"], warmup=0, repeats=4, rounds=2, progress=True)
    assert rows[0]["median_ms"] == pytest.approx(0.0025) and rows[0]["p95_ms"] >= rows[0]["median_ms"]
    err = capsys.readouterr().err
    assert "latency" in err and "/10" in err  # 2 start-ups + 2 rounds x 2 batch sizes x 2 variants
    assert not [r for r in caplog.records if "round" in r.getMessage()]  # the bar replaces the lines
    measure_runtimes(variants, artifacts["files"], warmup=0, repeats=1, rounds=2)  # default: no bar
    assert "/10" not in capsys.readouterr().err
    lines = [r.getMessage() for r in caplog.records if "round" in r.getMessage()]
    assert [m.split(" done")[0] for m in lines] == [
        f"latency: round {r}/2 of 2 variant(s) x 2 batch size(s)" for r in (1, 2)]


def test_bad_arguments_fail_before_any_child_starts(artifacts: dict, tmp_path: Path) -> None:
    v = LatencyVariant("a", "torch", artifacts["ckpt"])
    with pytest.raises(ValueError, match="runtime must be one of"):
        measure_runtimes([LatencyVariant("a", "tensorrt", artifacts["ckpt"])], artifacts["files"])
    with pytest.raises(ValueError, match="unique"):
        measure_runtimes([v, v], artifacts["files"])
    with pytest.raises(DataError, match="batch size 8 not found"):
        measure_runtimes([v], {8: tmp_path / "missing.safetensors"})


def _row(name: str, runtime: str, bs: int, ms: float) -> dict:
    return {"name": name, "runtime": runtime, "batch_size": bs, "median_ms": ms}


def test_flag_not_faster_compares_like_with_like() -> None:
    rows = [_row("fp32", "onnxruntime", 1, 2.0), _row("int8", "onnxruntime", 1, 2.5),
            _row("fp32", "onnxruntime", 64, 10.0), _row("int8", "onnxruntime", 64, 4.0),
            _row("fp32", "torch", 1, 3.0), _row("pruned", "torch", 1, 2.0)]
    flags = flag_not_faster(rows, {"int8": "fp32", "pruned": "fp32"})
    assert [(f["name"], f["runtime"], f["not_faster"]) for f in flags] == [
        ("int8", "onnxruntime", True), ("pruned", "torch", False)]
    assert flags[0]["speedup"] == pytest.approx(0.8) and flags[0]["latency_ratio"] == pytest.approx(1.25)
    assert flags[1]["speedup"] == pytest.approx(1.5) and flags[1]["parent_median_ms"] == 3.0
    big = flag_not_faster(rows, {"int8": "fp32"}, batch_size=64)
    assert big[0]["speedup"] == pytest.approx(2.5) and not big[0]["not_faster"]
    # A 1.5x gain is not enough when 2x is required.
    assert flag_not_faster(rows, {"pruned": "fp32"}, min_speedup=2.0)[0]["not_faster"]
    assert pick_faster(rows, "int8", "fp32") == "fp32"
    assert pick_faster(rows, "int8", "fp32", batch_size=64) == "int8"
    assert pick_faster(rows, "pruned", "fp32", min_speedup=2.0) == "fp32"
    with pytest.raises(ValueError, match="same runtime"):
        flag_not_faster(rows + [_row("int8", "torch", 1, 1.0)], {"int8": "pruned"})
    with pytest.raises(ValueError, match="no row at batch size 8"):
        flag_not_faster(rows, {"int8": "fp32"}, batch_size=8)
