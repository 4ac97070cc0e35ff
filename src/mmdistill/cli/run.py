"""``mmdistill run``: load and validate a config, then run the whole pipeline into its run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmdistill.cli.common import console, split_config_arg


def setup_logging(level: str, *, quiet: bool) -> None:
    """Route library logging through rich; ``quiet`` keeps warnings and errors only."""
    import logging

    from rich.logging import RichHandler

    handler = RichHandler(console=console(stderr=True), show_path=False, markup=False)
    logging.basicConfig(
        level="WARNING" if quiet else level, format="%(message)s", handlers=[handler], force=True
    )


def run_command(
    config: Annotated[
        str | None,
        typer.Argument(
            help="YAML config file or packaged name (default: the demo, 'default').", show_default=False
        ),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Overrides as dotted KEY=VALUE, e.g. teacher.train.epochs=3 data.limit=512.",
                       show_default=False),
    ] = None,
    output_dir: Annotated[
        str | None, typer.Option("--output-dir", "-o", help="Parent folder of run folders.")
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Run name (run folder = OUTPUT_DIR/NAME).")
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only warnings, errors and the result.")
    ] = False,
    log_level: Annotated[
        str | None, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR.", show_default=False)
    ] = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Reuse models already saved in the run folder instead of retraining."),
    ] = False,
) -> None:
    """Train the teacher, the baselines and the student, then evaluate them all.

    Example: `mmdistill run smoke data.limit=128 --name try1`
    """
    from mmdistill.config import load_config

    path, extra = split_config_arg(config, overrides)
    # Options are plain overrides applied last, so they win over the file and KEY=VALUE alike.
    if output_dir is not None:
        extra.append(f"output_dir={_quote(output_dir)}")
    if name is not None:
        extra.append(f"name={_quote(name)}")
    if quiet:
        extra.append("logging.quiet=true")
    if log_level is not None:
        extra.append(f"logging.level={log_level.upper()}")
    cfg = load_config(path, extra)
    setup_logging(cfg.logging.level, quiet=cfg.logging.quiet)

    run_dir = Path(cfg.output_dir) / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    out = console()
    if not cfg.logging.quiet:
        out.print(f"run folder: {run_dir}")

    from mmdistill.recipes.evaluate import format_summary
    from mmdistill.recipes.pipeline import run_pipeline

    result = run_pipeline(cfg, run_dir, resume=resume)
    if result.get("rank", 0) != 0:
        return  # under torchrun, rank 0 reports
    if result.get("summary"):
        out.print(format_summary(result["summary"]), highlight=False)
    wall = result.get("wall_s") if isinstance(result, dict) else None
    took = f" in {wall:.1f} s" if isinstance(wall, int | float) else ""
    out.print(f"done{took}; results are in {run_dir.resolve()}", style="green")


def _quote(value: str) -> str:
    # The value goes through YAML like any override: quoting keeps "123" or "null" a string.
    return "'" + value.replace("'", "''") + "'"
