"""The `mmdistill` entry point: help, version, exit codes, and a torch-free import."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest
from typer.testing import CliRunner

from mmdistill import __version__
from mmdistill.cli.main import app, main
from mmdistill.errors import DataError

runner = CliRunner()


def test_help_lists_every_subcommand() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "distill", "compress", "export", "predict", "validate", "list", "data"):
        assert command in result.stdout


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"mmdistill {__version__}"


def test_importing_the_cli_does_not_import_torch() -> None:
    # `mmdistill --help` must answer fast: torch (seconds to import) belongs inside handlers.
    code = (
        "import sys, mmdistill.cli.main, mmdistill.config\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'mmdistill.models') if m in sys.modules)\n"
        "print(','.join(heavy))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def _fake_pipeline(monkeypatch: pytest.MonkeyPatch, fn) -> None:
    module = types.ModuleType("mmdistill.recipes.pipeline")
    module.run_pipeline = fn  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mmdistill.recipes.pipeline", module)


def test_main_prints_user_errors_in_one_line_and_exits_2(tmp_path, monkeypatch, capsys) -> None:
    def boom(cfg, run_dir, *, resume=False):
        raise DataError("label 'x' is not a class", path="m.csv", row=3)

    _fake_pipeline(monkeypatch, boom)
    with pytest.raises(SystemExit) as info:
        main(["run", "smoke", "-o", str(tmp_path), "--quiet"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error: m.csv, row 3: label 'x' is not a class" in err
    assert "Traceback" not in err


def test_main_reports_config_problems_with_exit_2(monkeypatch, capsys) -> None:
    _fake_pipeline(monkeypatch, lambda *a, **k: pytest.fail("the pipeline must not start"))
    with pytest.raises(SystemExit) as info:
        main(["run", "smoke", "data.batchsize=3"])
    assert info.value.code == 2
    assert "data.batchsize: unknown key; did you mean 'batch_size'?" in capsys.readouterr().err


def test_keyboard_interrupt_exits_130(tmp_path, monkeypatch) -> None:
    def interrupted(cfg, run_dir, *, resume=False):
        raise KeyboardInterrupt

    _fake_pipeline(monkeypatch, interrupted)
    with pytest.raises(SystemExit) as info:
        main(["run", "smoke", "-o", str(tmp_path), "-q"])
    assert info.value.code == 130


def test_usage_error_exits_2(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--no-such-option"])
    assert info.value.code == 2


def test_data_info_prints_the_builtin_description_as_json() -> None:
    import json

    result = runner.invoke(app, ["data", "info"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert len(info["classes"]) == 10 and "parity" in info["tasks"]


def test_data_build_passes_folder_and_seed(tmp_path, monkeypatch) -> None:
    seen = {}

    def build_builtin(out_dir, *, seed=0):
        seen.update(out_dir=out_dir, seed=seed)
        return {"version": "fake", "sizes": {"train": 1}}

    module = types.ModuleType("mmdistill.data.datasets.builtin_build")
    module.build_builtin = build_builtin  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mmdistill.data.datasets.builtin_build", module)
    result = runner.invoke(app, ["data", "build", "--out", str(tmp_path), "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert seen == {"out_dir": tmp_path, "seed": 3}
    assert f"written to {tmp_path.resolve()}" in result.stdout


def _fake_run_folder(root, *, students=()):
    """A run folder with a tokenizer and empty ``students/<name>/model.json`` files (never loaded)."""
    run = root / "run"
    run.mkdir()
    (run / "tokenizer.json").write_text("{}")
    for name in students:
        (run / "students" / name).mkdir(parents=True)
        (run / "students" / name / "model.json").write_text("{}")
    return run


@pytest.mark.parametrize("command", ["compress", "export"])
def test_stage_commands_check_the_run_folder_before_any_work(command, tmp_path, monkeypatch, capsys) -> None:
    _fake_pipeline(monkeypatch, lambda *a, **k: pytest.fail("the pipeline must not start"))
    missing = tmp_path / "missing"
    with pytest.raises(SystemExit) as info:
        main([command, "smoke", "--run-dir", str(missing), "-q"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"--run-dir: run folder not found, got '{missing}'" in err and "Traceback" not in err
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(SystemExit) as info:
        main([command, "smoke", "--run-dir", str(bare), "-q"])
    assert info.value.code == 2
    assert f"{bare / 'tokenizer.json'}: missing" in capsys.readouterr().err


def test_compress_command_names_the_missing_source_and_teacher(tmp_path, monkeypatch, capsys) -> None:
    _fake_pipeline(monkeypatch, lambda *a, **k: pytest.fail("the pipeline must not start"))
    run = _fake_run_folder(tmp_path, students=["scratch"])
    with pytest.raises(SystemExit) as info:
        main(["compress", "smoke", "--run-dir", str(run), "-q"])  # smoke compresses distill student 'kd'
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "compress.source: student 'kd' is not saved" in err and "(saved: scratch)" in err
    with pytest.raises(SystemExit) as info:
        main(["compress", "smoke", "compress.source=scratch", "--run-dir", str(run), "-q"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"teacher 'teacher' has no checkpoint at {run / 'teacher'}" in err
    assert "compress.prune.recover.epochs=0" in err


def test_compress_command_runs_only_compress_and_evaluate(tmp_path, monkeypatch, capsys) -> None:
    import json

    run = _fake_run_folder(tmp_path, students=["scratch"])
    seen = {}

    def fake(cfg, run_dir, *, resume=False):
        seen.update(stages=cfg.stages, run_dir=run_dir)
        (run_dir / "compress").mkdir()
        summary = {"variants": {"scratch-sparse": {}}, "bit_sweep": "compress/bit_sweep.json"}
        (run_dir / "compress" / "summary.json").write_text(json.dumps(summary))
        return {"summary": [], "wall_s": 1.0, "rank": 0}

    _fake_pipeline(monkeypatch, fake)
    with pytest.raises(SystemExit) as info:
        main(["compress", "smoke", "compress.source=scratch", "compress.prune.enabled=false",
              "compress.sparsity.enabled=true", "--run-dir", str(run), "-q"])
    assert info.value.code == 0
    assert seen == {"stages": ["compress", "evaluate"], "run_dir": run}
    out = capsys.readouterr().out
    assert "compressed students/scratch into students/scratch-sparse" in out
    assert "compress/bit_sweep.json" in out


def test_export_command_names_missing_variants(tmp_path, monkeypatch, capsys) -> None:
    _fake_pipeline(monkeypatch, lambda *a, **k: pytest.fail("the pipeline must not start"))
    run = _fake_run_folder(tmp_path, students=["scratch"])
    with pytest.raises(SystemExit) as info:
        main(["export", "smoke", "--run-dir", str(run), "-q"])  # default: kd and its variants
    assert info.value.code == 2
    assert "neither student 'kd' (the compress source)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["export", "smoke", "export.variants=[scratch, kd]", "--run-dir", str(run), "-q"])
    assert info.value.code == 2
    assert "export.variants: ['kd'] not saved" in capsys.readouterr().err
