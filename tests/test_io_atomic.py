"""Atomic writes (:mod:`mmdistill.io_atomic`) and every artifact writer that goes through them.

A failure at the rename (``os.replace`` made to raise) stands for a crash just before it: the
previous artifact must be intact and no temporary file left behind.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from _helpers import tiny_batch, tiny_model
from mmdistill.io_atomic import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text


def _boom(*_a: object, **_k: object) -> None:
    raise OSError("simulated crash at the rename")


def _only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _fails_and_keeps(path: Path, write: Callable[[], object], monkeypatch: pytest.MonkeyPatch) -> None:
    """``write()`` with a failing rename raises, leaves ``path``'s bytes and no other file."""
    before, names = path.read_bytes(), _only(path.parent)
    with monkeypatch.context() as m:
        m.setattr(os, "replace", _boom)
        with pytest.raises(OSError, match="simulated crash"):
            write()
    assert path.read_bytes() == before
    assert _only(path.parent) == names  # no temporary file left


# ---------------------------------------------------------------------------------------------
# The helper


def test_writes_replace_the_whole_file(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "a.json"
    assert atomic_write_json(p, {"x": 1}) == p  # folder created
    assert json.loads(p.read_text()) == {"x": 1} and p.read_text().endswith("\n")
    atomic_write_text(p, "short")
    assert p.read_text() == "short"
    atomic_write_bytes(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert _only(p.parent) == ["a.json"]


def test_failure_mid_write_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    p.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(p) as tmp:
        tmp.write_text("half")
        raise RuntimeError("the writer died")
    assert p.read_text() == "old" and _only(tmp_path) == ["a.json"]


def test_failure_at_the_rename_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "a.json"
    p.write_text("old")
    _fails_and_keeps(p, lambda: atomic_write_text(p, "new"), monkeypatch)


def test_temp_file_is_hidden_in_the_same_folder_and_never_matches_a_glob(tmp_path: Path) -> None:
    p = tmp_path / "eval" / "teacher.json"
    with atomic_path(p) as tmp:
        assert tmp.parent == p.parent and tmp.name.startswith(".teacher.json.")
        tmp.write_text("{}")
        assert list(p.parent.glob("*.json")) == []  # a reader globbing eval/*.json never sees it
    with atomic_path(tmp_path / "tok.json", keep_suffix=True) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".tok.") and tmp.suffix == ".json"
        tmp.write_text("{}")


def test_a_writer_that_writes_nothing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="left no file"), atomic_path(tmp_path / "a.bin"):
        pass
    assert _only(tmp_path) == []


def test_permissions_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644  # not mkstemp's 0600


def test_legacy_names_are_the_shared_helper() -> None:
    from mmdistill import io_atomic
    from mmdistill.report import files
    from mmdistill.training import state_io

    assert files.atomic_write_text is io_atomic.atomic_write_text
    assert files.atomic_write_bytes is io_atomic.atomic_write_bytes
    assert state_io.atomic_write_text is io_atomic.atomic_write_text


# ---------------------------------------------------------------------------------------------
# The writers of the run folder's artifacts


def test_checkpoint_save_keeps_the_previous_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmdistill.models.checkpoint import WEIGHTS_FILE, load_model, save_model

    save_model(tiny_model(seed=0), tmp_path)
    _fails_and_keeps(tmp_path / WEIGHTS_FILE, lambda: save_model(tiny_model(seed=1), tmp_path), monkeypatch)
    load_model(tmp_path)  # still a valid checkpoint (checksum matches)


