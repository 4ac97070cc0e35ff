"""Tests for mmdistill.recipes.distill (the distill stage) and the gap-recovered column of evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmdistill.config import config_from_dict
from mmdistill.data.loaders import SampleDataset
from mmdistill.errors import CheckpointError
from mmdistill.models.builders import build_model, model_spec
from mmdistill.models.checkpoint import load_model, save_model
from mmdistill.recipes.data import DataBundle
from mmdistill.recipes.distill import adopt_teacher_tokenizer, check_teacher, load_teachers, run_distill_stage
from mmdistill.recipes.evaluate import _summary_row, format_summary, gap_recovered
from mmdistill.training.logging import MetricsLogger
from mmdistill.training.progress import RunProgress

K = 4


def _data(n: int = 24) -> DataBundle:
    g = torch.Generator().manual_seed(0)

    def split(name: str, count: int) -> SampleDataset:
        return SampleDataset([
            {"id": f"{name}{i}", "label": i % K, "image": torch.randn(1, 28, 28, generator=g),
             "text": torch.randint(1, 30, (4,), generator=g), "audio": torch.randn(8, 16, generator=g)}
            for i in range(count)
        ])

    return DataBundle(splits={"train": split("tr", n), "val": split("va", 8), "test": split("te", 8)},
                      classes=[f"c{i}" for i in range(K)], tasks={}, vocab_size=30, source="synthetic")


def _cfg(students: dict, **distill):
    return config_from_dict({
        "data": {"batch_size": 8, "eval_batch_size": 16, "audio": {"n_mels": 8}},
        "student": {"preset": "tiny", "train": {"epochs": 1, "patience": None}},
        "eval": {"latency": False}, "logging": {"progress": False, "quiet": True},
        "distill": {"students": students, **distill},
    })


def _save_teacher(run_dir: Path, mods=("image", "text", "audio"), classes: int = K) -> None:
    torch.manual_seed(3)
    spec = model_spec("tiny", modalities=list(mods), num_classes=classes, vocab_size=30, n_mels=8)
    save_model(build_model(spec), run_dir / "teacher", extra={"tokenizer": "tokenizer.json"})


def test_gap_recovered_and_summary_column() -> None:
    assert gap_recovered(0.9, 0.8, 1.0) == pytest.approx(0.5)
    assert gap_recovered(0.7, 0.8, 1.0) == pytest.approx(-0.5)
    assert gap_recovered(0.9, 0.95, 0.9) is None  # the teacher is not better: no gap to recover
    teacher = {"name": "teacher", "modalities": ["image"], "parameters": 100, "accuracy": 0.9,
               "macro_f1": 0.9}
    scratch = {"name": "student-scratch", "modalities": ["image"], "parameters": 10, "accuracy": 0.7,
               "macro_f1": 0.7, "teacher_agreement": 0.75}
    kd = dict(scratch, name="student-kd", accuracy=0.85)
    base = dict(scratch, name="baseline-image", parameters=50)
    rows = [_summary_row(r, teacher, scratch) for r in (teacher, base, kd, scratch)]
    assert "gap_recovered" not in rows[0] and "gap_recovered" not in rows[1]
    assert rows[2]["gap_recovered"] == pytest.approx(0.75) and rows[3]["gap_recovered"] == 0.0
    table = format_summary(rows).splitlines()
    assert "gap rec." in table[0] and "0.75" in table[4] and table[3].split()[-1] == "-"


def test_distill_stage_trains_saves_and_uses_the_cache(tmp_path: Path) -> None:
    _save_teacher(tmp_path)
    cfg = _cfg({"kd": {"strategy": "feature_kd"}, "tf": {"strategy": "teacher_free"}})
    logger = MetricsLogger(tmp_path / "metrics.jsonl", quiet=True)
    out = run_distill_stage(cfg, _data(), tmp_path, logger=logger)
    assert set(out) == {"kd", "tf"}
    for name in ("kd", "tf"):
        model, extra = load_model(tmp_path / "students" / name)
        assert model.num_classes == K and extra["stage"] == f"student-{name}"
    meta = json.loads((tmp_path / "students" / "kd" / "model.json").read_text())
    assert meta["extra"]["teachers"] == ["teacher"] and meta["extra"]["strategy"] == "feature_kd"
    # Only the student's weights are saved: no teacher, no adapter.
    assert model.spec["encoders"]["image"]["kwargs"]["channels"] == [8, 8]
    caches = list((tmp_path / "cache").glob("teacher-*"))
    assert len(caches) == 1 and (caches[0] / "features-fused.npy").is_file()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    kd_epoch = next(r for r in records if r.get("stage") == "student-kd" and "train/loss/hint" in r)
    assert kd_epoch["train/loss/kd_ce"] >= 0 and "val/accuracy" in kd_epoch
    assert not (tmp_path / "students" / "kd" / "resume").exists()  # deleted once the model is saved
    before = (tmp_path / "students" / "kd" / "model.safetensors").stat().st_mtime_ns
    progress = RunProgress(tmp_path, {"distill": {"complete": False, "done": ["student-kd"]}}, resuming=True)
    again = run_distill_stage(cfg, _data(), tmp_path, logger=logger, progress=progress)
    assert again["kd"] is None and again["tf"] is not None  # only what progress records is skipped
    assert (tmp_path / "students" / "kd" / "model.safetensors").stat().st_mtime_ns == before
    assert progress.done("distill", "student-tf")
    assert json.loads((tmp_path / "progress.json").read_text())["stages"]["distill"]["done"] == [
        "student-kd", "student-tf"]


def test_cache_off_runs_the_teacher_online(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _save_teacher(tmp_path)
    cfg = _cfg({"kd": {"strategy": "robust"}}, cache="off")
    with caplog.at_level("INFO", logger="mmdistill.recipes.distill"):
        run_distill_stage(cfg, _data(), tmp_path, logger=MetricsLogger(None, quiet=True))
    assert "teacher runs online: distill.cache is off (teacher)" in caplog.text
    assert not (tmp_path / "cache").exists()
    assert (tmp_path / "students" / "kd" / "model.json").is_file()


def test_teacher_mismatches_fail_before_training(tmp_path: Path) -> None:
    data = _data()
    cfg = _cfg({"kd": {}})
    _save_teacher(tmp_path, classes=K + 1)
    with pytest.raises(CheckpointError, match=r"predicts 5 classes but the data has 4"):
        load_teachers(["teacher"], tmp_path, data, cfg)
    model = build_model(model_spec("tiny", modalities=["image"], num_classes=K, vocab_size=30, n_mels=8))
    with pytest.raises(CheckpointError, match=r"reads image but the config says image\+text\+audio "
                                              r"\(teacher"):
        check_teacher(model, "teacher", data, cfg, source="ckpt")
    with pytest.raises(CheckpointError, match=r"'baseline-text' has no checkpoint .*add 'baselines' to "
                                              r"stages"):
        load_teachers(["baseline-text"], tmp_path, data, cfg)


def test_adopt_teacher_tokenizer(tmp_path: Path) -> None:
    src_run, run = tmp_path / "a", tmp_path / "b"
    _save_teacher(src_run)
    (src_run / "tokenizer.json").write_text('{"v": 1}')
    adopt_teacher_tokenizer(src_run / "teacher", run)
    assert (run / "tokenizer.json").read_text() == '{"v": 1}'
    (run / "tokenizer.json").write_text('{"v": 2}')
    with pytest.raises(CheckpointError, match="differs from the one teacher"):
        adopt_teacher_tokenizer(src_run / "teacher", run)


def test_mixup_student_runs_its_teacher_online_and_others_keep_the_cache(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _save_teacher(tmp_path)
    cfg = _cfg({"fm": {"strategy": "logit_kd", "mixup": 1.0}, "kd": {"strategy": "logit_kd"}})
    with caplog.at_level("INFO", logger="mmdistill.recipes.distill"):
        run_distill_stage(cfg, _data(), tmp_path, logger=MetricsLogger(None, quiet=True))
    assert "teacher runs online: mixup 1 makes every training batch new" in caplog.text
    assert "distill fm: strategy=logit_kd, teachers=[teacher: online]" in caplog.text
    assert "mixup=1" in caplog.text
    assert "distill kd: strategy=logit_kd, teachers=[teacher: cache]" in caplog.text
    assert len(list((tmp_path / "cache").glob("teacher-*"))) == 1  # built for kd only
    for name in ("fm", "kd"):
        assert (tmp_path / "students" / name / "model.json").is_file()
