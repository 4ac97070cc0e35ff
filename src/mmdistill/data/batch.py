"""The sample and batch contracts shared by every dataset, model and recipe.

A **sample** is a plain dict keyed by modality; any modality may be absent::

    {"id": str, "label": int,
     "image": FloatTensor[C, H, W],          # normalized
     "text": LongTensor[T],                  # token ids, T >= 1, pad id 0 is never a real token
     "audio": FloatTensor[n_mels, frames],   # log-mel
     "tasks": {"<task>": int, ...}}          # optional: extra label columns (multi-task)

A **batch** (what :func:`mmdistill.data.collate.collate` returns) is a dict::

    {"id": list[str], "label": LongTensor[B],
     "image": FloatTensor[B, C, H, W],       # zeros where absent
     "text": LongTensor[B, T_max],           # padded with PAD_ID
     "audio": FloatTensor[B, n_mels, F_max], # padded with zeros
     "lengths": {"text": LongTensor[B], "audio": LongTensor[B]},   # 0 where absent
     "present": {"image": BoolTensor[B], "text": BoolTensor[B], "audio": BoolTensor[B]},
     "tasks": {"<task>": LongTensor[B]}}     # only when samples carry tasks

A modality key (and its ``present``/``lengths`` entries) is in the batch iff at least one sample
of the batch has that modality. Models treat a modality missing from the batch as absent for all
rows, and rows with ``present[m] == False`` as absent for that row.
"""

from __future__ import annotations

from typing import Any

import torch

PAD_ID = 0
"""Token id used for padding text; tokenizers reserve it for ``[PAD]``."""

PRIMARY_TASK = "label"
"""Name of the primary task in ``ModelOutput.task_logits``; its labels are ``batch["label"]``."""

IGNORE_LABEL = -100
"""Label value meaning "no label for this task/row" (ignored by the loss, as in torch CE)."""

Sample = dict[str, Any]
Batch = dict[str, Any]

SEQUENCE_MODALITIES: tuple[str, ...] = ("text", "audio")
"""Modalities with a variable length axis (last axis for audio, only axis for text)."""


def batch_size(batch: Batch) -> int:
    """Number of rows in ``batch``."""
    return int(batch["label"].shape[0])


def batch_modalities(batch: Batch) -> list[str]:
    """Modalities that have a tensor in ``batch`` (in canonical order)."""
    from mmdistill import MODALITIES

    return [m for m in MODALITIES if m in batch]


def move_batch(batch: Batch, device: torch.device | str) -> Batch:
    """Return a copy of ``batch`` with every tensor (also nested in dicts) moved to ``device``."""

    def mv(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return v.to(device, non_blocking=True)
        if isinstance(v, dict):
            return {k: mv(x) for k, x in v.items()}
        return v

    return {k: mv(v) for k, v in batch.items()}


def drop_modalities(batch: Batch, modalities: list[str] | tuple[str, ...]) -> Batch:
    """Return a shallow copy of ``batch`` without the given modalities (as if never loaded)."""
    out = {k: v for k, v in batch.items() if k not in modalities}
    out["present"] = {m: p for m, p in batch.get("present", {}).items() if m not in modalities}
    if "lengths" in batch:
        out["lengths"] = {m: n for m, n in batch["lengths"].items() if m not in modalities}
    return out
