"""Tests for mmdistill.training.steps: modality dropout (the step-function numerics live in test_loop)."""

from __future__ import annotations

import pytest
import torch

from mmdistill.errors import ConfigError
from mmdistill.training.steps import drop_modalities_randomly, with_modality_dropout


def _batch(present: dict[str, list[bool]]) -> dict:
    return {"label": torch.zeros(len(next(iter(present.values()))), dtype=torch.long),
            "present": {m: torch.tensor(v) for m, v in present.items()}}


def test_modality_dropout_keeps_one_modality_per_row_and_never_adds_one() -> None:
    gen = torch.Generator().manual_seed(0)
    n = 2000
    orig = {"image": torch.rand(n, generator=gen) < 0.9, "text": torch.rand(n, generator=gen) < 0.9,
            "audio": torch.zeros(n, dtype=torch.bool)}
    orig["image"][~(orig["image"] | orig["text"])] = True  # every row starts with at least one modality
    batch = {"label": torch.zeros(n, dtype=torch.long), "present": orig}
    out = drop_modalities_randomly(batch, 0.5, gen)["present"]
    stacked = torch.stack([out[m] for m in ("image", "text", "audio")], 1)
    assert bool(stacked.any(1).all())  # nobody lost everything
    for m in orig:
        assert not bool((out[m] & ~orig[m]).any())  # a missing modality is never made present
    assert not bool(out["audio"].any())
    # Rows with both image and text lose at least one of them with probability 1 - 0.5**2 = 0.75.
    both = orig["image"] & orig["text"]
    lost = both & ~(out["image"] & out["text"])
    assert 0.70 < float(lost.sum()) / float(both.sum()) < 0.80
    assert batch["present"] is orig  # the input batch is not modified


def test_modality_dropout_is_identity_for_one_modality_or_p_zero() -> None:
    single = _batch({"image": [True, True]})
    assert drop_modalities_randomly(single, 0.9) is single
    two = _batch({"image": [True], "text": [True]})
    assert drop_modalities_randomly(two, 0.0) is two


def test_with_modality_dropout_wraps_the_step_and_validates_p() -> None:
    seen: list[dict] = []

    def step(model: object, batch: dict) -> dict:
        seen.append(batch)
        return {"loss": torch.tensor(0.0)}

    torch.manual_seed(0)
    batch = _batch({"image": [True] * 64, "text": [True] * 64})
    with_modality_dropout(step, 0.5)(None, batch)
    kept = torch.stack([seen[0]["present"]["image"], seen[0]["present"]["text"]], 1)
    assert not bool(kept.all())  # some modality was hidden in a 64-row batch at p=0.5
    assert with_modality_dropout(step, 0.0) is step
    with pytest.raises(ConfigError, match=r"modality_dropout must be in \[0, 1\), got 1.5"):
        with_modality_dropout(step, 1.5)
