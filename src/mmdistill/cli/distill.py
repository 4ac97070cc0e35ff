"""``mmdistill distill``: run the distill stage alone against a run folder, then evaluate it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmdistill.cli.common import console, split_config_arg
from mmdistill.cli.run import _quote, setup_logging


def distill_command(
    config: Annotated[
        str | None,
        typer.Argument(help="YAML config file or packaged name; its distill.students are trained.",
                       show_default=False),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Overrides as dotted KEY=VALUE, e.g. distill.students.kd.strategy=feature_kd.",
                       show_default=False),
    ] = None,
    teacher: Annotated[
        str | None,
        typer.Option("--teacher", "-t", help="Teacher checkpoint folder (model.json + model.safetensors); "
                     "default: the run folder's teacher/.", show_default=False),
    ] = None,
    run_dir: Annotated[
        str | None,
        typer.Option("--run-dir", "-r", help="Run folder to read and write (default: OUTPUT_DIR/NAME).",
                     show_default=False),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only warnings, errors and the result.")
    ] = False,
) -> None:
    """Distill the config's students from a trained teacher, then evaluate the run folder.

    Data comes from the config (with the teacher's tokenizer). The scratch student is trained only
    if the run folder lacks it; every distill.students variant is (re)trained. With
    teacher.pretrained or teacher.external the run folder's own teacher is used (built there first
    if it has none); --teacher does not apply.

    Example: `mmdistill distill smoke --teacher runs/smoke/teacher --run-dir runs/smoke-kd`
    """
    from mmdistill.config import load_config
    from mmdistill.errors import ConfigError

    path, extra = split_config_arg(config, overrides)
    if quiet:
        extra.append("logging.quiet=true")
    extra.append("stages=[teacher, student, distill, evaluate]")
    if teacher is not None:
        extra.append(f"teacher.checkpoint={_quote(str(Path(teacher).expanduser().resolve()))}")
    cfg = load_config(path, extra)
    if not cfg.distill.students:
        raise ConfigError("distill.students: empty, so there is nothing to distill; add a student, e.g. "
                          "distill.students.kd.strategy=logit_kd")
    folder = Path(run_dir) if run_dir is not None else Path(cfg.output_dir) / cfg.name
    from mmdistill.teachers.spec import teacher_kind

    reuse = ["student"]
    raw = teacher_kind(cfg) != "mmdistill"
    if raw:
        # teacher.pretrained / teacher.external: no checkpoint to copy. The run folder's saved
        # teacher (teacher/teacher.json or external.json) is reused; without one, the teacher stage
        # builds it there (frozen encoders: their embeddings once, then the head is trained).
        from mmdistill.recipes.teacher import raw_teacher_saved

        if raw_teacher_saved(folder):
            reuse.append("teacher")
    elif cfg.teacher.checkpoint is None:
        own = folder / "teacher"
        if not (own / "model.json").is_file():
            raise ConfigError(f"--teacher: not given and the run folder has no teacher ({own}); pass "
                              "--teacher PATH to a checkpoint folder, or train one with `mmdistill run`")
        teacher_cfg = cfg.teacher.model_copy(update={"checkpoint": str(own.resolve())})
        cfg = cfg.model_copy(update={"teacher": teacher_cfg})
    setup_logging(cfg.logging.level, quiet=cfg.logging.quiet)
    out = console()
    if not cfg.logging.quiet:
        out.print(f"run folder: {folder}")

    from mmdistill.recipes.evaluate import format_summary
    from mmdistill.recipes.pipeline import run_pipeline

    # The teacher stage only copies the checkpoint in (an mmdistill teacher: never trains) or reuses the
    # run folder's raw-record teacher; the scratch student is reused.
    if raw and "teacher" not in reuse and not cfg.logging.quiet:
        source = "teacher.external" if cfg.teacher.external is not None else "teacher.pretrained"
        out.print(f"no teacher in {folder / 'teacher'} yet: building it from {source}")
    result = run_pipeline(cfg, folder, resume=tuple(reuse))
    if result.get("rank", 0) != 0:
        return
    if result.get("summary"):
        out.print(format_summary(result["summary"]), highlight=False)
    names = ", ".join(f"students/{n}" for n in cfg.distill.students)
    out.print(f"done in {result['wall_s']:.1f} s; distilled {names} in {folder.resolve()}", style="green")
