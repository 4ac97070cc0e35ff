"""The training loop as plain functions: :func:`train_one_epoch` and :func:`fit` (nanoGPT /
torchtune-recipe style, no Trainer class); :func:`~mmdistill.training.predict.predict` and
:func:`~mmdistill.training.predict.evaluate` live in :mod:`mmdistill.training.predict`.

What is trained is decided by a **step function** ``step(model, batch) -> dict[str, Tensor]``
returning ``"loss"`` (scalar), ``"logits"`` ``[B, K]`` and any number of ``"loss/<term>"``
entries, which are averaged over the epoch and logged. :func:`supervised_step` is the plain
cross-entropy one (:mod:`mmdistill.training.steps`); distillation strategies follow the same
contract.

Under torchrun the model is wrapped in DDP (only if it has trainable parameters), epoch means are
all-reduced, predictions are gathered from every rank, so every rank takes the same early-stopping
decision without extra communication.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from mmdistill.data.batch import IGNORE_LABEL, Batch, batch_size, move_batch
from mmdistill.data.loaders import set_loader_epoch
from mmdistill.errors import ConfigError, DataError, NonFiniteLossError
from mmdistill.training.distributed import (
    all_reduce_sum,
    is_main,
    unwrap,
    world_size,
    wrap_ddp,
)
from mmdistill.training.guards import StepPlace, add_last_good, check_grad_norm, check_step
from mmdistill.training.logging import MetricsLogger
from mmdistill.training.optim import build_optimizer, cosine_with_warmup
from mmdistill.training.predict import evaluate
from mmdistill.training.resume import FitResumer, fit_fingerprint
from mmdistill.training.state_io import loader_generators
from mmdistill.training.steps import StepFn


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[Batch],
    step_fn: StepFn,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    *,
    epoch: int,
    grad_clip: float | None,
    logger: MetricsLogger,
    progress: bool,
    device: torch.device | str,
    stage: str | None = None,
    log_every: int = 50,
) -> dict[str, float]:
    """One pass over ``loader``: forward with ``step_fn``, backward, clip, optimizer and scheduler step.

    Args:
        model: the (possibly DDP-wrapped) module handed to ``step_fn``; set to train mode.
        epoch: 1-based epoch, used for the sampler's shuffling, step numbers and logs.
        grad_clip: max global gradient norm; None or 0 disables clipping.
        logger: receives a ``train/loss`` record every ``log_every`` steps (0 disables them).
        progress: show a tqdm bar (rank 0 only).

    Returns:
        Sample-weighted means over the epoch (all ranks) of every ``loss`` / ``loss/<term>`` key,
        plus ``accuracy`` (over labelled rows), ``samples_per_s``, ``lr`` (of the last step),
        ``steps`` and, when clipping, the mean pre-clip ``grad_norm``.
    """
    model.train()
    set_loader_epoch(loader, epoch)
    params = [p for p in model.parameters() if p.requires_grad]
    n_batches = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
    sums: dict[str, torch.Tensor] = {}
    n_samples = correct = n_labelled = 0
    grad_norm_sum, steps, lr = 0.0, 0, float("nan")
    t0 = time.perf_counter()
    bar = tqdm(loader, desc=f"{stage or logger.stage} epoch {epoch}".strip(), total=n_batches,
               leave=False, dynamic_ncols=True, disable=not (progress and is_main()))
    for i, batch in enumerate(bar):
        batch = move_batch(batch, device)
        optimizer.zero_grad(set_to_none=True)
        out = step_fn(model, batch)
        loss = out["loss"]
        lr = float(optimizer.param_groups[0]["lr"])
        global_step = (epoch - 1) * (n_batches or 0) + i + 1
        place = StepPlace(stage or logger.stage, epoch, i + 1, global_step, lr, batch.get("id") or [])
        loss_value = check_step(out, place)["loss"]  # raises before backward: no NaN reaches the weights
        loss.backward()
        if grad_clip:
            norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
            check_grad_norm(norm, loss_value, place)
            grad_norm_sum += norm
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        steps += 1

        bs = batch_size(batch)
        n_samples += bs
        for key, value in out.items():
            if key == "loss" or key.startswith("loss/"):
                sums[key] = sums.get(key, 0.0) + value.detach().double().cpu() * bs
        labels = batch["label"]
        valid = labels != IGNORE_LABEL
        correct += int(((out["logits"].detach().argmax(-1) == labels) & valid).sum())
        n_labelled += int(valid.sum())
        bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
        if log_every and global_step % log_every == 0:
            logger.log({"train/loss": loss_value, "lr": lr}, epoch=epoch, step=global_step, stage=stage)
    bar.close()
    seconds = time.perf_counter() - t0

    # One all-reduce for everything: sums over ranks give exact global sample-weighted means.
    keys = sorted(sums)
    totals = torch.tensor(
        [float(sums[k]) for k in keys] + [n_samples, correct, n_labelled, grad_norm_sum, steps, seconds],
        dtype=torch.float64,
    )
    totals = all_reduce_sum(totals).tolist()
    g_samples, g_correct, g_labelled, g_norm, g_steps, g_seconds = totals[len(keys):]
    result = {k: totals[j] / max(g_samples, 1) for j, k in enumerate(keys)}
    result["accuracy"] = g_correct / g_labelled if g_labelled else float("nan")
    result["samples_per_s"] = g_samples / max(g_seconds / world_size(), 1e-9)
    result["lr"] = lr
    result["steps"] = float(steps)
    if grad_clip:
        result["grad_norm"] = g_norm / max(g_steps, 1)
    return result


@dataclass
class FitResult:
    """What :func:`fit` did. ``history`` holds one record per epoch (the logged metrics)."""

    best_epoch: int
    best_val_accuracy: float
    history: list[dict[str, Any]]
    epochs_run: int
    stopped_early: bool
    wall_s: float


def fit(
    model: nn.Module,
    train_loader: Iterable[Batch],
    val_loader: Iterable[Batch] | None,
    step_fn: StepFn,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    warmup_steps: int | float,
    patience: int | None,
    grad_clip: float | None = 1.0,
    logger: MetricsLogger,
    stage: str,
    progress: bool = True,
    device: torch.device | str = "cpu",
    checkpoint_fn: Callable[[nn.Module, int, dict], None] | None = None,
    log_every: int = 50,
    find_unused_parameters: bool = True,
    resume_dir: Path | None = None,
    resume: bool = False,
) -> FitResult:
    """Train with AdamW + warm-up/cosine, validate every epoch, stop early, keep the best epoch.

    Args:
        model: moved to ``device``; wrapped in DDP under torchrun when it has trainable parameters.
        val_loader: selects the best epoch by validation accuracy; None keeps the last epoch.
        step_fn: see :data:`StepFn` (e.g. :func:`supervised_step`).
        epochs: maximum number of epochs (>= 1).
        warmup_steps: linear warm-up steps, or a fraction in ``[0, 1)`` of all steps.
        patience: stop after this many epochs without a higher validation accuracy; None never stops.
        grad_clip: max gradient norm; None or 0 disables clipping.
        stage: name in the logs and in the configuration keys of error messages.
        checkpoint_fn: called on rank 0 after every epoch with the unwrapped model, the epoch and
            its record (``record["is_best"]`` tells whether it is the best so far).
        log_every: log ``train/loss`` every this many steps (0: epoch records only).
        find_unused_parameters: passed to DDP; keep True when some batches skip an encoder
            (missing modalities), False saves a graph traversal per step when none ever does.
        resume_dir: save a resume state there after every epoch (rank 0; see
            :mod:`mmdistill.training.resume`), and drop ``stage``'s records past the starting epoch
            from ``logger``'s file so no epoch is logged twice. The caller deletes the folder once
            it has saved the result (:func:`~mmdistill.training.resume.clear_resume_state`).
        resume: continue from the state in ``resume_dir`` (same weights, optimizer, scheduler,
            early-stopping and RNG states: the same numbers as an uninterrupted run); without it a
            state found there is discarded.

    Returns:
        A :class:`FitResult`; ``model`` holds the weights of ``best_epoch`` afterwards.
    """
    where = f"{stage}." if stage else ""
    if int(epochs) < 1:
        raise ConfigError(f"{where}epochs must be >= 1, got {epochs}")
    if patience is not None and int(patience) < 1:
        raise ConfigError(
            f"{where}patience must be >= 1 epoch (or null to disable early stopping), got {patience}"
        )
    t_start = time.perf_counter()
    model.to(device)
    optimizer = build_optimizer(model, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = len(train_loader)  # type: ignore[arg-type]
    if steps_per_epoch == 0:
        raise DataError(
            f"{stage or 'training'}: the training loader yields no batches; is the train split empty?"
        )
    scheduler = cosine_with_warmup(optimizer, total_steps=epochs * steps_per_epoch, warmup_steps=warmup_steps)
    train_model = wrap_ddp(model, find_unused_parameters=find_unused_parameters)
    net = unwrap(model)

    history: list[dict[str, Any]] = []
    best_acc, best_epoch, best_state, bad_epochs, stopped = -math.inf, 0, None, 0, False
    start, resumer = 0, None
    if resume_dir is not None:
        resumer = FitResumer(resume_dir, stage=stage, generators=loader_generators(train_loader, val_loader),
                             fingerprint=fit_fingerprint(net, stage=stage, epochs=int(epochs), lr=lr,
                                                         steps_per_epoch=steps_per_epoch, patience=patience,
                                                         weight_decay=weight_decay, warmup=warmup_steps,
                                                         grad_clip=grad_clip))
        state = resumer.begin(net, optimizer, scheduler, resume=resume, metrics=logger.path)
        if state is not None:
            start, history, best_state = state.epoch, state.history, state.best
            best_acc, best_epoch, bad_epochs = state.best_acc, state.best_epoch, state.bad_epochs
            stopped = patience is not None and bad_epochs >= patience and start < epochs
    last = start if stopped else epochs  # stopped early before the interruption: nothing left to run
    saved = start  # the last epoch whose resume state is on disk
    for epoch in range(start + 1, last + 1):
        t0 = time.perf_counter()
        try:
            train = train_one_epoch(
                train_model, train_loader, step_fn, optimizer, scheduler, epoch=epoch, grad_clip=grad_clip,
                logger=logger, progress=progress, device=device, stage=stage, log_every=log_every,
            )
        except NonFiniteLossError as err:
            raise add_last_good(err, resume_dir, saved) from None
        record: dict[str, Any] = {f"train/{k}": v for k, v in train.items() if k not in ("lr", "steps")}
        val_acc = math.nan
        if val_loader is not None:
            val, _ = evaluate(net, val_loader, device=device)
            record.update({f"val/{k}": v for k, v in val.items()})
            val_acc = val["accuracy"]
        # Every rank holds the same gathered predictions, hence the same val_acc and decision.
        # No validation signal (no val loader / no labels): the latest epoch counts as the best.
        improved = math.isnan(val_acc) or val_acc > best_acc
        if improved:
            best_acc, best_epoch, bad_epochs = val_acc, epoch, 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
        else:
            bad_epochs += 1
        record.update(lr=train["lr"], seconds=time.perf_counter() - t0, is_best=improved)
        history.append({"epoch": epoch, **record})
        logger.log_epoch(epoch, record, epochs=epochs, step=epoch * steps_per_epoch, stage=stage,
                         note="*" if improved and val_loader is not None else "")
        if checkpoint_fn is not None and is_main():
            checkpoint_fn(net, epoch, record)
        if resumer is not None:
            resumer.save(epoch, net, best_state, optimizer, scheduler, best_acc=best_acc,
                         best_epoch=best_epoch, bad_epochs=bad_epochs, history=history)
            saved = epoch
        if patience is not None and bad_epochs >= patience:
            stopped = epoch < epochs
            break

    if best_state is not None:
        net.load_state_dict(best_state)
    result = FitResult(
        best_epoch=best_epoch,
        best_val_accuracy=best_acc,
        history=history,
        epochs_run=len(history),
        stopped_early=stopped,
        wall_s=time.perf_counter() - t_start,
    )
    logger.info(
        f"{stage} done: best epoch {best_epoch} (val acc {best_acc:.2%}), {len(history)} epochs"
        f"{' (stopped early)' if stopped else ''}, {result.wall_s:.1f}s".strip()
    )
    return result
