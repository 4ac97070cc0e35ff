"""`mmdistill report` and `mmdistill compare`: files written, paths printed, user errors exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmdistill.cli.main import app, main

runner = CliRunner()


def _run_folder(root: Path, name: str = "r", acc: float = 0.8) -> Path:
    """The least a run folder needs for a report: its config and one evaluated model per kind."""
    run = root / name
    (run / "eval").mkdir(parents=True)
    (run / "config.resolved.yaml").write_text(f"name: {name}\nseed: 0\nstages: [teacher, evaluate]\n")
    rows = []
    for model, a, params in (("teacher", 0.9, 1000), ("student-scratch", acc, 100)):
        res = {"name": model, "modalities": ["image"], "parameters": params, "bytes_on_disk": 4 * params,
               "accuracy": a, "confusion_matrix": [[3, 1], [1, 3]], "class_names": ["a", "b"]}
        (run / "eval" / f"{model}.json").write_text(json.dumps(res))
        rows.append({"model": model, "modalities": "image", "parameters": params, "accuracy": a})
    (run / "eval" / "summary.json").write_text(json.dumps(rows))
    return run


def test_report_writes_results_html_and_markdown_and_prints_the_paths(tmp_path: Path) -> None:
    run = _run_folder(tmp_path)
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    for name in ("results.json", "report.html", "report.md"):
        assert (run / name).is_file()
        assert str((run / name).resolve()) in result.stdout
    assert json.loads((run / "results.json").read_text())["schema"] == "mmdistill.results"


def _a_file(root: Path) -> Path:
    (root / "f.txt").write_text("x")
    return root / "f.txt"


def _run_without_eval(root: Path) -> Path:
    run = _run_folder(root)
    for p in (run / "eval").iterdir():
        p.unlink()
    (run / "eval").rmdir()
    return run


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "missing", "run folder not found"),
        (_a_file, "is not a directory"),
        (lambda root: root, "is not a run folder: it has no config.resolved.yaml"),
        (_run_without_eval, "no evaluation results (eval/<model>.json); run the evaluate stage first"),
    ],
    ids=["missing", "file", "not-a-run", "no-eval"],
)
def test_report_user_errors_exit_2_with_one_clear_line(tmp_path: Path, capsys, make, message) -> None:
    with pytest.raises(SystemExit) as info:
        main(["report", str(make(tmp_path))])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_compare_writes_one_page_for_several_runs(tmp_path: Path) -> None:
    a, b = _run_folder(tmp_path, "a", 0.7), _run_folder(tmp_path, "b", 0.75)
    out = tmp_path / "cmp" / "both.html"
    result = runner.invoke(app, ["compare", str(a), str(b), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert str(out) in result.stdout and out.with_suffix(".md").is_file()
    assert (a / "results.json").is_file() and (b / "results.json").is_file()  # built first
    md = out.with_suffix(".md").read_text()
    assert "| a | student-scratch |" in md and "| b | student-scratch |" in md


def test_compare_of_a_folder_that_is_not_a_run_exits_2(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["compare", str(_run_folder(tmp_path)), str(tmp_path / "nope"), "-o", str(tmp_path / "c.html")])
    assert info.value.code == 2 and "run folder not found" in capsys.readouterr().err
    assert not (tmp_path / "c.html").exists()


def test_help_lists_both_commands_without_loading_the_report_or_matplotlib() -> None:
    result = runner.invoke(app, ["--help"])
    assert "report" in result.stdout and "compare" in result.stdout
    code = ("import sys, mmdistill.cli.main\n"
            "print(','.join(m for m in ('torch', 'matplotlib', 'mmdistill.report') if m in sys.modules))\n"
            "import mmdistill.report\n"
            "print(','.join(m for m in ('torch', 'matplotlib') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["", ""]  # nothing heavy, even after importing mmdistill.report
