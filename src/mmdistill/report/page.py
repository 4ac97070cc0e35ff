"""What the report says, in order, as :class:`Section` objects that html.py and markdown.py render.

One list of sections feeds both files, so ``report.md`` carries exactly the tables of ``report.html``
(the HTML adds the plots named in :attr:`Section.plots`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmdistill.report import tables as t
from mmdistill.report import tables_run as tr
from mmdistill.report.table import Table, pct


@dataclass
class Section:
    """A titled part of the report: paragraphs ``(text, tone)``, tables, plot keys, a preformatted block."""

    key: str
    title: str
    paragraphs: list[tuple[str, str | None]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    plots: list[tuple[str, str]] = field(default_factory=list)  # (plot key, caption)
    pre: str | None = None
    collapsed: bool = False


def _nonempty(*tables: Table) -> list[Table]:
    return [x for x in tables if x.rows]


def decision_section(results: dict[str, Any]) -> Section:
    """Which model ships and why, every compressed-but-not-faster flag, and what the run lacks."""
    sec = Section("decision", "Decision")
    ship = results.get("ship")
    if ship:
        sec.paragraphs.append((f"Ship {ship['name']} (test accuracy {pct(ship.get('accuracy'))}): "
                               f"{ship.get('reason')}.", "ship"))
        rule = ship.get("rule") or {}
        if rule.get("keep_faster") is not None:
            drop = rule.get("max_accuracy_drop")
            sec.paragraphs.append((f"Rule: export.keep_faster = {rule['keep_faster']}, "
                                   f"export.max_accuracy_drop = {drop} points.", None))
    elif results.get("export") is not None:
        sec.paragraphs.append(("No artifact is shipped: none was timed at batch 1 within "
                               "export.max_accuracy_drop of its source's eager accuracy.", "warn"))
    else:
        sec.paragraphs.append(("No ship decision: the export stage did not run (add 'export' to stages).",
                               None))
    for m in results.get("models") or []:
        for text, tone in t.flags(m):
            if tone == "warn":
                sec.paragraphs.append((f"{m['name']} is {text}: compressed, but not faster.", "warn"))
    for note in results.get("notes") or []:
        sec.paragraphs.append((f"Note: {note}.", None))
    return sec


def report_sections(results: dict[str, Any]) -> list[Section]:
    """Every section of one run's report, in reading order."""
    models = results.get("models") or []
    curves = results.get("curves") or {}
    lat_front = t.frontier_table(models, "latency")
    size_front = t.frontier_table(models, "size")
    secs = [
        decision_section(results),
        Section("summary", "Summary", tables=[t.summary_table(models)]),
        Section("pareto", "Trade-offs (Pareto frontiers)", tables=[lat_front, size_front],
                plots=[("pareto-latency", "test accuracy vs batch-1 latency (median); frontier dashed, "
                        "shipped model starred"),
                       ("pareto-size", "test accuracy vs size on disk; frontier dashed")]),
        Section("robustness", "Missing modalities and modality contributions",
                tables=_nonempty(t.subsets_table(models), t.drop_one_table(models),
                                 t.alignment_table(models))),
    ]
    if any(m.get("tasks") for m in models):
        secs.append(Section("tasks", "Extra tasks", tables=[t.tasks_table(models)]))
    secs.append(Section("training", "Training curves", tables=_nonempty(tr.stages_table(curves)),
                        plots=[(f"curves:{stage}", stage) for stage in curves]))
    picks = t.confusion_picks(models)
    secs.append(Section("confusion", "Confusion matrices",
                        tables=[t.confusion_table(lbl, m) for lbl, m in picks]))
    compress = results.get("compress")
    if compress:
        secs.append(Section("compression", "Compression",
                            tables=_nonempty(tr.compress_table(compress), tr.bit_sweep_table(compress))))
    if results.get("export"):
        secs.append(Section("export", "Export and verification",
                            tables=_nonempty(tr.export_table(results["export"]))))
    secs.append(Section("config", "Resolved configuration", collapsed=True,
                        pre=yaml.safe_dump(results.get("config") or {}, sort_keys=False, allow_unicode=True)))
    env = Section("environment", "Machine and package versions", tables=_nonempty(
        tr.key_value_table("machine", "Machine", results.get("machine")),
        tr.key_value_table("packages", "Packages", results.get("packages"))))
    env.paragraphs.append((f"seed {results.get('seed')}, world size {results.get('world_size')}; report "
                           f"built {results.get('created')} by mmdistill {results.get('mmdistill_version')} "
                           f"from {results.get('run_dir')}.", None))
    secs.append(env)
    for sec in secs:
        if not sec.tables and not sec.plots and not sec.paragraphs and sec.pre is None:
            sec.paragraphs.append(("Nothing measured for this section in this run.", None))
    return secs


def run_title(results: dict[str, Any]) -> str:
    """``mmdistill report: <run name>`` (the config's name, else the folder's)."""
    name = (results.get("config") or {}).get("name") or Path(str(results.get("run_dir", ""))).name
    return f"mmdistill report: {name}"
