"""``mmdistill compress``: run the compress stage alone against a run folder, then evaluate it.

Also holds the helpers the stage-alone commands share (``compress``, ``export``): load the config
with ``stages`` forced to ``[<stage>, evaluate]``, check the run folder before any heavy work, run
the pipeline and print the summary table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mmdistill.cli.common import console, split_config_arg
from mmdistill.cli.run import setup_logging

if TYPE_CHECKING:
    from mmdistill.config.schema import Config

ConfigArg = Annotated[
    str | None,
    typer.Argument(help="YAML config file or packaged name: the one the run folder was made with.",
                   show_default=False),
]
OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(help="Overrides as dotted KEY=VALUE, e.g. compress.prune.ratio=0.3.", show_default=False),
]
RunDirOpt = Annotated[
    str | None,
    typer.Option("--run-dir", "-r", help="Existing run folder to read and write (default: OUTPUT_DIR/NAME).",
                 show_default=False),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings, errors and the result.")]
LogLevelOpt = Annotated[
    str | None, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR.", show_default=False)
]


def stage_config(
    stage: str,
    config: str | None,
    overrides: list[str] | None,
    *,
    run_dir: str | None,
    quiet: bool,
    log_level: str | None,
) -> tuple[Config, Path]:
    """Load the config for running ``stage`` alone and find (and check) its run folder.

    ``stages`` is forced to ``[stage, evaluate]``: the data, the tokenizer and every model come from
    the run folder, nothing else is trained.

    Returns:
        The validated config and the run folder.

    Raises:
        ConfigError: the config (with the overrides) is invalid.
        CheckpointError: the run folder does not exist, or has no tokenizer although the data has text.
    """
    from mmdistill.config import load_config
    from mmdistill.errors import CheckpointError

    path, extra = split_config_arg(config, overrides)
    if quiet:
        extra.append("logging.quiet=true")
    if log_level is not None:
        extra.append(f"logging.level={log_level.upper()}")
    extra.append(f"stages=[{stage}, evaluate]")
    cfg = load_config(path, extra)
    folder = Path(run_dir).expanduser() if run_dir is not None else Path(cfg.output_dir) / cfg.name
    if not folder.is_dir():
        raise CheckpointError(f"--run-dir: run folder not found, got '{folder}'; pass the folder "
                              "`mmdistill run` wrote (OUTPUT_DIR/NAME) or make one: `mmdistill run CONFIG`")
    tokenizer = folder / "tokenizer.json"
    if "text" in cfg.data.modalities and not tokenizer.is_file():
        # Without it the data stage would train a new tokenizer whose ids the saved models never saw.
        raise CheckpointError(f"{tokenizer}: missing, but data.modalities has text and the run's models read "
                              "its token ids; use the run folder the models were trained in")
    return cfg, folder


def saved_students(folder: Path) -> list[str]:
    """Names of the students saved in a run folder (``students/<name>/model.json``)."""
    base = folder / "students"
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / "model.json").is_file())


def run_stage(cfg: Config, folder: Path) -> dict[str, Any]:
    """Run the pipeline (``cfg.stages``) in ``folder`` and print its summary table (rank 0 only)."""
    setup_logging(cfg.logging.level, quiet=cfg.logging.quiet)
    if not cfg.logging.quiet:
        console().print(f"run folder: {folder}")

    from mmdistill.recipes.evaluate import format_summary
    from mmdistill.recipes.pipeline import run_pipeline

    result = run_pipeline(cfg, folder)
    if result.get("rank", 0) == 0 and result.get("summary"):
        console().print(format_summary(result["summary"]), highlight=False)
    return result


def _check_compress_inputs(cfg: Config, folder: Path) -> str:
    """The compress source's name, after checking it and (when needed) the teacher are saved."""
    from mmdistill.config.compress_checks import compress_source
    from mmdistill.errors import CheckpointError
    from mmdistill.recipes.distill import teacher_directory

    src = compress_source(cfg)
    if not (folder / "students" / src / "model.json").is_file():
        have = ", ".join(saved_students(folder)) or "(none)"
        raise CheckpointError(f"compress.source: student '{src}' is not saved in {folder / 'students'} "
                              f"(saved: {have}); set compress.source to a saved student, or train it first "
                              "with `mmdistill run` or `mmdistill distill`")
    c = cfg.compress
    if (c.prune.enabled and c.prune.recover.epochs > 0) or c.qat.enabled:
        for name in cfg.distill.teachers[:1]:
            directory = teacher_directory(folder, name)
            if not (directory / "model.json").is_file():
                raise CheckpointError(
                    f"distill.teachers: teacher '{name}' has no checkpoint at {directory}, and recovery "
                    "fine-tuning and QAT distill from it; train it into the run folder (`mmdistill run "
                    "CONFIG stages=[teacher]`), or set compress.prune.recover.epochs=0 and "
                    "compress.qat.enabled=false"
                )
    return src


def compress_command(
    config: ConfigArg = None,
    overrides: OverridesArg = None,
    run_dir: RunDirOpt = None,
    quiet: QuietOpt = False,
    log_level: LogLevelOpt = None,
) -> None:
    """Prune, sparsify, bit-sweep and QAT one saved student of a run folder, then evaluate the folder.

    The student is compress.source (default: the first distill.students entry, else scratch).

    Recovery fine-tuning and QAT distill from the run's teacher.

    Writes students/SOURCE-pruned (-sparse, -qatBITS), compress/summary.json and compress/bit_sweep.json.

    Example: `mmdistill compress smoke --run-dir runs/smoke compress.prune.ratio=0.3`
    """
    cfg, folder = stage_config("compress", config, overrides, run_dir=run_dir, quiet=quiet,
                               log_level=log_level)
    src = _check_compress_inputs(cfg, folder)
    result = run_stage(cfg, folder)
    if result.get("rank", 0) != 0:
        return
    summary = json.loads((folder / "compress" / "summary.json").read_text())
    out = console()
    made = ", ".join(f"students/{n}" for n in summary.get("variants", {})) or "no compressed student"
    if "skipped" in summary.get("qat", {}):
        out.print(f"QAT skipped: {summary['qat']['skipped']}")
    files = ["compress/summary.json"] + ([summary["bit_sweep"]] if "bit_sweep" in summary else [])
    out.print(f"done in {result['wall_s']:.1f} s; compressed students/{src} into {made}; "
              f"{', '.join(files)} in {folder.resolve()}", style="green")
