"""``compare_runs``: several run folders side by side (one HTML page and its Markdown twin).

Each run's ``results.json`` is read, or built first (:func:`~mmdistill.report.results.write_results`)
when it is missing or older than the files it is built from. The page holds one summary table with a
run column, a combined Pareto plot (accuracy vs batch-1 latency, and vs size) over every model of
every run, and the configuration keys whose values differ between the runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmdistill.errors import ConfigError
from mmdistill.report.analysis import pareto_frontier
from mmdistill.report.files import atomic_write_text
from mmdistill.report.html import page_html
from mmdistill.report.markdown import page_md
from mmdistill.report.page import Section
from mmdistill.report.results import RESULTS_FILE, check_run_dir, load_results, write_results
from mmdistill.report.table import DASH, Cell, Table, count, num, pct, size, text
from mmdistill.report.tables import PARETO_AXES, flag_cell, latency_ms, pareto_cost

_SOURCES = ("config.resolved.yaml", "versions.json", "metrics.jsonl", "eval/*.json", "export/results.json",
            "compress/*.json")


def ensure_results(run_dir: str | Path) -> dict[str, Any]:
    """A run's results: its ``results.json``, rebuilt first when missing or older than its sources."""
    run = check_run_dir(run_dir)
    path = run / RESULTS_FILE
    newest = max((p.stat().st_mtime for pattern in _SOURCES for p in run.glob(pattern)), default=0.0)
    if not path.is_file() or path.stat().st_mtime < newest:
        path = write_results(run)
    return load_results(path)


def run_labels(run_dirs: Sequence[Path]) -> list[str]:
    """Short unique labels: the folder name, with its parent (then a number) where names repeat."""
    names = [p.resolve().name for p in run_dirs]
    labels = [f"{p.resolve().parent.name}/{p.resolve().name}" if names.count(n) > 1 else n
              for p, n in zip(run_dirs, names, strict=True)]
    return [f"{lbl} ({i + 1})" if labels.count(lbl) > 1 else lbl for i, lbl in enumerate(labels)]


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): obj}


def config_diff_table(runs: Sequence[tuple[str, dict[str, Any]]]) -> Table:
    """The resolved-config keys (dotted) whose values differ between the runs."""
    flat = [_flatten(res.get("config") or {}) for _, res in runs]
    keys = sorted({k for f in flat for k in f} - {"name", "output_dir"})
    missing = object()
    rows = [[Cell(k)] + [Cell(text(f.get(k)) if k in f else "(absent)") for f in flat]
            for k in keys if len({repr(f.get(k, missing)) for f in flat}) > 1]
    return Table("config-diff", "Configuration differences", ["key", *[lbl for lbl, _ in runs]], rows,
                 note="resolved configuration keys whose values differ (name and output_dir left out)")


def compare_table(runs: Sequence[tuple[str, dict[str, Any]]]) -> Table:
    """Every model of every run, one row each, with the run as the first column."""
    cols = ["run", "model", "kind", "runtime", "accuracy", "macro-F1", "ECE", "agreement", "gap recovered",
            "params", "size", "b1 median ms", "b1 p95 ms", "flags"]
    rows = []
    for lbl, res in runs:
        for m in res.get("models") or []:
            rows.append([
                Cell(lbl), Cell(m["name"], tone="ship" if m.get("ship") else None), Cell(text(m.get("kind"))),
                Cell(text(m.get("runtime"))), Cell(pct(m.get("accuracy"))), Cell(pct(m.get("macro_f1"))),
                Cell(num(m.get("ece"))), Cell(pct(m.get("teacher_agreement"), 1)),
                Cell(pct(m.get("gap_recovered"), 0)), Cell(count(m.get("parameters"))),
                Cell(size(m.get("bytes_on_disk"))), Cell(num(latency_ms(m, 1), ".3f")),
                Cell(num(latency_ms(m, 1, "p95_ms"), ".3f")), flag_cell(m),
            ])
    return Table("compare", "All runs", cols, rows).drop_empty_columns(keep=5)


