"""Collate samples into a batch, padding sequences and marking absent modalities.

The batch layout is the contract documented in :mod:`mmdistill.data.batch`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mmdistill import MODALITIES
from mmdistill.data.batch import IGNORE_LABEL, PAD_ID, Batch, Sample


def _stack_images(samples: Sequence[Sample], present: list[bool]) -> torch.Tensor:
    ref = next(s["image"] for s, p in zip(samples, present, strict=True) if p)
    out = ref.new_zeros((len(samples), *ref.shape))
    for i, (s, p) in enumerate(zip(samples, present, strict=True)):
        if p:
            if s["image"].shape != ref.shape:
                raise ValueError(
                    f"image of sample {s['id']!r} has shape {tuple(s['image'].shape)}, expected "
                    f"{tuple(ref.shape)}; preprocess all images with the same ImageTransform"
                )
            out[i] = s["image"]
    return out


def _pad_sequences(
    samples: Sequence[Sample], present: list[bool], key: str, pad_value: float | int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad the last axis of ``samples[i][key]`` to the longest; returns (padded, lengths)."""
    ref = next(s[key] for s, p in zip(samples, present, strict=True) if p)
    lengths = torch.tensor([s[key].shape[-1] if p else 0 for s, p in zip(samples, present, strict=True)])
    # At least one step so no tensor has a zero-size axis (models index position 0).
    longest = max(1, int(lengths.max()))
    out = torch.full((len(samples), *ref.shape[:-1], longest), pad_value, dtype=ref.dtype)
    for i, (s, p) in enumerate(zip(samples, present, strict=True)):
        if p:
            x = s[key]
            if x.shape[:-1] != ref.shape[:-1]:
                raise ValueError(
                    f"{key} of sample {s['id']!r} has shape {tuple(x.shape)}, expected "
                    f"{tuple(ref.shape[:-1])} on the leading axes; use one transform for all samples"
                )
            out[i, ..., : x.shape[-1]] = x
    return out, lengths


def collate(samples: list[Sample]) -> Batch:
    """Stack samples into a batch (layout in :mod:`mmdistill.data.batch`).

    Text is padded with ``PAD_ID``, audio with zeros along frames, absent images are zeros of a
    present image's shape. A modality appears in the batch iff at least one sample has it;
    ``present[m]`` marks rows that have it and ``lengths[m]`` (text, audio) is 0 where absent.
    Rows without a label for a task get ``IGNORE_LABEL``.

    Args:
        samples: sample dicts (any modality may be absent).

    Returns:
        the batch dict.

    Shapes:
        image ``[B, C, H, W]``, text ``[B, T_max]``, audio ``[B, n_mels, F_max]``, label ``[B]``,
        lengths/present/tasks entries ``[B]``.
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    batch: Batch = {
        "id": [str(s["id"]) for s in samples],
        "label": torch.tensor([int(s["label"]) for s in samples], dtype=torch.long),
        "present": {},
        "lengths": {},
    }
    for m in MODALITIES:
        present = [m in s and s[m] is not None for s in samples]
        if not any(present):
            continue
        batch["present"][m] = torch.tensor(present, dtype=torch.bool)
        if m == "image":
            batch[m] = _stack_images(samples, present)
        else:
            pad = PAD_ID if m == "text" else 0.0
            batch[m], batch["lengths"][m] = _pad_sequences(samples, present, m, pad)
    task_names = sorted({t for s in samples for t in s.get("tasks", {})})
    if task_names:
        batch["tasks"] = {
            t: torch.tensor([int(s.get("tasks", {}).get(t, IGNORE_LABEL)) for s in samples], dtype=torch.long)
            for t in task_names
        }
    return batch
