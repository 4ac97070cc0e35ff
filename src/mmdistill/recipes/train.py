"""Supervised training of one model (teacher, unimodal baseline or from-scratch student).

Reads top to bottom: spec → model → loaders → fit → save. Returns the trained model (best
validation epoch) and where it was saved.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from mmdistill.config.schema import Config, ModelConfig, TrainConfig
from mmdistill.data.batch import PRIMARY_TASK
from mmdistill.data.loaders import make_loader
from mmdistill.models.builders import build_model, model_spec
from mmdistill.models.checkpoint import load_model, save_model
from mmdistill.models.multimodal import MultimodalModel
from mmdistill.recipes.data import TOKENIZER_FILE, DataBundle
from mmdistill.recipes.data import train_loader as make_train_loader
from mmdistill.training.distributed import get_dist_info, is_main
from mmdistill.training.logging import MetricsLogger
from mmdistill.training.loop import FitResult, fit
from mmdistill.training.resume import RESUME_DIR, clear_resume_state
from mmdistill.training.runtime import seed_everything
from mmdistill.training.steps import supervised_step, with_modality_dropout

log = logging.getLogger(__name__)


@dataclass
class TrainedModel:
    """A trained (or loaded) model and its provenance."""

    model: MultimodalModel
    directory: Path
    fit: FitResult | None  # None when loaded from a checkpoint


def spec_for(
    model_cfg: ModelConfig | None,
    data: DataBundle,
    cfg: Config,
    *,
    preset: str,
    modalities: Sequence[str],
) -> dict:
    """The architecture spec (``model.json``) for a model of ``preset`` over ``modalities``."""
    return model_spec(
        preset,
        modalities=list(modalities),
        num_classes=data.num_classes,
        vocab_size=max(data.vocab_size, 1),
        image_channels=cfg.data.image.channels,
        n_mels=cfg.data.audio.n_mels,
        tasks=({PRIMARY_TASK: data.num_classes, **data.tasks} if data.tasks else None),
        encoders=(
            {m: c.model_dump() for m, c in model_cfg.encoders.items() if m in modalities}
            if model_cfg
            else None
        ),
        fusion=model_cfg.fusion.model_dump() if model_cfg and model_cfg.fusion else None,
        head=model_cfg.head.model_dump() if model_cfg and model_cfg.head else None,
    )


def checkpoint_extra(data: DataBundle, cfg: Config) -> dict:
    """Metadata saved in ``model.json`` next to the spec: what a user needs to run the model."""
    return {
        "classes": data.classes,
        "tasks": data.tasks,
        "tokenizer": TOKENIZER_FILE if "text" in cfg.data.modalities else None,
        "preprocessing": cfg.data.model_dump(include={"image", "audio", "text"}),
    }


def train_model(
    spec: dict,
    data: DataBundle,
    cfg: Config,
    train_cfg: TrainConfig,
    out_dir: Path,
    *,
    stage: str,
    logger: MetricsLogger,
    seed: int,
    resume: bool = False,
) -> TrainedModel:
    """Train ``spec`` on ``data`` with the supervised objective and save the best epoch to ``out_dir``.

    After every epoch a resume state is saved in ``out_dir/resume`` (deleted once the model is
    saved); ``resume=True`` continues from it when there is one (same numbers as an uninterrupted
    run), otherwise a stale one is discarded.
    """
    seed_everything(seed)
    model = build_model(spec)
    device = torch.device(
        cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    model.to(device)
    dist = get_dist_info()
    # data.batch_size is the global batch: under torchrun each of the N ranks takes 1/N of it, so
    # the optimisation (steps per epoch, gradient average) matches the single-process run.
    per_rank_batch = max(1, cfg.data.batch_size // dist.world_size)
    train_loader = make_train_loader(data, per_rank_batch, seed=seed, distributed=dist.enabled,
                                     num_workers=cfg.data.num_workers)  # streamed with data.stream
    val_loader = make_loader(
        data.splits["val"], cfg.data.eval_batch_size, shuffle=False, seed=seed, distributed=dist.enabled
    )
    task_weights = None
    if data.tasks:
        task_weights = {PRIMARY_TASK: 1.0, **{t: cfg.data.task_weights.get(t, 1.0) for t in data.tasks}}
    result = fit(
        model,
        train_loader,
        val_loader,
        with_modality_dropout(
            supervised_step(task_weights=task_weights, label_smoothing=train_cfg.label_smoothing),
            train_cfg.modality_dropout,
        ),
        epochs=train_cfg.epochs,
        lr=train_cfg.lr,
        weight_decay=train_cfg.weight_decay,
        warmup_steps=train_cfg.warmup,
        patience=train_cfg.patience,
        grad_clip=train_cfg.grad_clip,
        logger=logger,
        stage=stage,
        progress=cfg.logging.progress and not cfg.logging.quiet,
        device=device,
        resume_dir=out_dir / RESUME_DIR,
        resume=resume,
    )
    model.to("cpu").eval()
    if is_main():
        save_model(model, out_dir, extra=checkpoint_extra(data, cfg) | {"stage": stage, "seed": seed})
        clear_resume_state(out_dir / RESUME_DIR)
    return TrainedModel(model=model, directory=out_dir, fit=result)


def load_trained(directory: Path) -> TrainedModel:
    """Load a model saved by :func:`train_model` (safetensors + JSON, never pickle)."""
    model, _meta = load_model(directory)
    return TrainedModel(model=model.eval(), directory=directory, fit=None)
