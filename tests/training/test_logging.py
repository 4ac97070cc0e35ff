"""MetricsLogger records, rank-0-only writing, the epoch line, and setup_logging."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from mmdistill.errors import ConfigError, MissingDependencyError
from mmdistill.training import logging as mlog
from mmdistill.training.logging import MetricsLogger, format_epoch_line, setup_logging


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_records_are_appended_one_per_call(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "metrics.jsonl"
    logger = MetricsLogger(path, stage="teacher", quiet=True)
    values = {"loss": torch.tensor(0.5), "acc": np.float32(0.25), "cm": np.array([[1, 2]]),
              "bad": float("nan")}
    logger.log(values, epoch=1, step=10)
    logger.log({"loss": 0.25}, epoch=2, stage="distill")
    first, second = read(path)
    assert first["stage"] == "teacher" and first["epoch"] == 1 and first["step"] == 10
    assert first["loss"] == 0.5 and first["acc"] == 0.25 and first["cm"] == [[1, 2]]
    assert first["bad"] is None  # NaN is not JSON; null keeps the file strictly valid
    assert isinstance(first["time"], float)
    assert second["stage"] == "distill" and second["step"] is None
    # A second logger on the same file appends (resumed runs keep their history).
    MetricsLogger(path).log({"x": 1})
    assert len(read(path)) == 3


def test_directory_path_means_metrics_jsonl_inside(tmp_path: Path) -> None:
    MetricsLogger(tmp_path, quiet=True).log({"a": 1})
    assert read(tmp_path / "metrics.jsonl")[0]["a"] == 1


def test_non_main_rank_writes_and_prints_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setattr(mlog, "is_main", lambda: False)
    logger = MetricsLogger(tmp_path / "m.jsonl")
    record = logger.log_epoch(1, {"train/loss": 1.0})
    assert record  # the line is still built and returned
    assert not (tmp_path / "m.jsonl").exists()
    assert capsys.readouterr().out == ""


def test_log_epoch_prints_summary_unless_quiet(tmp_path: Path, capsys) -> None:
    metrics = {"train/loss": 0.42131, "val/loss": 0.38712, "val/accuracy": 0.884, "lr": 9.51e-4,
               "seconds": 2.14}
    line = MetricsLogger(tmp_path / "m.jsonl", stage="teacher").log_epoch(3, metrics, epochs=10, note="*")
    expected = "teacher epoch 3/10  train loss 0.4213  val loss 0.3871  val acc 88.40%  lr 9.51e-04  2.1s  *"
    assert line == expected
    assert capsys.readouterr().out == expected + "\n"
    MetricsLogger(tmp_path / "m.jsonl", quiet=True).log_epoch(4, metrics)
    assert capsys.readouterr().out == ""
    assert [r["epoch"] for r in read(tmp_path / "m.jsonl")] == [3, 4]


def test_format_epoch_line_skips_absent_and_shows_nan() -> None:
    assert format_epoch_line({"stage": "", "epoch": 2, "train/loss": 1.0}) == "epoch 2  train loss 1.0000"
    assert format_epoch_line({"stage": "s", "epoch": 1, "val/loss": None}) == "s epoch 1  val loss nan"


def test_tensorboard_missing_names_the_extra(tmp_path: Path) -> None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match=r"mmdistill\[tensorboard\]"):
            MetricsLogger(None, tensorboard_dir=tmp_path / "tb")
    else:  # installed: scalars are written
        with MetricsLogger(None, tensorboard_dir=tmp_path / "tb") as logger:
            logger.log({"loss": 1.0}, step=1)
        assert any((tmp_path / "tb").iterdir())


def test_tensorboard_event_file_holds_the_logged_scalars(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = MetricsLogger(tmp_path / "m.jsonl", stage="teacher", quiet=True, tensorboard_dir=tmp_path / "tb")
    logger.log_epoch(1, {"train/loss": 0.75, "val/accuracy": 0.5, "is_best": True, "note": "x"}, step=4)
    logger.log_epoch(2, {"train/loss": 0.25, "val/accuracy": 0.875}, step=8, stage="student-kd")
    logger.close()
    (event_file,) = (tmp_path / "tb").glob("events.out.tfevents.*")
    events = EventAccumulator(str(event_file))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"teacher/train/loss", "teacher/val/accuracy", "student-kd/val/accuracy"} <= tags
    assert "teacher/note" not in tags  # strings are not scalars
    (point,) = events.Scalars("teacher/train/loss")
    assert (point.step, point.value) == (4, 0.75)
    (point,) = events.Scalars("student-kd/val/accuracy")
    assert (point.step, point.value) == (8, 0.875)


def test_setup_logging_configures_only_the_package_logger() -> None:
    root_handlers = list(logging.getLogger().handlers)
    logger = setup_logging("debug")
    assert logger.name == "mmdistill" and logger.level == logging.DEBUG
    setup_logging("WARNING")  # idempotent: no second handler
    ours = [h for h in logger.handlers if h.get_name() == "mmdistill-console"]
    assert len(ours) == 1 and logger.level == logging.WARNING
    assert logging.getLogger().handlers == root_handlers
    with pytest.raises(ConfigError, match="log level must be one of DEBUG, INFO, .*, got 'loud'"):
        setup_logging("loud")
    logger.removeHandler(ours[0])
    logger.setLevel(logging.NOTSET)
