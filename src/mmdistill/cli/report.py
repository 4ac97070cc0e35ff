"""``mmdistill report`` and ``mmdistill compare``: the run report, rebuilt from run folders alone.

Both handlers import :mod:`mmdistill.report` inside, so ``mmdistill --help`` loads neither it nor
matplotlib (which loads only when a plot is drawn); torch is never needed.
"""

from __future__ import annotations

from typing import Annotated

import typer

from mmdistill.cli.common import console


def report_command(
    run_dir: Annotated[str, typer.Argument(help="Run folder written by `mmdistill run` (OUTPUT_DIR/NAME).",
                                           show_default=False)],
) -> None:
    """Rebuild results.json, report.html and report.md of a run folder from its files alone.

    Needs the evaluate stage's results (eval/); reads the export and compress results and the training
    metrics when present. Trains, evaluates and times nothing.

    Example: `mmdistill report runs/demo`
    """
    from mmdistill.report import write_report

    paths = write_report(run_dir)
    out = console()
    for label, path in (("results", paths["results"]), ("report", paths["html"]),
                        ("markdown", paths["markdown"])):
        out.print(f"{label}: {path}")


def compare_command(
    run_dirs: Annotated[list[str], typer.Argument(help="Two or more run folders to put side by side.",
                                                  show_default=False)],
    output: Annotated[
        str, typer.Option("--output", "-o", help="HTML file to write; the .md twin is written beside it.")
    ] = "compare.html",
) -> None:
    """Put several runs side by side: one table with a run column, a combined Pareto plot, config differences.

    A run without an up-to-date results.json gets it built first.

    Example: `mmdistill compare runs/a runs/b -o compare.html`
    """
    from mmdistill.report import compare_runs

    paths = compare_runs(run_dirs, output)
    out = console()
    out.print(f"compare: {paths['html']}")
    out.print(f"markdown: {paths['markdown']}")
