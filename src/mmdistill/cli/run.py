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
        str | None,
        typer.Option("--resume", metavar="RUN_DIR", show_default=False,
                     help="Continue the interrupted run in RUN_DIR with its own config "
                          "(RUN_DIR/config.resolved.yaml): completed stages are skipped, the interrupted "
                          "one continues from its last completed epoch. Give no CONFIG or overrides."),
    ] = None,
) -> None:
    """Train the teacher, the baselines and the student, then evaluate them all.

    Example: `mmdistill run smoke data.limit=128 --name try1`; after an interruption,
    `mmdistill run --resume runs/try1`.
    """
    from mmdistill.config import load_config

    path, extra = split_config_arg(config, overrides)
    if resume is not None:
        run_dir = resume_target(resume, config=path, overrides=extra, output_dir=output_dir, name=name)
        # What is printed follows this command's flags, not the interrupted one's.
        path, extra = str(run_dir / RESOLVED_CONFIG), [f"logging.quiet={str(quiet).lower()}"]
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

    if resume is None:
        run_dir = Path(cfg.output_dir) / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    out = console()
    if not cfg.logging.quiet:
        out.print(f"{'resuming run folder' if resume is not None else 'run folder'}: {run_dir}")

    from mmdistill.recipes.evaluate import format_summary
    from mmdistill.recipes.pipeline import run_pipeline

    result = run_pipeline(cfg, run_dir, resume=resume is not None)
    if result.get("rank", 0) != 0:
        return  # under torchrun, rank 0 reports
    if result.get("summary"):
        out.print(format_summary(result["summary"]), highlight=False)
    wall = result.get("wall_s") if isinstance(result, dict) else None
    took = f" in {wall:.1f} s" if isinstance(wall, int | float) else ""
    out.print(f"done{took}; results are in {run_dir.resolve()}", style="green")
    html = (result.get("report") or {}).get("html")
    if html:
        out.print(f"report: {Path(html).resolve()}", highlight=False)


def _quote(value: str) -> str:
    # The value goes through YAML like any override: quoting keeps "123" or "null" a string.
    return "'" + value.replace("'", "''") + "'"


RESOLVED_CONFIG = "config.resolved.yaml"


def resume_target(
    run_dir: str, *, config: str | None, overrides: list[str], output_dir: str | None, name: str | None
) -> Path:
    """Check a ``--resume RUN_DIR`` request and return the run folder.

    A resumed run uses exactly the config it started with, so that it ends with the numbers an
    uninterrupted run would have: a CONFIG, KEY=VALUE overrides, ``--output-dir`` or ``--name``
    are refused (``--quiet`` and ``--log-level`` only change what is printed, and are allowed).

    Raises:
        ConfigError: naming the offending argument or the missing file, and the fix.
    """
    from mmdistill.errors import ConfigError

    given = [f"CONFIG {config!r}"] if config is not None else []
    given += [f"override {o!r}" for o in overrides]
    given += [f"--output-dir {output_dir!r}"] if output_dir is not None else []
    given += [f"--name {name!r}"] if name is not None else []
    if given:
        raise ConfigError(
            f"--resume: continues {run_dir} with the config it started with ({run_dir}/{RESOLVED_CONFIG}), "
            f"so it takes no {', '.join(given)}; leave them out, or start a new run without --resume"
        )
    folder = Path(run_dir).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"--resume: run folder not found, got '{run_dir}'; pass the folder of the "
                          "interrupted run (OUTPUT_DIR/NAME, e.g. runs/demo)")
    if not (folder / RESOLVED_CONFIG).is_file():
        raise ConfigError(f"--resume: {folder / RESOLVED_CONFIG} not found, so '{run_dir}' is not a run "
                          "folder started by `mmdistill run`; pass the run folder itself (OUTPUT_DIR/NAME)")
    return folder
