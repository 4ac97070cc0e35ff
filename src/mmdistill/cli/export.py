"""``mmdistill export``: run the export stage alone against a run folder, then evaluate it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from mmdistill.cli.common import console
from mmdistill.cli.compress import (
    ConfigArg,
    LogLevelOpt,
    OverridesArg,
    QuietOpt,
    RunDirOpt,
    run_stage,
    stage_config,
)

if TYPE_CHECKING:
    pass


def export_command(
    config: ConfigArg = None,
    overrides: OverridesArg = None,
    run_dir: RunDirOpt = None,
    quiet: QuietOpt = False,
    log_level: LogLevelOpt = None,
) -> None:
    """Export saved students of a run folder to ONNX and int8, verify and time them, then evaluate.

    Exports export.variants (default: the compress source and its pruned and sparse variants).

    Writes export/STUDENT.onnx, STUDENT.int8.onnx, their .json sidecars and export/results.json.

    Example: `mmdistill export smoke --run-dir runs/smoke export.latency.enabled=false`
    """
    cfg, folder = stage_config("export", config, overrides, run_dir=run_dir, quiet=quiet,
                               log_level=log_level)
    from mmdistill.recipes.export import checked_variants

    names = checked_variants(cfg, folder)  # before loading data: a missing student fails fast
    result = run_stage(cfg, folder)
    if result.get("rank", 0) != 0:
        return
    res = json.loads((folder / "export" / "results.json").read_text())
    out = console()
    files = sorted(Path(a["path"]).name for a in res["artifacts"].values()
                   if a.get("path") and a["runtime"] == "onnxruntime")
    ship = res.get("ship")
    if ship:
        out.print(f"ship: {ship['name']} ({ship['reason']})")
    else:
        timed = "latency_rows" in res
        why = "no artifact met the accuracy bound" if timed else "latency was not measured"
        out.print(f"ship: none ({why}; see export.keep_faster and export.max_accuracy_drop)")
    out.print(f"done in {result['wall_s']:.1f} s; exported {', '.join(names)}: {', '.join(files)} and "
              f"results.json in {(folder / 'export').resolve()}", style="green")
