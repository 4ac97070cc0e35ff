"""The report's plots as inline PNG data URIs (matplotlib, Agg canvas; nothing is fetched or shown).

matplotlib is imported inside :func:`_figure` (the ``report`` extra), so importing this module, the
CLI or :mod:`mmdistill.report` costs nothing until a plot is drawn. Figures are built on
``matplotlib.figure.Figure`` directly, never through pyplot: no global state, no GUI backend.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import Any

from mmdistill.errors import MissingDependencyError
from mmdistill.report.curves import loss_terms

KIND_COLORS = {"teacher": "#d62728", "baseline": "#7f7f7f", "student": "#1f77b4", "compressed": "#9467bd",
               "exported": "#2ca02c"}
RUNTIME_MARKERS = {"torch": "o", "onnxruntime": "s"}
RUN_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _figure(width: float, height: float) -> Any:
    """A new constrained-layout figure (inches); raises MissingDependencyError without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise MissingDependencyError("matplotlib", "report", "Drawing the plots of report.html") from e
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def to_data_uri(fig: Any) -> str:
    """Render ``fig`` to PNG and return it as a ``data:image/png;base64,...`` URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def label(s: str) -> str:
    """Text safe for matplotlib: ``$`` would start math mode (and fail on unbalanced input)."""
    return str(s).replace("\\", "\\\\").replace("$", r"\$")


def _use_log(values: Sequence[float]) -> bool:
    pos = [v for v in values if v > 0]
    return len(pos) == len(values) and len(pos) > 1 and max(pos) / min(pos) >= 10


def _log_x(ax: Any) -> None:
    """Log x axis labelled at 1, 2 and 5 per decade in plain numbers (0.2, 1, 50), no minor labels.

    Matplotlib's default labels minor ticks as ``2x10^-1`` when the range spans under two decades,
    and those labels overlap.
    """
    from matplotlib import ticker

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def _label_points(ax: Any, pts: Sequence[dict[str, Any]], bold: set[str]) -> None:
    """Name every point, moving a label up or down (in steps of one line) off labels already placed."""
    ax.autoscale_view()
    placed: list[tuple[float, float, float, float]] = []  # label boxes in display pixels
    for p in sorted(pts, key=lambda q: (q["cost"], -q["accuracy"])):
        x, y = ax.transData.transform((p["cost"], 100 * p["accuracy"]))
        width, height = 4.3 * len(str(p["name"])) + 4, 10.0  # ~7 pt text at 100 dpi
        for dy in (4, -12, 14, -22, 24, -32, 34, -42, 44):
            box = (x + 5, y + dy, x + 5 + width, y + dy + height)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        placed.append(box)
        ax.annotate(label(p["name"]), (p["cost"], 100 * p["accuracy"]), xytext=(5, dy),
                    textcoords="offset pixels", fontsize=7,
                    fontweight="bold" if p["name"] in bold else "normal", zorder=5)


def scatter_plot(
    points: Sequence[dict[str, Any]], frontier: Sequence[str], *, xlabel: str, title: str, by: str = "kind"
) -> str | None:
    """Accuracy (y, %) versus cost (x) with the Pareto frontier drawn and every point labelled.

    Args:
        points: dicts with ``name`` (unique label), ``cost``, ``accuracy``, ``kind``, ``runtime``,
            ``ship`` and, for ``by="run"``, ``run``.
        frontier: the labels on the frontier, in cost order
            (:func:`~mmdistill.report.analysis.pareto_frontier`).
        xlabel: the x-axis label (with its unit).
        title: the plot title.
        by: colour points by model ``kind`` or by ``run`` (for ``mmdistill compare``).

    Returns:
        A PNG data URI, or None when no point has both values.
    """
    pts = [p for p in points if p.get("cost") is not None and p.get("accuracy") is not None
           and math.isfinite(p["cost"]) and math.isfinite(p["accuracy"])]
    if not pts:
        return None
    fig = _figure(6.6, 4.4)
    ax = fig.add_subplot()
    on_front = set(frontier)
    runs = sorted({str(p.get("run")) for p in pts}) if by == "run" else []
    seen: set[str] = set()
    for p in pts:
        group = str(p.get("run")) if by == "run" else str(p.get("kind"))
        if by == "run":
            color = RUN_COLORS[runs.index(group) % len(RUN_COLORS)]
        else:
            color = KIND_COLORS.get(group, "black")
        front = p["name"] in on_front
        ax.scatter([p["cost"]], [100 * p["accuracy"]], s=70 if front else 36, c=color,
                   marker=RUNTIME_MARKERS.get(str(p.get("runtime")), "^"),
                   edgecolors="black" if front else "none", linewidths=1.2, zorder=3,
                   alpha=1.0 if front else 0.75, label=label(group) if group not in seen else None)
        seen.add(group)
        if p.get("ship"):
            ax.scatter([p["cost"]], [100 * p["accuracy"]], s=260, marker="*", facecolors="none",
                       edgecolors="#b8860b", linewidths=1.5, zorder=4)
    if _use_log([p["cost"] for p in pts]):
        _log_x(ax)
    _label_points(ax, pts, on_front)
    by_name = {p["name"]: p for p in pts}
    front_pts = [by_name[n] for n in frontier if n in by_name]
    if front_pts:
        ax.step([p["cost"] for p in front_pts], [100 * p["accuracy"] for p in front_pts], where="post",
                color="black", linewidth=1.0, linestyle="--", zorder=2, label="Pareto frontier")
    ax.set_xlabel(label(xlabel))
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(label(title), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return to_data_uri(fig)


def curves_plot(stage: str, series: dict[str, list[list[float]]]) -> str | None:
    """One stage's training curves: every loss term (left axis) and validation accuracy (right axis)."""
    losses = loss_terms(series)
    acc = series.get("val/accuracy")
    if not losses and not acc:
        return None
    fig = _figure(4.3, 2.9)
    ax = fig.add_subplot()
    for key in losses:
        xs, ys = zip(*series[key], strict=True)
        style = "--" if key.startswith("val/") else "-"
        width = 2.0 if key in ("train/loss", "loss") else 1.2
        ax.plot(xs, ys, style, marker="o", markersize=3, linewidth=width, label=label(key))
    from matplotlib.ticker import MaxNLocator

    epochs = sorted({x for key in [*losses, "val/accuracy"] for x, _ in series.get(key, [])})
    if len(epochs) <= 12:  # few epochs: a tick at each (MaxNLocator falls back to 0.96 ... 1.04 for one)
        ax.set_xticks(epochs)
        if len(epochs) == 1:
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(label(stage), fontsize=10)
    ax.grid(True, alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    if acc:
        ax2 = ax.twinx()
        xs, ys = zip(*acc, strict=True)
        line = ax2.plot(xs, [100 * y for y in ys], ":", color="#2ca02c", marker="s", markersize=3,
                        linewidth=1.5, label="val/accuracy (%)")
        ax2.set_ylabel("val accuracy (%)")
        handles, names = handles + line, names + ["val/accuracy (%)"]
    ax.legend(handles, names, fontsize=6, loc="best")
    return to_data_uri(fig)
