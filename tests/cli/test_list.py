"""`mmdistill list`: registered components with their descriptions."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmdistill.cli.main import app

runner = CliRunner()


def test_list_encoders_shows_name_modality_and_description() -> None:
    from mmdistill.models.registries import ENCODERS, register_all

    register_all()
    result = runner.invoke(app, ["list", "encoders"])
    assert result.exit_code == 0, result.output
    assert "fusions" not in result.stdout
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") == 4}
    for entry in ENCODERS.entries():
        assert entry.name in rows
        assert entry.meta["modality"] in rows[entry.name]


def test_list_all_groups() -> None:
    pytest.importorskip("mmdistill.models.builders")
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    for title in ("encoders", "fusions", "heads", "presets", "losses", "strategies"):
        assert title in result.stdout
    assert "teacher" in result.stdout and "concat" in result.stdout
    assert "rkd_angle" in result.stdout and "multi_teacher" in result.stdout


def test_list_losses_shows_each_family() -> None:
    result = runner.invoke(app, ["list", "losses"])
    assert result.exit_code == 0, result.output
    for name, family in (("kd_ce", "logits"), ("hint", "feature"), ("sp", "relation")):
        line = next(line for line in result.stdout.splitlines() if f" {name} " in line)
        assert family in line


def test_unknown_kind_is_a_usage_error() -> None:
    result = runner.invoke(app, ["list", "encoder"])
    assert result.exit_code == 2
    assert "encoders" in result.output


def test_plugins_are_imported_first(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "mmd_test_list_plugin.py").write_text("LOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mmd_test_list_plugin", raising=False)
    result = runner.invoke(app, ["list", "heads", "--plugin", "mmd_test_list_plugin"])
    assert result.exit_code == 0, result.output
    assert sys.modules["mmd_test_list_plugin"].LOADED
    result = runner.invoke(app, ["list", "--plugin", "no_such_mod_xyz"])
    assert "--plugin no_such_mod_xyz: cannot import it" in str(result.exception)


def test_list_pretrained_encoders_names_their_modality_and_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    result = runner.invoke(app, ["list", "pretrained-encoders"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") == 4}
    assert set(rows) == {"minilm", "hf_text", "speech_embedding", "mmdistill", "torch"}
    assert "text" in rows["minilm"] and "mmdistill[pretrained-text]" in rows["minilm"]
    assert "audio" in rows["speech_embedding"] and "mmdistill[pretrained-audio]" in rows["speech_embedding"]
    assert " any " in rows["mmdistill"]
    from mmdistill.teachers import TORCH_MODULES

    monkeypatch.setattr(TORCH_MODULES, "_entries", {})  # what a run without plugins sees
    result = runner.invoke(app, ["list", "teacher-modules"])
    assert result.exit_code == 0 and "register one from a module listed in plugins" in result.stdout

    @TORCH_MODULES.register("my_listed_teacher")
    class MyTeacher:
        """A teacher module of the user's code."""

    result = runner.invoke(app, ["list", "teacher-modules"], env={"COLUMNS": "250"})
    assert "my_listed_teacher" in result.stdout and "A teacher module of the user's code." in result.stdout
