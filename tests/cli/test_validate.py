"""`mmdistill validate`: OK and exit 0, or every problem and exit 2."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from mmdistill.cli.main import app
from mmdistill.config.loading import packaged_config_dir

runner = CliRunner()


def test_valid_packaged_config_prints_ok() -> None:
    result = runner.invoke(app, ["validate", "smoke"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"OK: {packaged_config_dir() / 'smoke.yaml'}"


def test_every_problem_is_printed_and_exit_is_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  batchsize: 3\n  modalities: [image, video]\nteacher:\n  train: {lr: -1}\n")
    result = runner.invoke(app, ["validate", str(path), "eval.latency_threads=0"])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == f"INVALID: {path} (4 problem(s))"
    assert lines[1:] == [
        "  - data.modalities[1]: must be one of 'image', 'text' or 'audio', got 'video'",
        "  - data.batchsize: unknown key; did you mean 'batch_size'? valid keys: source, manifest, "
        "shards, stream, allow_outside_root, on_error, modalities, classes, tasks, task_weights, limit, "
        "batch_size, eval_batch_size, num_workers, image, audio, text",
        "  - teacher.train.lr: must be > 0, got -1",
        "  - eval.latency_threads: must be > 0, got 0",
    ]


def test_unreadable_yaml_and_missing_file_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("seed: !!python/object/apply:os.getcwd []\n")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert f"{path}:1:7: YAML tag '!!python/object/apply:os.getcwd'" in result.stderr
    result = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "config: file not found" in result.stderr


def test_malformed_override_exits_2() -> None:
    result = runner.invoke(app, ["validate", "smoke", "teacher.train.epochs"])
    assert result.exit_code == 2
    assert "override 'teacher.train.epochs': expected KEY=VALUE" in result.stderr
