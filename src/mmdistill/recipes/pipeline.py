"""The whole pipeline behind ``mmdistill run``: one config, one run directory, stages in order.

Stages (``cfg.stages``): ``teacher`` → ``baselines`` (one unimodal model per modality) →
``student`` (from scratch) → ``distill`` (the ``distill.students`` variants) → ``compress``
(pruning, sparsity, bit sweep, QAT of ``compress.source``) → ``export`` (ONNX, int8 for ONNX Runtime,
verification, per-runtime latency) → ``evaluate``. Every stage reads and writes only the run
directory, so a stage left out of ``stages`` reuses what an earlier run saved there.
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

from mmdistill.config.loading import resolved_yaml
from mmdistill.config.schema import STAGES, Config
from mmdistill.recipes.data import prepare_data
from mmdistill.recipes.distill import adopt_teacher_tokenizer, check_distill_inputs, run_distill_stage
from mmdistill.recipes.evaluate import evaluate_run
from mmdistill.recipes.train import spec_for, train_model
from mmdistill.training.distributed import barrier, cleanup, init_distributed, is_main
from mmdistill.training.logging import MetricsLogger
from mmdistill.training.runtime import describe_machine, set_threads

log = logging.getLogger(__name__)

_VERSIONED = ("mmdistill", "torch", "numpy", "tokenizers", "safetensors", "pillow", "soundfile", "pydantic")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a run's numbers depend on."""
    out: dict[str, str | None] = {}
    for name in _VERSIONED:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def _write_run_header(cfg: Config, run_dir: Path, world_size: int) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.resolved.yaml").write_text(resolved_yaml(cfg))
    info = {"packages": package_versions(), "machine": describe_machine(), "seed": cfg.seed,
            "world_size": world_size}
    (run_dir / "versions.json").write_text(json.dumps(info, indent=2))


def run_pipeline(cfg: Config, run_dir: Path, *, resume: bool | Collection[str] = False) -> dict[str, Any]:
    """Run the configured stages into ``run_dir`` and return the evaluation summary.

    Args:
        cfg: a validated configuration.
        run_dir: the run directory (created if needed).
        resume: reuse models already saved in ``run_dir`` instead of retraining them: True for every
            stage, or the names of the stages that reuse (``{"student"}``).

    Returns:
        ``{"run_dir": str, "summary": [row, ...], "wall_s": float, "world_size": int, "rank": int}``
        (the summary is empty on ranks other than 0).
    """
    t0 = time.perf_counter()
    reuse = set(STAGES) if resume is True else set(resume or ())
    for module in cfg.plugins:
        importlib.import_module(module)
    set_threads(cfg.threads)
    dist = init_distributed()
    try:
        if is_main():
            _write_run_header(cfg, run_dir, dist.world_size)
        logger = MetricsLogger(
            run_dir / "metrics.jsonl" if is_main() else None,
            quiet=cfg.logging.quiet,
            tensorboard_dir=run_dir / "tensorboard" if cfg.logging.tensorboard else None,
        )
        check_distill_inputs(cfg, run_dir)  # fail now, not after training the teacher
        if "teacher" in cfg.stages and cfg.teacher.checkpoint:
            # Before the data stage: a loaded teacher only understands its own tokenizer's ids.
            adopt_teacher_tokenizer(Path(cfg.teacher.checkpoint), run_dir)
        data = prepare_data(cfg, run_dir)
        log.info(
            "data: %s, %s", data.source, ", ".join(f"{s}={len(ds)}" for s, ds in data.splits.items())
        )

        def stage(name: str, directory: Path, spec: dict, train_cfg, seed: int) -> None:
            group = {"teacher": "teacher", "baseline": "baselines", "student": "student"}[name.split("-")[0]]
            if group in reuse and (directory / "model.json").exists():
                log.info("%s: reusing %s", name, directory)
                return
            log.info("%s: training on %s with %s", name, "+".join(spec["encoders"]), data.source)
            train_model(spec, data, cfg, train_cfg, directory, stage=name, logger=logger, seed=seed)

        if "teacher" in cfg.stages:
            if cfg.teacher.checkpoint:
                log.info("teacher: loaded from %s (not trained)", cfg.teacher.checkpoint)
                if is_main():
                    from mmdistill.models.checkpoint import load_model, save_model

                    # Keep the checkpoint's metadata (classes, tokenizer, preprocessing) and say where it
                    # came from: the run directory must describe its teacher on its own.
                    model, extra = load_model(Path(cfg.teacher.checkpoint))
                    save_model(model, run_dir / "teacher", extra={**extra, "source": cfg.teacher.checkpoint})
            else:
                mods = cfg.teacher.modalities or cfg.data.modalities
                spec = spec_for(cfg.teacher, data, cfg, preset=cfg.teacher.preset, modalities=mods)
                stage("teacher", run_dir / "teacher", spec, cfg.teacher.train, cfg.seed)
        if "baselines" in cfg.stages and cfg.baselines.unimodal:
            for m in cfg.data.modalities:
                spec = spec_for(None, data, cfg, preset=cfg.baselines.preset, modalities=[m])
                stage(f"baseline-{m}", run_dir / "baselines" / m, spec, cfg.baselines.train, cfg.seed)
        if "student" in cfg.stages:
            mods = cfg.student.modalities or cfg.data.modalities
            spec = spec_for(cfg.student, data, cfg, preset=cfg.student.preset, modalities=mods)
            stage("student-scratch", run_dir / "students" / "scratch", spec, cfg.student.train, cfg.seed)

        if "distill" in cfg.stages and cfg.distill.students:
            barrier()  # under torchrun, rank 0 saved the teacher: every rank loads it from disk
            run_distill_stage(cfg, data, run_dir, logger=logger, resume="distill" in reuse)

        if "compress" in cfg.stages:
            from mmdistill.recipes.compress import run_compress_stage

            barrier()
            run_compress_stage(cfg, data, run_dir, logger=logger)
        if "export" in cfg.stages and is_main():
            from mmdistill.recipes.export import run_export_stage

            run_export_stage(cfg, data, run_dir)
        barrier()

        summary: list[dict[str, Any]] = []
        if "evaluate" in cfg.stages and is_main():
            summary = evaluate_run(run_dir, data, cfg)
        wall = time.perf_counter() - t0
        if is_main():
            log.info("run finished in %.1f s: %s", wall, run_dir)
        return {"run_dir": str(run_dir), "summary": summary, "wall_s": wall, "world_size": dist.world_size,
                "rank": dist.rank}
    finally:
        cleanup()
