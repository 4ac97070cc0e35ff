"""AdamW with decoupled weight decay on weight matrices only, and a warm-up + cosine schedule.

Following nanoGPT: every parameter with ``ndim >= 2`` (linear/conv/embedding/LSTM weight matrices)
decays; biases and normalization gains (``ndim < 2``) do not, because shrinking them toward zero
only fights the normalization and hurts accuracy. Frozen parameters (a teacher inside a strategy)
are left out of the optimizer altogether.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from mmdistill.errors import ConfigError


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters into a decayed group (``ndim >= 2``) and a non-decayed group.

    Args:
        model: the module to optimize; parameters with ``requires_grad=False`` are skipped.
        weight_decay: decoupled decay for the first group.

    Returns:
        Two optimizer groups (an empty group is dropped), each with ``"params"`` and ``"weight_decay"``.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": float(weight_decay)},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of ``model`` (see :func:`param_groups`).

    Raises:
        ConfigError: ``lr <= 0``, ``weight_decay < 0``, or nothing to train.
    """
    if not lr > 0:
        raise ConfigError(f"lr must be > 0, got {lr}; typical values are 1e-4 to 3e-3")
    if weight_decay < 0:
        raise ConfigError(f"weight_decay must be >= 0, got {weight_decay}; use 0 to disable it")
    groups = param_groups(model, weight_decay)
    if not groups:
        raise ConfigError(
            f"{type(model).__name__} has no trainable parameters (all have requires_grad=False); "
            "unfreeze the student before training"
        )
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def resolve_warmup(warmup_steps: int | float, total_steps: int) -> int:
    """Number of warm-up steps: a float in ``[0, 1)`` is a fraction of ``total_steps``.

    Args:
        warmup_steps: a step count (int, or float with an integral value), or a fraction in ``[0, 1)``.
        total_steps: optimizer steps in the whole run.

    Raises:
        ConfigError: negative, or a non-integral float >= 1.
    """
    if warmup_steps < 0:
        raise ConfigError(
            f"warmup must be >= 0 (steps, or a fraction of all steps below 1), got {warmup_steps}"
        )
    if isinstance(warmup_steps, float) and warmup_steps < 1:
        return int(round(warmup_steps * total_steps))
    if float(warmup_steps) != int(warmup_steps):
        raise ConfigError(
            f"warmup must be a whole number of steps or a fraction below 1, got {warmup_steps}; "
            f"e.g. 0.05 for 5% of the {total_steps} steps"
        )
    steps = int(warmup_steps)
    if steps > total_steps:
        warnings.warn(
            f"warmup ({steps} steps) is longer than the whole run ({total_steps} steps): the learning "
            "rate never reaches its peak",
            stacklevel=2,
        )
    return steps


def lr_factor(step: int, *, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based).

    Linear warm-up ``(step + 1) / warmup`` for the first ``warmup`` steps (so step 0 already
    learns, and step ``warmup - 1`` reaches the peak), then a half cosine from 1 down to
    ``min_ratio`` over the remaining ``total - warmup`` steps:
    ``min_ratio + (1 - min_ratio) * 0.5 * (1 + cos(pi * (step - warmup) / (total - warmup)))``.
    """
    if step < warmup:
        return (step + 1) / warmup
    decay_steps = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    warmup_steps: int | float,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """A per-step scheduler: linear warm-up then cosine decay (see :func:`lr_factor`).

    Call ``scheduler.step()`` after every ``optimizer.step()``.

    Args:
        optimizer: the optimizer whose groups' ``lr`` is the peak.
        total_steps: optimizer steps in the whole run (epochs x batches per epoch).
        warmup_steps: steps, or a fraction in ``[0, 1)`` of ``total_steps``.
        min_lr_ratio: final learning rate as a fraction of the peak.
    """
    if total_steps < 1:
        raise ConfigError(f"total_steps must be >= 1, got {total_steps}: is the training set empty?")
    warmup = resolve_warmup(warmup_steps, total_steps)
    return LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup=warmup, total=total_steps, min_ratio=min_lr_ratio)
    )
