"""Tests for mmdistill.recipes.evaluate: run-directory discovery and the summary table."""

from __future__ import annotations

from pathlib import Path

from mmdistill.recipes.evaluate import _summary_row, discover_models, format_summary


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


def test_summary_rows_and_table() -> None:
    teacher = {"name": "teacher", "modalities": ["image", "text"], "parameters": 1000, "accuracy": 0.97,
               "macro_f1": 0.96, "latency": {"b1": {"median_ms": 2.5}, "runtime": "pytorch-eager"}}
    student = {"name": "student-scratch", "modalities": ["image", "text"], "parameters": 40,
               "accuracy": 0.9, "macro_f1": 0.88, "teacher_agreement": 0.91}
    rows = [_summary_row(teacher, teacher), _summary_row(student, teacher)]
    assert rows[0]["latency_b1_ms"] == 2.5 and "compression" not in rows[0]
    assert rows[1]["compression"] == 25.0 and rows[1]["teacher_agreement"] == 0.91
    table = format_summary(rows).splitlines()
    assert table[0].split() == ["model", "modalities", "params", "x", "smaller", "test", "acc", "macro-F1",
                                "agree", "b1", "ms"]
    assert table[2].split()[:3] == ["teacher", "image+text", "1,000"]
    assert "25.0" in table[3] and "0.9000" in table[3] and table[3].split()[-1] == "-"  # no latency
