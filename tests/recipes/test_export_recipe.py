"""Tests for the export stage (mmdistill.recipes.export) and its rows in the evaluation summary.

One tiny smoke run (scratch student, pruned without recovery, exported and timed at batch 1) is
shared by the module; ``choose_ship`` and ``merge_export_results`` are also checked on synthetic
results.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmdistill.config import Config, load_config
from mmdistill.data.collate import collate
from mmdistill.export.verify import make_session, run_session
from mmdistill.models.checkpoint import read_model_json
from mmdistill.recipes.evaluate import format_summary, merge_export_results
from mmdistill.recipes.export import choose_ship, export_variants
from mmdistill.recipes.pipeline import run_pipeline
from mmdistill.recipes.train import load_trained

ARTIFACTS = ["student-scratch", "student-scratch.onnx", "student-scratch.int8", "student-scratch-pruned",
             "student-scratch-pruned.onnx", "student-scratch-pruned.int8"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Config, dict]:
    out = tmp_path_factory.mktemp("export")
    cfg = load_config("smoke", [
        f"output_dir='{out}'", "name=e", "logging.quiet=true", "data.limit=64",
        "stages=[student, compress, export]", "student.train.epochs=1", "compress.source=scratch",
        "compress.prune.recover.epochs=0", "compress.sweep.enabled=false",
        "export.latency={batch_sizes: [1], warmup: 1, repeats: 3, rounds: 1}",
    ])
    run_pipeline(cfg, out / "e")
    return out / "e", cfg, json.loads((out / "e" / "export" / "results.json").read_text())


def _rows(run: Path) -> dict:
    """Two rows, the second without audio (fed as zeros with audio_present = False)."""
    spec = read_model_json(run / "students" / "scratch")["spec"]
    n_mels = spec["encoders"]["audio"]["kwargs"].get("n_mels", 64)
    g = torch.Generator().manual_seed(0)
    row = {"image": torch.rand(1, 28, 28, generator=g), "text": torch.randint(1, 20, (6,), generator=g),
           "audio": torch.randn(n_mels, 40, generator=g), "label": 0, "id": "a"}
    other = {k: v for k, v in row.items() if k != "audio"} | {"id": "b", "label": 1}
    return collate([row, other])


def test_every_student_gets_fp32_and_int8_files_with_sidecars(exported) -> None:
    run, cfg, res = exported
    assert export_variants(cfg, run) == ["scratch", "scratch-pruned"]
    for v in ("scratch", "scratch-pruned"):
        for f in (f"{v}.onnx", f"{v}.int8.onnx", f"{v}.onnx.json", f"{v}.int8.onnx.json"):
            assert (run / "export" / f).is_file(), f
    assert res["format"] == "mmdistill.export/1" and res["source"] == "scratch"
    assert list(res["artifacts"]) == ARTIFACTS
    for name, a in res["artifacts"].items():
        assert a["bytes"] > 0 and 0.0 <= a["accuracy"] <= 1.0, name
        assert a["runtime"] == ("onnxruntime" if "." in name else "torch")


def test_verify_reports_meet_the_thresholds_and_match_onnx_runtime(exported) -> None:
    run, cfg, res = exported
    v = cfg.export.verify
    for name in ("student-scratch.onnx", "student-scratch-pruned.onnx"):
        rep = res["artifacts"][name]["verify"]
        assert rep["max_abs_error"] <= v.atol and rep["agreement"] >= v.min_agreement
        assert rep["rows"] > 0 and rep["accuracy_onnx"] == res["artifacts"][name]["accuracy"]
        # the same artifact's eager accuracy is the torch row's
        assert rep["accuracy_reference"] == res["artifacts"][name.removesuffix(".onnx")]["accuracy"]
    for name in ("student-scratch.int8", "student-scratch-pruned.int8"):
        assert res["artifacts"][name]["verify"]["agreement"] >= v.int8_min_agreement
        assert res["artifacts"][name]["quantization"]["settings"]["format"] == "QDQ"
    for a in res["artifacts"].values():  # quality through the runtime, from the saved logits
        if a["runtime"] != "onnxruntime":
            continue
        q = a["quality"]
        logits = np.load(run / "export" / q["test_logits"], allow_pickle=False)
        assert logits.shape == (q["n"], len(q["class_names"])) and q["accuracy"] == a["accuracy"]
        cm = np.array(q["confusion_matrix"])
        assert cm.sum() == q["n"] and np.trace(cm) / cm.sum() == pytest.approx(a["accuracy"])
        assert 0.0 <= q["macro_f1"] <= 1.0 and 0.0 <= q["ece"] <= 1.0
        # every non-empty modality subset through the runtime; the full set is the measured accuracy
        assert len(q["modality_subsets"]) == 7 and q["modality_subsets"]["image+text+audio"] == a["accuracy"]
        without_audio = q["modality_subsets"]["image+text"]
        assert q["drop_one_loss"]["audio"] == pytest.approx(a["accuracy"] - without_audio)
    # the fp32 graph hides modalities exactly like the eager model: same subset accuracies
    from mmdistill.evaluation.robustness import subset_accuracy
    from mmdistill.recipes.compress import split_batches
    from mmdistill.recipes.data import prepare_data

    test = split_batches(prepare_data(cfg, run), "test", cfg.data.eval_batch_size)
    model = load_trained(run / "students" / "scratch").model.eval()
    eager = subset_accuracy(model, test, list(model.modalities))
    got = res["artifacts"]["student-scratch.onnx"]["quality"]["modality_subsets"]
    assert got == pytest.approx(eager, abs=1e-9)
    # independent round trip: the exported file gives the eager logits, also for a row without audio
    batch = _rows(run)
    for v_name in ("scratch", "scratch-pruned"):
        eager = load_trained(run / "students" / v_name).model.eval()(batch).logits.detach().numpy()
        onnx = run_session(make_session(run / "export" / f"{v_name}.onnx"), batch)
        np.testing.assert_allclose(onnx, eager, atol=1e-4)


def test_every_artifact_is_timed_in_its_own_process(exported) -> None:
    _, _, res = exported
    rows = res["latency_rows"]
    assert sorted(r["name"] for r in rows) == sorted(ARTIFACTS)  # one batch size: one row each
    assert len({r["pid"] for r in rows}) == len(ARTIFACTS)
    for r in rows:
        art = res["artifacts"][r["name"]]
        assert r["runtime"] == art["runtime"] and r["batch_size"] == 1 and r["median_ms"] > 0
        assert art["latency"]["b1"]["median_ms"] == r["median_ms"]
    settings = {"threads": 1, "warmup": 1, "repeats": 3, "rounds": 1, "batch_sizes": [1]}
    assert res["latency_settings"] == settings


def test_flags_compare_each_artifact_with_its_parent_on_the_same_runtime(exported) -> None:
    _, _, res = exported
    pairs = {(f["name"], f["parent"]) for f in res["flags"]}
    assert pairs == {
        ("student-scratch.int8", "student-scratch.onnx"),
        ("student-scratch-pruned.int8", "student-scratch-pruned.onnx"),
        ("student-scratch-pruned", "student-scratch"),
        ("student-scratch-pruned.onnx", "student-scratch.onnx"),
        ("student-scratch-pruned.int8", "student-scratch.int8"),
    }
    arts = res["artifacts"]
    for f in res["flags"]:
        assert arts[f["name"]]["runtime"] == arts[f["parent"]]["runtime"] == f["runtime"]
        assert f["speedup"] == pytest.approx(f["parent_median_ms"] / f["median_ms"])
        assert f["not_faster"] == (f["speedup"] < 1.0)


def test_ship_is_the_fastest_artifact_within_the_accuracy_bound(exported) -> None:
    _, cfg, res = exported
    arts, ship = res["artifacts"], res["ship"]
    timed = {n: a for n, a in arts.items() if "b1" in a.get("latency", {}) and n != "teacher"}
    assert timed and all(0 <= a["val_accuracy"] <= 1 for a in timed.values())  # every one has a val score
    ref = arts["student-scratch"]["val_accuracy"]  # picked on validation, not on the test it reports
    ok = {n: a["latency"]["b1"]["median_ms"] for n, a in timed.items()
          if 100 * (ref - a["val_accuracy"]) <= cfg.export.max_accuracy_drop}
    assert ship["name"] == min(ok, key=ok.__getitem__) and ship["selected_on"] == "validation"
    assert 100 * (ref - ship["val_accuracy"]) <= cfg.export.max_accuracy_drop
    assert ship["accuracy"] == arts[ship["name"]]["accuracy"]  # the test accuracy, reported
    assert ship["path"] == arts[ship["name"]]["path"] and Path(ship["path"]).exists()


def _art(runtime: str, accuracy: float | None, b1: float | None = None, **extra) -> dict:
    a = {"runtime": runtime, "path": "p", "accuracy": accuracy, **extra}
    if b1 is not None:
        a["latency"] = {"b1": {"median_ms": b1}}
    return a


def _synthetic() -> dict:
    return {"artifacts": {
        "student-s": _art("torch", 0.900, 10.0, student="s"),
        "student-s.onnx": _art("onnxruntime", 0.900, 3.0, student="s"),
        "student-s.int8": _art("onnxruntime", 0.897, 2.0, student="s"),  # 0.3 points lost
        "student-s-pruned.int8": _art("onnxruntime", 0.850, 1.0, student="s-pruned"),  # fastest, 5 points
        "student-s.torch-dyn8": _art("torch (in-process, not deployable)", 0.950, student="s"),
        "teacher": _art("torch", None, 20.0),
    }}


def test_choose_ship_keep_faster_respects_the_accuracy_bound() -> None:
    res = _synthetic()
    assert choose_ship(res, "s", True, 0.5)["name"] == "student-s.int8"
    assert choose_ship(res, "s", True, 0.0)["name"] == "student-s.onnx"
    assert choose_ship(res, "s", True, 10.0)["name"] == "student-s-pruned.int8"
    ship = choose_ship(res, "s", True, 0.5)
    assert ship["accuracy"] == 0.897 and ship["path"] == "p" and "0.5 points" in ship["reason"]


def test_choose_ship_compares_validation_accuracy_and_reports_test_accuracy() -> None:
    res = _synthetic()
    val = {"student-s": 0.90, "student-s.onnx": 0.90, "student-s.int8": 0.85, "student-s-pruned.int8": 0.898}
    for name, acc in val.items():
        res["artifacts"][name]["val_accuracy"] = acc
    # on test the int8 file is within 0.5 points and the pruned one is 5 points off; on validation,
    # where the choice is made, it is the other way round
    ship = choose_ship(res, "s", True, 0.5)
    assert ship["name"] == "student-s-pruned.int8" and ship["selected_on"] == "validation"
    assert ship["accuracy"] == 0.850 and ship["val_accuracy"] == 0.898
    assert "on the validation split" in ship["reason"]
    del res["artifacts"]["student-s"]["val_accuracy"]  # no validation rows (or older results): test
    ship = choose_ship(res, "s", True, 0.5)
    assert ship["name"] == "student-s.int8" and ship["selected_on"] == "test"
    assert "on the test split" in ship["reason"]


def test_choose_ship_without_keep_faster_takes_the_most_compressed_artifact() -> None:
    ship = choose_ship(_synthetic(), "s", False, 0.5)
    assert ship["name"] == "student-s-pruned.int8" and "keep_faster is false" in ship["reason"]
    assert ship["selected_on"] is None  # no accuracy was compared, so no split is named
    assert ship["accuracy"] == 0.850 and ship["path"] == "p"
    res = _synthetic()
    del res["artifacts"]["student-s-pruned.int8"]
    assert choose_ship(res, "s", False, 0.5)["name"] == "student-s.int8"


def test_choose_ship_returns_none_when_nothing_qualifies() -> None:
    res = _synthetic()
    for name in ("student-s", "student-s.onnx", "student-s.int8"):
        del res["artifacts"][name]["latency"]  # only the pruned int8 is timed, and it loses 5 points
    assert choose_ship(res, "s", True, 0.5) is None
    assert choose_ship(_synthetic(), "other", True, 0.5) is None  # the source was not exported
    assert choose_ship({"artifacts": {}}, "s", True, 0.5) is None


def test_merge_export_results_adds_runtime_rows_latency_and_flags(tmp_path: Path) -> None:
    teacher = {"model": "teacher", "modalities": "image", "parameters": 100, "accuracy": 0.95}
    student = {"model": "student-s", "modalities": "image", "parameters": 10, "accuracy": 0.9,
               "latency_b1_ms": 5.0, "latency_b64_ms": 50.0}  # in-process numbers from evaluation
    assert merge_export_results([dict(student)], tmp_path, teacher) == [student]  # no export: unchanged
    res = {
        "artifacts": {
            "student-s": {"runtime": "torch", "accuracy": 0.9, "latency": {"b1": {"median_ms": 4.0}}},
            "student-s.onnx": {"runtime": "onnxruntime", "accuracy": 0.9, "bytes": 1000, "student": "s",
                               "latency": {"b1": {"median_ms": 1.0}, "b8": {"median_ms": 2.0}}},
            "student-s.int8": {"runtime": "onnxruntime", "accuracy": 0.88, "bytes": 400, "student": "s",
                               "latency": {"b1": {"median_ms": 1.5}, "b8": {"median_ms": 1.0}}},
        },
        "flags": [
            {"name": "student-s.int8", "parent": "student-s.onnx", "batch_size": 1, "not_faster": True},
            {"name": "student-s.onnx", "parent": "student-s", "batch_size": 8, "not_faster": True},
        ],
        "latency_settings": {"batch_sizes": [1, 8]},
        "ship": {"name": "student-s.onnx"},
    }
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "results.json").write_text(json.dumps(res))
    rows = {r["model"]: r for r in merge_export_results([dict(teacher), dict(student)], tmp_path, teacher)}
    assert list(rows) == ["teacher", "student-s", "student-s.onnx", "student-s.int8"]
    assert rows["teacher"]["runtime"] == "torch" and "latency_source" not in rows["teacher"]
    # the subprocess measurement replaces the in-process one (both batch sizes dropped, b1 re-added)
    s = rows["student-s"]
    assert (s["latency_b1_ms"], s["latency_source"], "latency_b64_ms" in s) == (4.0, "subprocess", False)
    onnx = rows["student-s.onnx"]
    assert onnx == {"model": "student-s.onnx", "modalities": "image", "parameters": 10, "accuracy": 0.9,
                    "runtime": "onnxruntime", "bytes": 1000, "compression": 10.0, "latency_b1_ms": 1.0,
                    "latency_b8_ms": 2.0, "latency_source": "subprocess", "ship": True}
    # flags count at the smallest batch size only
    assert rows["student-s.int8"]["not_faster_than"] == ["student-s.onnx"]
    assert "not_faster_than" not in onnx
    table = format_summary(list(rows.values())).splitlines()
    assert table[0].split()[-1] == "note" and table[4].rstrip().endswith("ship")
    assert table[5].rstrip().endswith("NOT FASTER than student-s.onnx")
