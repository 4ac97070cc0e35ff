"""Tests for mmdistill.recipes.evaluate: discovery, the evaluate stage end to end, summary rows and table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mmdistill.config import config_from_dict
from mmdistill.data.loaders import SampleDataset
from mmdistill.models.builders import build_model, model_spec
from mmdistill.models.checkpoint import save_model
from mmdistill.recipes.data import DataBundle
from mmdistill.recipes.evaluate import (
    _summary_row,
    discover_models,
    evaluate_run,
    format_summary,
    merge_export_results,
)

K = 3


def _fake_model(path: Path) -> None:
    path.mkdir(parents=True)
    (path / "model.json").write_text("{}")


def test_discover_models_finds_every_variant_in_report_order(tmp_path: Path) -> None:
    for rel in ("students/scratch", "baselines/text", "teacher", "baselines/audio"):
        _fake_model(tmp_path / rel)
    (tmp_path / "students" / "half-written").mkdir()  # no model.json: not a model
    found = discover_models(tmp_path)
    assert list(found) == ["teacher", "baseline-audio", "baseline-text", "student-scratch"]
    assert found["baseline-text"] == tmp_path / "baselines" / "text"
    assert discover_models(tmp_path / "missing") == {}


def _data() -> DataBundle:
    g = torch.Generator().manual_seed(0)

    def split(name: str, count: int) -> SampleDataset:
        rows = []
        for i in range(count):
            row = {"id": f"{name}{i}", "label": i % K, "image": torch.randn(1, 28, 28, generator=g),
                   "text": torch.randint(1, 30, (4,), generator=g)}
            if i % 4:  # every fourth row has no audio
                row["audio"] = torch.randn(8, 16, generator=g)
            rows.append(row)
        return SampleDataset(rows)

    return DataBundle(splits={"train": split("tr", 4), "val": split("va", 4), "test": split("te", 12)},
                      classes=[f"c{i}" for i in range(K)], tasks={}, vocab_size=30, source="synthetic")


def _save(run_dir: Path, rel: str, mods: tuple[str, ...], seed: int) -> None:
    torch.manual_seed(seed)
    spec = model_spec("tiny", modalities=list(mods), num_classes=K, vocab_size=30, n_mels=8)
    save_model(build_model(spec), run_dir / rel)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """A run with a teacher, a copy of it, an image baseline and a smaller student, evaluated once."""
    run_dir = tmp_path_factory.mktemp("run")
    mods = ("image", "text", "audio")
    _save(run_dir, "teacher", mods, 0)
    shutil.copytree(run_dir / "teacher", run_dir / "students" / "copy")
    _save(run_dir, "baselines/image", ("image",), 1)
    _save(run_dir, "students/kd", ("image", "audio"), 2)
    cfg = config_from_dict({
        "data": {"eval_batch_size": 5, "audio": {"n_mels": 8}},
        "eval": {"latency_batch_sizes": [1, 4], "latency_repeats": 5, "latency_warmup": 1},
        "logging": {"progress": False, "quiet": True},
    })
    return run_dir, evaluate_run(run_dir, _data(), cfg)


def test_evaluate_run_writes_alignment_contribution_and_latency(evaluated: tuple[Path, list[dict]]) -> None:
    run_dir, summary = evaluated
    assert [r["model"] for r in summary] == ["teacher", "baseline-image", "student-copy", "student-kd"]
    res = {r["model"]: json.loads((run_dir / "eval" / f"{r['model']}.json").read_text()) for r in summary}
    assert json.loads((run_dir / "eval" / "summary.json").read_text()) == summary
    assert "alignment" not in res["teacher"]  # nothing to align the teacher with
    # The teacher's copy has exactly its features: CKA and cosine 1 for every modality and fused.
    copy = res["student-copy"]["alignment"]
    assert list(copy) == ["image", "text", "audio", "fused"]
    for v in copy.values():
        assert v["linear_cka"] == pytest.approx(1.0, abs=1e-6) and v["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert copy["audio"]["n"] == 9 and copy["image"]["n"] == 12  # rows without audio are excluded
    assert res["student-copy"]["teacher_agreement"] == 1.0
    kd = res["student-kd"]["alignment"]
    assert list(kd) == ["image", "audio", "fused"] and 0.0 <= kd["image"]["linear_cka"] <= 1.0
    assert list(res["baseline-image"]["alignment"]) == ["image", "fused"]
    # per-modality contribution = drop_one_loss: full accuracy minus accuracy without that modality
    for name in ("teacher", "student-copy", "student-kd"):
        r = res[name]
        full = r["modality_subsets"]["+".join(r["modalities"])]
        assert full == r["accuracy"]
        for m, drop in r["drop_one_loss"].items():
            rest = "+".join(x for x in r["modalities"] if x != m)
            assert drop == pytest.approx(full - r["modality_subsets"][rest])
    assert res["teacher"]["drop_one_loss"] == res["student-copy"]["drop_one_loss"]
    assert "drop_one_loss" not in res["baseline-image"]  # one modality: nothing to remove
    for row in summary:
        assert row["ece"] == res[row["model"]]["ece"] and 0.0 <= row["ece"] <= 1.0
        assert row["latency_runtime"] == "pytorch-eager" and row["latency_threads"] == 1
        for b in (1, 4):
            assert row[f"latency_b{b}_p95_ms"] >= row[f"latency_b{b}_ms"] > 0
        assert "runtime" not in row  # no export stage in this run
    weights = (run_dir / "teacher" / "model.safetensors").stat().st_size
    assert summary[0]["bytes"] == summary[2]["bytes"] == weights > summary[1]["bytes"]


def test_evaluate_run_shows_a_progress_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _save(tmp_path, "baselines/text", ("text",), 3)
    cfg = config_from_dict({"data": {"eval_batch_size": 6, "audio": {"n_mels": 8}},
                            "eval": {"latency": False}, "logging": {"progress": True}})
    capsys.readouterr()
    (row,) = evaluate_run(tmp_path, _data(), cfg)
    assert "evaluate:" in capsys.readouterr().err  # the bar ("evaluate: 100%|...", not a log line)
    assert "latency_runtime" not in row and "alignment" not in json.loads(
        (tmp_path / "eval" / "baseline-text.json").read_text())  # no teacher in this run
    quiet = config_from_dict({"data": {"audio": {"n_mels": 8}}, "eval": {"latency": False},
                              "logging": {"progress": True, "quiet": True}})
    evaluate_run(tmp_path, _data(), quiet)
    assert "evaluate:" not in capsys.readouterr().err


def test_summary_rows_and_table() -> None:
    b1 = {"median_ms": 2.5, "p95_ms": 3.25, "threads": 2}
    teacher = {"name": "teacher", "modalities": ["image", "text"], "parameters": 1000, "accuracy": 0.97,
               "macro_f1": 0.96, "ece": 0.05, "bytes_on_disk": 4000,
               "latency": {"b1": b1, "runtime": "pytorch-eager"}}
    student = {"name": "student-scratch", "modalities": ["image", "text"], "parameters": 40,
               "accuracy": 0.9, "macro_f1": 0.88, "teacher_agreement": 0.91}
    rows = [_summary_row(teacher, teacher), _summary_row(student, teacher)]
    assert rows[0] == {"model": "teacher", "modalities": "image+text", "parameters": 1000, "accuracy": 0.97,
                       "macro_f1": 0.96, "ece": 0.05, "bytes": 4000, "latency_b1_ms": 2.5,
                       "latency_b1_p95_ms": 3.25, "latency_threads": 2, "latency_runtime": "pytorch-eager",
                       "latency_source": "in-process"}
    assert rows[1]["compression"] == 25.0 and rows[1]["teacher_agreement"] == 0.91 and "ece" not in rows[1]
    table = format_summary(rows).splitlines()
    assert table[0].split() == ["model", "modalities", "params", "x", "smaller", "test", "acc", "macro-F1",
                                "agree", "b1", "ms", "b1", "p95"]
    assert table[2].split() == ["teacher", "image+text", "1,000", "-", "0.9700", "0.9600", "-", "2.50",
                                "3.25"]
    assert "25.0" in table[3] and "0.9000" in table[3] and table[3].split()[-1] == "-"  # no latency


def test_merge_keeps_p95_and_threads_of_the_export_measurement(tmp_path: Path) -> None:
    teacher = {"model": "teacher", "modalities": "image", "parameters": 100, "accuracy": 0.95,
               "latency_b1_ms": 9.0, "latency_b1_p95_ms": 12.0, "latency_threads": 1,
               "latency_runtime": "pytorch-eager", "latency_source": "in-process"}
    b1 = {"median_ms": 4.0, "p95_ms": 4.5, "threads": 2}
    res = {
        "artifacts": {
            "teacher": {"runtime": "torch", "latency": {"b1": b1}},
            "student-s.int8": {"runtime": "onnxruntime", "accuracy": 0.9, "bytes": 400, "student": "s",
                               "latency": {"b1": {"median_ms": 1.0, "p95_ms": 1.75},
                                           "b8": {"median_ms": 2.0}}},
        },
        "latency_settings": {"batch_sizes": [1, 8], "threads": 2},
    }
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "results.json").write_text(json.dumps(res))
    rows = {r["model"]: r for r in merge_export_results([dict(teacher)], tmp_path, teacher)}
    t = rows["teacher"]
    assert (t["latency_b1_ms"], t["latency_b1_p95_ms"], t["latency_threads"]) == (4.0, 4.5, 2)
    assert (t["latency_source"], t["latency_runtime"], t["runtime"]) == (
        "subprocess", "pytorch-eager", "torch")
    q = rows["student-s.int8"]
    assert (q["latency_b1_ms"], q["latency_b1_p95_ms"], q["latency_b8_ms"]) == (1.0, 1.75, 2.0)
    assert "latency_b8_p95_ms" not in q and q["latency_threads"] == 2  # threads from latency_settings
    header = format_summary(list(rows.values())).splitlines()[0].split()
    assert header[-6:] == ["b1", "ms", "b1", "p95", "b8", "ms"]  # p95 of the smallest batch size only


def test_merge_gives_onnx_rows_quality_macs_and_agreement_from_the_saved_logits(tmp_path: Path) -> None:
    teacher = {"model": "teacher", "modalities": "image", "parameters": 100, "accuracy": 0.95}
    student = {"model": "student-s", "modalities": "image", "parameters": 10, "accuracy": 0.9, "macs": 1234}
    logits = np.eye(3, dtype=np.float32)[[0, 1, 2, 2]]  # top-1: 0 1 2 2
    (tmp_path / "export").mkdir()
    np.save(tmp_path / "export" / "s.int8.test-logits.npy", logits, allow_pickle=False)
    quality = {"n": 4, "accuracy": 0.75, "macro_f1": 0.6, "ece": 0.1, "test_logits": "s.int8.test-logits.npy"}
    res = {"artifacts": {"student-s.int8": {"runtime": "onnxruntime", "accuracy": 0.75, "bytes": 40,
                                            "student": "s", "quality": quality}}}
    (tmp_path / "export" / "results.json").write_text(json.dumps(res))
    teacher_top1 = torch.tensor([0, 1, 1, 2])
    rows = {r["model"]: r for r in merge_export_results([dict(teacher), dict(student)], tmp_path, teacher,
                                                        teacher_top1)}
    q = rows["student-s.int8"]
    assert (q["macro_f1"], q["ece"], q["macs"]) == (0.6, 0.1, 1234)
    assert q["teacher_agreement"] == 0.75  # 3 of 4 rows agree
    # a teacher with another row count: agreement is left out, not computed on misaligned rows
    rows = {r["model"]: r for r in merge_export_results([dict(teacher), dict(student)], tmp_path, teacher,
                                                        torch.tensor([0, 1]))}
    assert "teacher_agreement" not in rows["student-s.int8"]
