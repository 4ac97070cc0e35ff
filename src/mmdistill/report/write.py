"""``write_report``: results.json, report.md and report.html of one run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmdistill.errors import MissingDependencyError
from mmdistill.report.files import atomic_write_text
from mmdistill.report.html import render_html
from mmdistill.report.markdown import render_markdown
from mmdistill.report.results import build_results, save_results
from mmdistill.report.tables import PARETO_AXES, frontier, pareto_cost
from mmdistill.training.kill_hook import maybe_test_kill_at

HTML_FILE = "report.html"
MARKDOWN_FILE = "report.md"


def pareto_points(models: list[dict[str, Any]], axis: str) -> list[dict[str, Any]]:
    """The points of one Pareto plot: every model whose ``axis`` cost and accuracy are known."""
    return [{"name": m["name"], "cost": pareto_cost(m, axis), "accuracy": m.get("accuracy"),
             "kind": m.get("kind"), "runtime": m.get("runtime"), "ship": m.get("ship")} for m in models]


def report_plots(results: dict[str, Any]) -> dict[str, str | None]:
    """Every plot of one run's report as a PNG data URI (None where there is nothing to draw).

    Keys: ``pareto-latency``, ``pareto-size`` and ``curves:<stage>`` per training stage.

    Raises:
        MissingDependencyError: matplotlib (the ``report`` extra) is not installed.
    """
    from mmdistill.report.plots import curves_plot, scatter_plot

    models = results.get("models") or []
    plots: dict[str, str | None] = {}
    for axis, xlabel in (("latency", "batch-1 latency, median (ms)"), ("size", "size on disk (bytes)")):
        plots[f"pareto-{axis}"] = scatter_plot(pareto_points(models, axis), frontier(models, axis),
                                               xlabel=xlabel, title=f"accuracy vs {PARETO_AXES[axis]}")
    for stage, series in (results.get("curves") or {}).items():
        plots[f"curves:{stage}"] = curves_plot(stage, series)
    return plots


def write_report(run_dir: str | Path) -> dict[str, Path]:
    """Rebuild ``results.json``, ``report.md`` and ``report.html`` of a run folder, from its files alone.

    Each file is written atomically. ``report.html`` needs matplotlib (the ``report`` extra); without
    it the other two are still written before the error is raised.

    Args:
        run_dir: a run folder whose evaluate stage has run.

    Returns:
        ``{"results": path, "markdown": path, "html": path}``.

    Raises:
        CheckpointError: not a run folder, or no evaluation results in it.
        DataError: a file of the run folder is not valid JSON or YAML.
        MissingDependencyError: matplotlib is missing (results.json and report.md are written).
    """
    results = build_results(run_dir)
    run = Path(results["run_dir"])
    out = {"results": save_results(results)}
    maybe_test_kill_at("report:results")  # test-only: results.json written, the pages not
    out["markdown"] = atomic_write_text(run / MARKDOWN_FILE, render_markdown(results))
    try:
        plots = report_plots(results)
    except MissingDependencyError as e:
        raise MissingDependencyError(
            "matplotlib", "report",
            f"Drawing report.html ({out['results']} and {out['markdown']} are written)") from e
    out["html"] = atomic_write_text(run / HTML_FILE, render_html(results, plots))
    return out