def _points(runs: Sequence[tuple[str, dict[str, Any]]], axis: str) -> list[dict[str, Any]]:
    return [{"name": f"{lbl}: {m['name']}", "run": lbl, "cost": pareto_cost(m, axis),
             "accuracy": m.get("accuracy"), "kind": m.get("kind"), "runtime": m.get("runtime"),
             "ship": m.get("ship")}
            for lbl, res in runs for m in res.get("models") or []]


def _pareto_section(runs: Sequence[tuple[str, dict[str, Any]]]) -> tuple[Section, dict[str, str | None]]:
    from mmdistill.report.plots import scatter_plot

    section = Section("pareto", "Trade-offs across runs")
    plots: dict[str, str | None] = {}
    rows = []
    for axis, label in PARETO_AXES.items():
        pts = _points(runs, axis)
        front = pareto_frontier([(p["name"], p["cost"], p["accuracy"]) for p in pts])
        plots[f"pareto-{axis}"] = scatter_plot(pts, front, xlabel=label, by="run",
                                               title=f"accuracy vs {label}, every run")
        section.plots.append((f"pareto-{axis}", f"accuracy vs {label}; colour: run; frontier dashed"))
        rows.append([Cell(label), Cell(" → ".join(front) or DASH)])
    section.tables.append(Table("frontiers", "Pareto frontiers over all runs",
                                ["cost", "frontier (cheapest first)"], rows))
    return section, plots


def _runs_table(runs: Sequence[tuple[str, dict[str, Any]]]) -> Table:
    rows = [[Cell(lbl), Cell(str(res.get("run_dir"))), Cell(str(len(res.get("models") or []))),
             Cell(text((res.get("ship") or {}).get("name")))] for lbl, res in runs]
    return Table("runs", "Runs", ["run", "folder", "models", "ship"], rows)


def compare_runs(run_dirs: Sequence[str | Path], out: str | Path) -> dict[str, Path]:
    """Write a side-by-side comparison of ``run_dirs`` to ``out`` (HTML) and ``out`` with suffix ``.md``.

    Args:
        run_dirs: the run folders (two or more; one gives a one-run table).
        out: the HTML file to write (``compare.html``); a ``.md`` path writes the HTML beside it.

    Returns:
        ``{"html": path, "markdown": path}``.

    Raises:
        ConfigError: no run folder given.
        CheckpointError: a path is not a run folder, or a run has no evaluation results.
        MissingDependencyError: matplotlib (the ``report`` extra) is missing.
    """
    if not run_dirs:
        raise ConfigError("compare: no run folder given; pass two or more, e.g. "
                          "`mmdistill compare runs/a runs/b -o compare.html`")
    paths = [check_run_dir(p) for p in run_dirs]
    runs = list(zip(run_labels(paths), [ensure_results(p) for p in paths], strict=True))
    out = Path(out).expanduser()
    if out.suffix == ".md":
        html_path, md_path = out.with_suffix(".html"), out
    else:
        html_path, md_path = out, out.with_suffix(".md")
    pareto, plots = _pareto_section(runs)
    diff = config_diff_table(runs)
    same = [("The resolved configurations are identical (apart from name and output_dir).", None)]
    sections = [
        Section("summary", "Summary", tables=[compare_table(runs)]),
        pareto,
        Section("config-diff", "Configuration differences", tables=[diff] if diff.rows else [],
                paragraphs=[] if diff.rows else same),
        Section("runs", "Runs", tables=[_runs_table(runs)]),
    ]
    title = "mmdistill compare: " + ", ".join(lbl for lbl, _ in runs)
    subtitle = f"{len(runs)} runs side by side"
    return {"html": atomic_write_text(html_path, page_html(title, subtitle, sections, plots)),
            "markdown": atomic_write_text(md_path, page_md(title, subtitle, sections))}
