"""``build_results`` / ``write_results`` on hand-built run folders: schema, merging, optional keys, errors."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from mmdistill.errors import CheckpointError, DataError
from mmdistill.report import SCHEMA, SCHEMA_VERSION, build_results, load_results, write_results
from mmdistill.report.curves import read_curves
from mmdistill.report.files import atomic_write_text

TOP_KEYS = {"schema", "schema_version", "created", "run_dir", "mmdistill_version", "config", "seed",
            "machine", "packages", "world_size", "models", "summary", "export", "compress", "curves",
            "step_curves", "ship", "notes"}


def test_results_hold_every_model_with_kind_parent_and_merged_metrics(make_run: Callable[..., Path]) -> None:
    res = build_results(make_run())
    assert set(res) == TOP_KEYS
    assert (res["schema"], res["schema_version"]) == (SCHEMA, SCHEMA_VERSION)
    assert res["seed"] == 3 and res["world_size"] == 1 and res["packages"] == {"torch": "2.13.0"}
    models = {m["name"]: m for m in res["models"]}
    assert list(models) == ["teacher", "baseline-image", "student-scratch", "student-kd", "student-kd.onnx",
                            "student-kd.int8"]
    kinds = {n: (m["kind"], m["parent"], m["runtime"]) for n, m in models.items()}
    assert kinds["teacher"] == ("teacher", None, "torch")
    assert kinds["baseline-image"] == ("baseline", None, "torch")
    assert kinds["student-kd.onnx"] == ("exported", "student-kd", "onnxruntime")
    assert kinds["student-kd.int8"] == ("exported", "student-kd.onnx", "onnxruntime")
    kd = models["student-kd"]
    assert kd["gap_recovered"] == 0.5  # from the summary row
    assert kd["alignment"]["image"]["linear_cka"] == 0.9  # the optional key passes through
    # the export stage timed it in its own process: that wins, the in-process timing is kept beside it
    assert kd["latency"]["b1"]["median_ms"] == 2.1 and kd["latency"]["source"] == "subprocess"
    assert kd["latency_in_process"]["b1"]["median_ms"] == 2.0
    int8 = models["student-kd.int8"]
    assert int8["bytes_on_disk"] == 400 and int8["quantization"]["size_ratio"] == 2.25
    assert int8["not_faster_than"] == ["student-kd.onnx"]
    assert int8["not_faster"][0]["latency_ratio"] == 1.5
    assert int8["path"] == "export/kd.int8.onnx"
    assert [n for n, m in models.items() if m["ship"]] == ["student-kd.onnx"]
    assert res["ship"]["name"] == "student-kd.onnx" and res["ship"]["rule"]["max_accuracy_drop"] == 0.5
    assert res["curves"]["teacher"]["val/accuracy"] == [[1.0, 0.3], [2.0, 0.6], [3.0, pytest.approx(0.9)]]
    assert res["curves"]["student-kd"]["train/loss/kd"] == [[1.0, 1.0]]


def test_compressed_students_are_found_from_their_checkpoint_metadata(make_run: Callable[..., Path]) -> None:
    run = make_run(student="student-kd-pruned", export=False)
    (run / "students" / "kd-pruned").mkdir(parents=True)
    (run / "students" / "kd-pruned" / "model.json").write_text(
        json.dumps({"extra": {"compressed_from": "kd", "strategy": "logit_kd"}}))
    models = {m["name"]: m for m in build_results(run)["models"]}
    pruned = models["student-kd-pruned"]
    assert (pruned["kind"], pruned["parent"], pruned["strategy"]) == ("compressed", "student-kd", "logit_kd")
    assert models["student-scratch"]["kind"] == "student"


def test_missing_optional_files_and_keys_give_notes_not_errors(make_run: Callable[..., Path]) -> None:
    run = make_run(export=False)
    (run / "versions.json").unlink()
    (run / "metrics.jsonl").unlink()
    (run / "eval" / "summary.json").unlink()
    bare = {"name": "student-bare", "accuracy": 0.5}  # an eval file with almost nothing in it
    (run / "eval" / "student-bare.json").write_text(json.dumps(bare))
    res = build_results(run)
    assert res["export"] is None and res["ship"] is None and res["curves"] == {}
    assert res["packages"] == {} and res["seed"] == 3  # the config's seed when versions.json is gone
    notes = " ".join(res["notes"])
    assert "summary.json is missing" in notes and "export stage did not run" in notes
    assert "no metrics.jsonl" in notes
    bare_entry = next(m for m in res["models"] if m["name"] == "student-bare")
    assert bare_entry["accuracy"] == 0.5 and "latency" not in bare_entry and bare_entry["ship"] is False


def test_write_results_is_strict_json_and_round_trips(make_run: Callable[..., Path]) -> None:
    run = make_run()
    res_file = run / "eval" / "teacher.json"
    teacher = json.loads(res_file.read_text())
    teacher["ece"] = float("nan")  # json.dumps writes NaN by default; results.json must not
    res_file.write_text(json.dumps(teacher))
    path = write_results(run)
    assert path == (run / "results.json").resolve()
    text = path.read_text()
    assert "NaN" not in text
    loaded = load_results(path)
    assert next(m for m in loaded["models"] if m["name"] == "teacher")["ece"] is None
    assert [p.name for p in run.iterdir() if p.name.endswith(".tmp")] == []


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "results.json"
    atomic_write_text(target, "old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left behind


def test_not_a_run_folder_and_no_eval_are_clear_errors(tmp_path: Path, make_run: Callable[..., Path]) -> None:
    with pytest.raises(CheckpointError, match="run folder not found"):
        build_results(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(CheckpointError, match="not a directory"):
        build_results(tmp_path / "file.txt")
    with pytest.raises(CheckpointError, match="no config.resolved.yaml"):
        build_results(tmp_path)
    run = make_run()
    for p in (run / "eval").iterdir():
        p.unlink()
    hint = r"run the evaluate stage first: mmdistill run .*config.resolved.yaml 'stages=\[evaluate\]'"
    with pytest.raises(CheckpointError, match=hint):
        build_results(run)


def test_a_corrupt_result_file_names_the_file(make_run: Callable[..., Path]) -> None:
    run = make_run()
    (run / "export" / "results.json").write_text('{"artifacts": ')
    with pytest.raises(DataError, match=r"export/results.json: not valid JSON \(line 1"):
        build_results(run)


def test_load_results_rejects_other_schemas_and_newer_versions(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"schema": "something.else"}))
    with pytest.raises(DataError, match="not an mmdistill results file"):
        load_results(path)
    path.write_text(json.dumps({"schema": SCHEMA, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(DataError, match="newer than this mmdistill reads"):
        load_results(path)


def test_curves_keep_the_last_attempt_of_a_restarted_stage_and_skip_broken_lines(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    rows = [{"stage": "s", "epoch": e, "step": e, "train/loss": 10.0 + e, "seconds": 1} for e in (1, 2, 3)]
    rows += [{"stage": "s", "epoch": e, "step": 2 * e, "train/loss": float(e), "seconds": 1} for e in (1, 2)]
    rows += [{"stage": "s", "epoch": 1, "step": 1, "train/loss": 5.0, "lr": 0.1}]  # a per-step record
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"stage": "s", "epo')
    curves = read_curves(path)
    assert curves.epochs["s"]["train/loss"] == [[1.0, 1.0], [2.0, 2.0]]  # the rerun replaced epochs 1-3
    assert curves.steps["s"] == {"train/loss": [[1.0, 5.0]], "lr": [[1.0, 0.1]]}
    assert curves.skipped_lines == 1
