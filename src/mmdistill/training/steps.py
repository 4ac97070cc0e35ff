"""Step functions: what one training step computes for a model and a batch.

A step function ``step(model, batch) -> dict[str, Tensor]`` returns ``"loss"`` (scalar),
``"logits"`` ``[B, K]`` and any number of ``"loss/<term>"`` entries, which the loop averages over
the epoch and logs. :func:`supervised_step` is the plain cross-entropy one; distillation
strategies follow the same contract.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mmdistill.data.batch import IGNORE_LABEL, PRIMARY_TASK, Batch
from mmdistill.errors import ConfigError, DataError

StepFn = Callable[[nn.Module, Batch], dict[str, torch.Tensor]]
"""``step(model, batch) -> {"loss": scalar, "logits": [B, K], "loss/<term>": scalar, ...}``."""



def masked_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, *, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean cross-entropy over rows whose label is not ``IGNORE_LABEL``; 0 (not NaN) if there are none.

    torch's ``ignore_index`` mean divides by the number of valid rows, which is 0/0 = NaN for a
    batch without labels for a task; dividing the sum by ``max(count, 1)`` keeps the loss finite.

    Shapes:
        logits: ``[B, K]``; labels: ``[B]`` (long). Returns a scalar.
    """
    total = F.cross_entropy(
        logits.float(), labels, ignore_index=IGNORE_LABEL, label_smoothing=label_smoothing, reduction="sum"
    )
    return total / (labels != IGNORE_LABEL).sum().clamp(min=1)


def labels_for_task(batch: Batch, task: str) -> torch.Tensor | None:
    tasks = batch.get("tasks") or {}
    if task in tasks:
        return tasks[task]
    return batch["label"] if task == PRIMARY_TASK else None


def supervised_step(task_weights: dict[str, float] | None = None, label_smoothing: float = 0.0) -> StepFn:
    """Cross-entropy on ``batch["label"]``; for multi-task models ``L = sum_t w_t L_t``.

    Single-task (the model returns no ``task_logits``): ``L = CE(logits, label)``. Multi-task: one
    CE per head in ``out.task_logits`` against ``batch["tasks"][t]`` (``batch["label"]`` for the
    primary task ``"label"``), weighted by ``task_weights[t]`` (default 1.0) and logged as
    ``loss/<t>``. Rows labelled ``IGNORE_LABEL`` do not count.

    Args:
        task_weights: task name → weight ``w_t >= 0``; every name must be a head of the model.
        label_smoothing: in ``[0, 1)``, as in ``torch.nn.functional.cross_entropy``.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    weights = dict(task_weights or {})
    for name, w in weights.items():
        if not w >= 0:
            raise ConfigError(f"task weight for '{name}' must be >= 0, got {w}")

    def step(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        out = model(batch)
        if not out.task_logits:
            loss = masked_cross_entropy(out.logits, batch["label"], label_smoothing=label_smoothing)
            return {"loss": loss, "logits": out.logits}
        unknown = sorted(set(weights) - set(out.task_logits))
        if unknown:
            raise ConfigError(
                f"task_weights name task(s) {unknown} but the model has heads for {sorted(out.task_logits)}; "
                "fix the task names in the config"
            )
        result: dict[str, torch.Tensor] = {"logits": out.logits}
        total = out.logits.new_zeros((), dtype=torch.float32)
        for name, logits in out.task_logits.items():
            labels = labels_for_task(batch, name)
            if labels is None:
                raise DataError(
                    f"the model has a head for task '{name}' but the batch has no labels for it "
                    f"(batch tasks: {sorted(batch.get('tasks') or {})}); add the '{name}' column to the data"
                )
            term = masked_cross_entropy(logits, labels, label_smoothing=label_smoothing)
            result[f"loss/{name}"] = term
            total = total + weights.get(name, 1.0) * term
        result["loss"] = total
        return result

    return step


def drop_modalities_randomly(batch: Batch, p: float, generator: torch.Generator | None = None) -> Batch:
    """Hide each present modality of each row with probability ``p``, keeping one per row.

    Modality dropout (Neverova et al., "ModDrop", TPAMI 2016): trained this way, the fusion can
    not lean on one modality, each encoder must carry the label on its own, and the model keeps
    working when a modality is missing at test time. Only ``batch["present"]`` changes; the
    tensors stay, and the model skips/zeroes rows whose modality is not present.

    Shapes:
        batch["present"][m]: ``[B]`` bool. Returns a shallow copy with new presence masks.
    """
    mods = [m for m, mask in batch.get("present", {}).items()]
    if p <= 0.0 or len(mods) < 2:
        return batch
    present = torch.stack([batch["present"][m] for m in mods], dim=1)  # [B, M]
    # Random numbers are drawn on the CPU (where ``generator`` lives) and moved to the masks' device.
    keep = present & (torch.rand(present.shape, generator=generator) >= p).to(present.device)
    emptied = present.any(dim=1) & ~keep.any(dim=1)
    if bool(emptied.any()):
        # Give every emptied row back one of its own modalities, chosen uniformly.
        scores = torch.rand(present.shape, generator=generator).to(present.device).masked_fill(~present, -1.0)
        rows = emptied.nonzero().squeeze(1)
        keep[rows, scores[rows].argmax(dim=1)] = True
    return {**batch, "present": {m: keep[:, i] for i, m in enumerate(mods)}}


def with_modality_dropout(step: StepFn, p: float) -> StepFn:
    """Wrap ``step`` so that every training batch first goes through :func:`drop_modalities_randomly`."""
    if not 0.0 <= p < 1.0:
        raise ConfigError(f"modality_dropout must be in [0, 1), got {p}")
    if p == 0.0:
        return step

    def dropped(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        return step(model, drop_modalities_randomly(batch, p))

    return dropped
