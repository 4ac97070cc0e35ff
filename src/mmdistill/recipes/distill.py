"""Distill stage: train each ``distill.students`` variant from the run's teacher(s) with a strategy.

Reads top to bottom: teachers (loaded from the run directory, checked against the data) → student
(same spec builder as the scratch student) → strategy → teacher caches → loaders → fit → save to
``students/<variant>/``, which evaluation reports as ``student-<variant>``.

A teacher that reads raw records (frozen pretrained encoders + a trained head, or an external
model: :mod:`mmdistill.recipes.teacher`) is always read from its cache, built over the training
split's raw records with the teacher's own preprocessing.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmdistill.config.distill_checks import variant_model_config, variant_teachers
from mmdistill.config.schema import Config, DistillStudentConfig
from mmdistill.data.batch import PRIMARY_TASK
from mmdistill.data.loaders import make_loader
from mmdistill.distill.cache import TeacherCache
from mmdistill.distill.cache_chunks import ChunkedTeacherCache
from mmdistill.distill.strategies import DistillStrategy, build_strategy, distill_step
from mmdistill.errors import CheckpointError
from mmdistill.models.builders import build_model
from mmdistill.models.checkpoint import save_model
from mmdistill.models.multimodal import MultimodalModel
from mmdistill.recipes.data import TOKENIZER_FILE, DataBundle
from mmdistill.recipes.data import train_loader as make_train_loader
from mmdistill.recipes.run_teachers import (  # re-exported: the distill stage's public API
    adopt_teacher_tokenizer,
    check_distill_inputs,
    check_teacher,
    load_teachers,
    teacher_directory,
    teacher_keys,
)
from mmdistill.recipes.teacher import CACHE_DIR, raw_teacher_cache
from mmdistill.recipes.train import TrainedModel, checkpoint_extra, spec_for
from mmdistill.training.distributed import get_dist_info, is_main
from mmdistill.training.logging import MetricsLogger
from mmdistill.training.loop import fit
from mmdistill.training.progress import RunProgress
from mmdistill.training.resume import RESUME_DIR, clear_resume_state
from mmdistill.training.runtime import seed_everything

log = logging.getLogger(__name__)

__all__ = ["CACHE_DIR", "adopt_teacher_tokenizer", "attach_teacher_caches", "check_distill_inputs",
           "check_teacher", "distill_student", "load_teachers", "run_distill_stage", "teacher_directory",
           "teacher_keys"]


def _device(cfg: Config) -> torch.device:
    if cfg.device != "auto":
        return torch.device(cfg.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _tokenizer_sha(run_dir: Path) -> str | None:
    # A streamed cache is keyed by the shards' checksums, not by the token ids: key the vocabulary too.
    path = run_dir / TOKENIZER_FILE
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def attach_teacher_caches(strategy: DistillStrategy, data: DataBundle, cfg: Config, run_dir: Path,
                          device: torch.device, stage: str | None = None) -> None:
    """Give the strategy cached teacher outputs on the training split (``distill.cache``); log the source.

    ``stage`` (the training's stage name) is recorded in the in-memory caches it builds, so that
    the same stage finding its cache later starts training from the same random state
    (:meth:`TeacherCache.get_or_build <mmdistill.distill.cache.TeacherCache.get_or_build>`).
    """
    if not strategy.teacher_names:
        return
    if cfg.distill.cache == "off":
        log.info("teacher runs online: distill.cache is off (%s)", ", ".join(strategy.teacher_names))
        return
    if strategy.mixup > 0:  # checked against distill.cache: on and raw-record teachers before training
        log.info("teacher runs online: mixup %g makes every training batch new, so cached outputs do not "
                 "apply (%s)", strategy.mixup, ", ".join(strategy.teacher_names))
        return
    caches = {}
    preprocessing = cfg.data.model_dump(mode="json", include={"image", "audio", "text"})
    show = cfg.logging.progress and not cfg.logging.quiet
    tokenizer = _tokenizer_sha(run_dir) if data.train_stream is not None else None  # read once
    for name, features in strategy.required_features().items():
        teacher = strategy.teachers[name]
        if hasattr(teacher, "forward_raw"):  # its own preprocessing: keyed by the raw records, by id
            # (streamed train split: one chunked pass over its raw rows)
            cache = raw_teacher_cache(run_dir, teacher, data, cfg, features=features)  # type: ignore[arg-type]
            log.info("teacher outputs: cache %s (%s, raw records)", cache.directory, name)
            caches[name] = cache
            continue
        teacher = teacher.to(device)
        if data.train_stream is not None:  # data.stream: chunked, resumable, built in packing order
            cache = ChunkedTeacherCache.get_or_build(
                run_dir / CACHE_DIR, teacher, data.train_stream, features=features,
                extra={"split": "train", "preprocessing": preprocessing, "tokenizer": tokenizer},
                batch_size=cfg.data.eval_batch_size, progress=show, device=device,
            )
            log.info("teacher outputs: chunked cache %s (%s, streamed train split)", cache.directory, name)
            caches[name] = cache
            continue
        cache = TeacherCache.get_or_build(
            run_dir / CACHE_DIR, teacher, data.splits["train"], features=features,
            extra={"split": "train", "preprocessing": preprocessing},
            batch_size=cfg.data.eval_batch_size, progress=show, device=device, built_by=stage,
        )
        log.info("teacher outputs: cache %s (%s)", cache.directory, name)
        caches[name] = cache
    strategy.attach_caches(caches)


def distill_student(
    name: str,
    variant: DistillStudentConfig,
    data: DataBundle,
    cfg: Config,
    run_dir: Path,
    *,
    teachers: dict[str, nn.Module],
    logger: MetricsLogger,
    seed: int,
    init: MultimodalModel | None = None,
    key: str | None = None,
    extra: dict[str, Any] | None = None,
    before_save: Callable[[MultimodalModel], Any] | None = None,
    resume: bool = False,
) -> TrainedModel:
    """Train distilled student ``name`` and save its best epoch to ``run_dir/students/<name>``.

    ``init`` starts from that model (its architecture and weights: recovery fine-tuning after
    pruning, quantization-aware training) instead of building ``variant``'s architecture afresh;
    ``key`` names the config section in errors, ``extra`` adds to the saved ``model.json``, and
    ``before_save`` is applied to the trained student before it is saved (QAT bakes its
    fake-quantized weights there, so the checkpoint on disk is always loadable). A resume state is
    kept in ``students/<name>/resume`` while training; ``resume=True`` continues from it.
    """
    key = key or f"distill.students.{name}"
    train_cfg = variant.train or cfg.student.train
    seed_everything(seed)  # same seed as the scratch student: same initial weights for the same spec
    if init is not None:
        student = init
    else:
        model_cfg = variant_model_config(cfg, variant)
        mods = model_cfg.modalities or cfg.data.modalities
        student = build_model(spec_for(model_cfg, data, cfg, preset=model_cfg.preset, modalities=mods))
    own = {t: teachers[t] for t in variant_teachers(cfg, variant)}
    for t, model in own.items():
        if model.num_classes != student.num_classes:
            raise CheckpointError(f"{key}: the student predicts {student.num_classes} classes but teacher "
                                  f"'{t}' {model.num_classes}; use a teacher trained on this data")
    options = dict(variant.kwargs)
    if variant.strategy == "multi_teacher":
        options.update(teacher_weighting=variant.teacher_weighting, teacher_weights=variant.teacher_weights)
    dropout = variant.modality_dropout
    if dropout is None and train_cfg.modality_dropout > 0:
        dropout = train_cfg.modality_dropout
    task_weights = None
    if data.tasks:
        task_weights = {PRIMARY_TASK: 1.0, **{t: cfg.data.task_weights.get(t, 1.0) for t in data.tasks}}
    strategy = build_strategy(
        variant.strategy, student, key=key, teachers=own,
        terms=[t.model_dump() for t in variant.terms] if variant.terms is not None else None,
        ce_weight=variant.ce_weight, modality_dropout=dropout, label_smoothing=train_cfg.label_smoothing,
        task_weights=task_weights, mixup=variant.mixup, **options,
    )
    device = _device(cfg)
    attach_teacher_caches(strategy, data, cfg, run_dir, device, stage=f"student-{name}")
    log.info("distill %s: %s", name, strategy.extra_repr())
    dist = get_dist_info()
    per_rank_batch = max(1, cfg.data.batch_size // dist.world_size)  # global batch, as in train_model
    train_loader = make_train_loader(data, per_rank_batch, seed=seed, distributed=dist.enabled,
                                     num_workers=cfg.data.num_workers)  # streamed with data.stream
    val_loader = make_loader(data.splits["val"], cfg.data.eval_batch_size, shuffle=False, seed=seed,
                             distributed=dist.enabled)
    stage = f"student-{name}"
    out_dir = run_dir / "students" / name
    result = fit(
        strategy, train_loader, val_loader, distill_step,
        epochs=train_cfg.epochs, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay,
        warmup_steps=train_cfg.warmup, patience=train_cfg.patience, grad_clip=train_cfg.grad_clip,
        logger=logger, stage=stage, progress=cfg.logging.progress and not cfg.logging.quiet, device=device,
        resume_dir=out_dir / RESUME_DIR, resume=resume,
    )
    student = strategy.student.to("cpu").eval()
    if before_save is not None:
        before_save(student)
    if is_main():
        meta = checkpoint_extra(data, cfg) | {"stage": stage, "seed": seed, "strategy": variant.strategy,
                                              "teachers": list(own)} | (extra or {})
        save_model(student, out_dir, extra=meta)
        clear_resume_state(out_dir / RESUME_DIR)
    return TrainedModel(model=student, directory=out_dir, fit=result)


def run_distill_stage(cfg: Config, data: DataBundle, run_dir: Path, *, logger: MetricsLogger,
                      progress: RunProgress | None = None) -> dict[str, TrainedModel | None]:
    """Distill every ``cfg.distill.students`` variant and record each in ``progress``.

    Variants that ``progress`` records as done are skipped (value None); when ``progress`` is
    resuming, an interrupted variant continues from its last completed epoch.
    """
    out: dict[str, TrainedModel | None] = {}
    todo = {}
    for name, variant in cfg.distill.students.items():
        if progress is not None and progress.done("distill", f"student-{name}"):
            log.info("student-%s: done, skipped (%s)", name, run_dir / "students" / name)
            out[name] = None
        else:
            todo[name] = variant
    needed = list(dict.fromkeys(t for v in todo.values() for t in variant_teachers(cfg, v)))
    teachers = load_teachers(needed, run_dir, data, cfg)
    for name, variant in todo.items():
        log.info("student-%s: distilling with %s", name, variant.strategy)
        out[name] = distill_student(name, variant, data, cfg, run_dir, teachers=teachers, logger=logger,
                                    seed=cfg.seed, resume=progress is not None and progress.resuming)
        if progress is not None:
            progress.mark("distill", f"student-{name}")
    return out
