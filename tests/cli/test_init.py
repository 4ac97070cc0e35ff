"""`mmdistill init`: starter folders that validate, read back with the manifest reader, and run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmdistill.cli.main import app
from mmdistill.config import load_config
from mmdistill.data.datasets.manifest import read_manifest
from mmdistill.templates import TEMPLATES, TemplateError, write_template

runner = CliRunner()


def test_list_names_every_template() -> None:
    result = runner.invoke(app, ["init", "--list"])
    assert result.exit_code == 0, result.output
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert names == list(TEMPLATES) and {"manifest", "builtin"} <= set(names)


def test_manifest_template_is_a_valid_config_over_a_readable_manifest(tmp_path: Path) -> None:
    dest = tmp_path / "my-data"
    result = runner.invoke(app, ["init", "manifest", str(dest)])
    assert result.exit_code == 0, result.output
    assert f"next: mmdistill validate {dest / 'config.yaml'}" in result.stdout
    assert runner.invoke(app, ["validate", str(dest / "config.yaml")]).exit_code == 0
    cfg = load_config(dest / "config.yaml")
    assert cfg.data.source == "manifest" and Path(cfg.data.manifest) == (dest / "manifest.jsonl").resolve()

    md = read_manifest(dest / "manifest.jsonl")  # the reader the data stage uses; decodes every file
    assert md.classes == ["high", "low"] and md.skipped == []
    splits = [r.split for r in md.records]
    assert (splits.count("train"), splits.count("val"), splits.count("test")) == (8, 2, 2)
    has = [(r.image is not None, r.text is not None, r.audio is not None) for r in md.records]
    assert (True, True, True) in has  # complete rows ...
    assert any(not all(h) for h in has)  # ... and rows missing a modality
    for i, name in enumerate(("image", "text", "audio")):
        assert any(not h[i] for h in has), f"no row lacks {name}"
    assert (dest / "README.md").read_text().startswith("# Your data, as mmdistill reads it")


def test_builtin_template_is_the_demo_with_a_header(tmp_path: Path) -> None:
    write_template("builtin", tmp_path)
    text = (tmp_path / "config.yaml").read_text()
    assert text.startswith("# Written by `mmdistill init builtin`")
    assert load_config(tmp_path / "config.yaml") == load_config("default")


def test_existing_files_are_kept_unless_forced(tmp_path: Path) -> None:
    write_template("manifest", tmp_path)
    (tmp_path / "config.yaml").write_text("name: mine\n")
    result = runner.invoke(app, ["init", "manifest", str(tmp_path)])
    assert result.exit_code != 0
    assert isinstance(result.exception, TemplateError)
    assert f"{tmp_path / 'config.yaml'}" in str(result.exception) and "pass --force" in str(result.exception)
    assert (tmp_path / "config.yaml").read_text() == "name: mine\n"
    assert runner.invoke(app, ["init", "manifest", str(tmp_path), "--force"]).exit_code == 0
    assert (tmp_path / "config.yaml").read_text().startswith("# Starter config for your own data")


def test_unknown_template_or_missing_arguments_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"unknown template 'manifset'; did you mean 'manifest'\?"):
        write_template("manifset", tmp_path)
    result = runner.invoke(app, ["init", "manifest"])
    assert "give a TEMPLATE and a DIR" in str(result.exception)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_manifest_template_runs_end_to_end(tmp_path: Path) -> None:
    write_template("manifest", tmp_path / "my-data")
    tiny = ["teacher.preset=tiny", "baselines.preset=tiny", "student.preset=tiny", "teacher.train.epochs=1",
            "baselines.train.epochs=1", "student.train.epochs=1", "distill.students.kd.train.epochs=1",
            "compress.prune.recover.epochs=1", "export.latency.enabled=false", "threads=1",
            "logging.progress=false"]
    proc = subprocess.run(
        [sys.executable, "-m", "mmdistill.cli.main", "run", str(tmp_path / "my-data" / "config.yaml"), *tiny,
         "-o", str(tmp_path / "runs"), "-q"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "my-data"
    assert json.loads((run / "data.json").read_text())["sizes"] == {"train": 8, "val": 2, "test": 2}
    models = {r["model"] for r in json.loads((run / "eval" / "summary.json").read_text())}
    assert {"teacher", "baseline-image", "baseline-text", "baseline-audio", "student-scratch", "student-kd",
            "student-kd-pruned", "student-kd.onnx"} <= models
