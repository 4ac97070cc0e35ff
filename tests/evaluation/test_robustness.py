"""Tests for mmdistill.evaluation.robustness (accuracy per modality subset)."""

from __future__ import annotations

import torch
from torch import nn

from mmdistill.evaluation.robustness import drop_one_losses, modality_subsets, subset_accuracy
from mmdistill.models.outputs import ModelOutput


class ImageOracle(nn.Module):
    """Right when it sees the image (labels are written into it), class 0 otherwise."""

    def forward(self, batch: dict) -> ModelOutput:
        n = batch["label"].shape[0]
        logits = torch.zeros(n, 3)
        logits[:, 0] = 0.5
        if "image" in batch:
            seen = batch["present"]["image"]
            logits[seen] = nn.functional.one_hot(batch["image"][seen].long(), 3).float()
        return ModelOutput(logits=logits)


def _batches() -> list[dict]:
    labels = torch.tensor([0, 1, 2, 1, 2, 2])
    batch = {"id": [str(i) for i in range(6)], "label": labels, "image": labels.clone(),
             "audio": torch.zeros(6, 2, 3), "lengths": {"audio": torch.full((6,), 3)},
             "present": {"image": torch.ones(6, dtype=torch.bool), "audio": torch.ones(6, dtype=torch.bool)}}
    return [batch]


def test_modality_subsets_are_every_non_empty_subset_largest_first() -> None:
    subsets = modality_subsets(["image", "text", "audio"])
    assert len(subsets) == 2**3 - 1
    assert subsets[0] == ("image", "text", "audio") and subsets[-1] == ("audio",)
    assert len(set(subsets)) == 7


def test_subset_accuracy_hides_the_other_modalities() -> None:
    acc = subset_accuracy(ImageOracle(), _batches(), ["image", "audio"])
    assert acc == {"image+audio": 1.0, "image": 1.0, "audio": 1 / 6}  # only label 0 is right blind
    assert drop_one_losses(acc, ["image", "audio"]) == {"image": 1.0 - 1 / 6, "audio": 0.0}


def test_subset_accuracy_reuses_a_known_full_accuracy() -> None:
    acc = subset_accuracy(ImageOracle(), _batches(), ["image", "audio"], full_accuracy=0.25)
    assert acc == {"image+audio": 0.25, "image": 1.0, "audio": 1 / 6}
