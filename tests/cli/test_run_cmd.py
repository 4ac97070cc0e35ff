"""`mmdistill run`: argument and override handling (the pipeline itself is replaced by a fake)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmdistill.cli.main import app
from mmdistill.config.schema import Config

runner = CliRunner()


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Config, Path, bool]]:
    seen: list[tuple[Config, Path, bool]] = []

    def run_pipeline(cfg: Config, run_dir: Path, *, resume: bool = False) -> dict:
        seen.append((cfg, run_dir, resume))
        return {"run_dir": str(run_dir), "summary": [], "wall_s": 1.25}

    module = types.ModuleType("mmdistill.recipes.pipeline")
    module.run_pipeline = run_pipeline  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mmdistill.recipes.pipeline", module)
    return seen


def test_config_overrides_and_options_reach_the_pipeline(calls, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["run", "smoke", "teacher.train.epochs=1", "data.limit=64", "--output-dir", str(tmp_path),
         "--name", "try1", "--log-level", "debug"],
    )
    assert result.exit_code == 0, result.output
    ((cfg, run_dir, resume),) = calls
    assert (cfg.teacher.train.epochs, cfg.data.limit, cfg.logging.level) == (1, 64, "DEBUG")
    assert cfg.teacher.preset == "student"  # the rest comes from smoke.yaml
    assert run_dir == tmp_path / "try1" and run_dir.is_dir() and resume is False
    assert f"results are in {(tmp_path / 'try1').resolve()}" in result.stdout
    assert "1.2 s" in result.stdout


def test_options_win_over_overrides_and_names_stay_strings(calls, tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "smoke", "name=a", "--name", "123", "-o", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    cfg = calls[0][0]
    assert cfg.name == "123" and cfg.logging.quiet
    assert "run folder" not in result.stdout  # --quiet


def test_config_may_be_left_out(calls, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["run", "stages=[teacher]", "teacher.train.epochs=2"])
    assert result.exit_code == 0, result.output
    cfg, run_dir, resume = calls[0]
    assert cfg.name == "demo" and cfg.stages == ["teacher"] and cfg.teacher.train.epochs == 2
    assert run_dir == Path("runs") / "demo" and not resume


def test_invalid_config_never_starts_the_pipeline(calls, tmp_path: Path) -> None:
    args = ["run", "smoke", "teacher.train.lr=-1", "eval.latency_repeats=0", "-o", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code != 0 and calls == []
    problems = result.exception.problems  # type: ignore[union-attr]
    assert problems == ["teacher.train.lr: must be > 0, got -1", "eval.latency_repeats: must be > 0, got 0"]
    assert not (tmp_path / "smoke").exists()


def _run_folder(tmp_path: Path) -> Path:
    """A run folder as `mmdistill run` starts it: config.resolved.yaml (the run's own config)."""
    from mmdistill.config import load_config, resolved_yaml

    run = tmp_path / "elsewhere" / "moved-run"  # not OUTPUT_DIR/NAME of its config: RUN_DIR wins
    run.mkdir(parents=True)
    cfg = load_config("smoke", ["name=orig", "teacher.train.epochs=1", "output_dir=/nonexistent",
                                "logging.quiet=true"])
    (run / "config.resolved.yaml").write_text(resolved_yaml(cfg))
    return run


def test_resume_continues_the_folder_with_its_own_config(calls, tmp_path: Path) -> None:
    run = _run_folder(tmp_path)
    result = runner.invoke(app, ["run", "--resume", str(run), "--log-level", "warning"])
    assert result.exit_code == 0, result.output
    ((cfg, run_dir, resume),) = calls
    assert resume is True and run_dir == run
    assert cfg.name == "orig" and cfg.teacher.train.epochs == 1 and cfg.data.limit == 256
    assert cfg.logging.level == "WARNING"  # --log-level / --quiet only change what is printed
    assert not cfg.logging.quiet  # the interrupted command's --quiet is not carried over
    assert f"resuming run folder: {run}" in result.stdout
    runner.invoke(app, ["run", "--resume", str(run), "-q"])
    assert calls[-1][0].logging.quiet


@pytest.mark.parametrize(
    ("args", "named"),
    [(["smoke"], "CONFIG 'smoke'"), (["teacher.train.epochs=3"], "override 'teacher.train.epochs=3'"),
     (["--name", "x"], "--name 'x'"), (["-o", "out"], "--output-dir 'out'")],
)
def test_resume_refuses_a_config_or_overrides(calls, tmp_path: Path, args: list[str], named: str) -> None:
    run = _run_folder(tmp_path)
    result = runner.invoke(app, ["run", *args, "--resume", str(run)])
    assert result.exit_code != 0 and calls == []
    (problem,) = result.exception.problems  # type: ignore[union-attr]
    assert problem.startswith(f"--resume: continues {run} with the config it started with")
    assert f"takes no {named}" in problem and "start a new run without --resume" in problem


def test_resume_names_a_missing_or_foreign_folder(calls, tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "--resume", str(tmp_path / "nope")])
    assert result.exit_code != 0 and calls == []
    assert "--resume: run folder not found, got" in result.exception.problems[0]  # type: ignore[union-attr]
    result = runner.invoke(app, ["run", "--resume", str(tmp_path)])
    problem = result.exception.problems[0]  # type: ignore[union-attr]
    assert f"{tmp_path / 'config.resolved.yaml'} not found" in problem and "not a run folder" in problem