def test_resume_tensors_and_state_io(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmdistill.training.state_io import atomic_save_tensors, load_tensor_file

    p = tmp_path / "epoch-0001.safetensors"
    atomic_save_tensors(p, {"a": torch.ones(3)}, {"epoch": "1"})
    _fails_and_keeps(p, lambda: atomic_save_tensors(p, {"a": torch.zeros(3)}, {"epoch": "1"}), monkeypatch)
    assert torch.equal(load_tensor_file(p, fix="")["a"], torch.ones(3))


def test_progress_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmdistill.training.progress import RunProgress

    progress = RunProgress.fresh(tmp_path, ["teacher"])
    _fails_and_keeps(progress.path, lambda: progress.mark("teacher", "teacher"), monkeypatch)
    assert not RunProgress.load(tmp_path).done("teacher", "teacher")


def test_compress_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmdistill.recipes.compress import _write

    p = tmp_path / "compress" / "summary.json"
    _write(p, {"v": 1})
    _fails_and_keeps(p, lambda: _write(p, {"v": 2}), monkeypatch)


def test_report_pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmdistill.report.files import atomic_write_text as report_write

    p = report_write(tmp_path / "report.md", "# old\n")
    _fails_and_keeps(p, lambda: report_write(p, "# new\n"), monkeypatch)


def test_flat_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmdistill.export.flat import save_flat_batch

    def batch(rows: int) -> dict:
        b = tiny_batch(rows)
        b["present"] = {m: v.clone() for m, v in b["present"].items()}  # tiny_batch shares one mask
        return b

    p = save_flat_batch(batch(4), tmp_path / "batch.safetensors")
    _fails_and_keeps(p, lambda: save_flat_batch(batch(5), p), monkeypatch)


def test_onnx_export_quantization_and_sidecars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    from mmdistill.compression.ort_quant import quantize_dynamic_onnx
    from mmdistill.export.onnx import export_onnx, sidecar_path

    fp32, q8 = tmp_path / "m.onnx", tmp_path / "m.dyn8.onnx"
    export_onnx(tiny_model(seed=0), fp32, tiny_batch(4))
    quantize_dynamic_onnx(fp32, q8)
    assert sorted(_only(tmp_path)) == sorted(["m.onnx", "m.onnx.json", "m.dyn8.onnx", "m.dyn8.onnx.json"])
    _fails_and_keeps(fp32, lambda: export_onnx(tiny_model(seed=1), fp32, tiny_batch(4)), monkeypatch)
    _fails_and_keeps(q8, lambda: quantize_dynamic_onnx(fp32, q8), monkeypatch)
    assert json.loads(sidecar_path(fp32).read_text())["input_names"]


def test_metrics_log_ends_a_torn_line_before_appending(tmp_path: Path) -> None:
    from mmdistill.report.curves import read_curves
    from mmdistill.training.logging import MetricsLogger
    from mmdistill.training.state_io import drop_stage_records

    p = tmp_path / "metrics.jsonl"
    good = json.dumps({"stage": "s", "epoch": 1, "val/accuracy": 0.5})
    p.write_text(good + "\n" + '{"stage": "s", "epo')  # killed mid-line
    logger = MetricsLogger(p, quiet=True)
    logger.log({"val/accuracy": 0.75}, epoch=2, stage="s")
    logger.close()
    lines = p.read_text().splitlines()
    assert lines[0] == good and lines[1] == '{"stage": "s", "epo' and json.loads(lines[2])["epoch"] == 2
    curves = read_curves(p)  # the torn line is skipped, both records kept
    assert curves.skipped_lines == 1
    drop_stage_records(p, "s", 2)
    assert [json.loads(x)["epoch"] for x in p.read_text().splitlines() if x.startswith('{"stage": "s", "ep')
            and x.endswith("}")] == [1, 2]


def test_remove_stale_temps_takes_only_our_temporary_names(tmp_path: Path) -> None:
    from mmdistill.io_atomic import _temp_name, remove_stale_temps

    stale = [_temp_name(tmp_path / "eval" / "summary.json", False),
             _temp_name(tmp_path / "export" / "kd.onnx", True)]
    keep = [tmp_path / ".hidden.tmp", tmp_path / "notes.tmp", tmp_path / "eval" / "summary.json",
            tmp_path / ".x.1234567.tmp", tmp_path / ".x.ABCDEF12.tmp"]  # 7 digits; upper case
    for p in [*stale, *keep]:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    folder = _temp_name(tmp_path / "dir", False)
    folder.mkdir()  # a folder with such a name is not ours: left alone
    assert remove_stale_temps(tmp_path) == sorted(stale)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in keep) and folder.is_dir()
    assert remove_stale_temps(tmp_path) == []
