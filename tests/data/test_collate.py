"""collate: padding, presence masks, lengths, tasks, and modalities absent from every row."""

from __future__ import annotations

import pytest
import torch

from mmdistill.data.batch import IGNORE_LABEL, PAD_ID, batch_modalities
from mmdistill.data.collate import collate


def _samples() -> list[dict]:
    return [
        {"id": "a", "label": 1, "image": torch.ones(1, 4, 4), "text": torch.tensor([5, 6, 7]),
         "tasks": {"parity": 1}},
        {"id": "b", "label": 0, "text": torch.tensor([9]), "audio": torch.full((3, 2), 2.0)},
        {"id": "c", "label": 2, "image": torch.full((1, 4, 4), 3.0), "audio": torch.full((3, 5), -1.0),
         "tasks": {"parity": 0, "size": 2}},
    ]


def test_collate_pads_and_masks() -> None:
    b = collate(_samples())
    assert b["id"] == ["a", "b", "c"]
    assert b["label"].tolist() == [1, 0, 2] and b["label"].dtype == torch.long
    assert batch_modalities(b) == ["image", "text", "audio"]
    # Images: zeros where absent.
    assert b["image"].shape == (3, 1, 4, 4)
    torch.testing.assert_close(b["image"][1], torch.zeros(1, 4, 4))
    torch.testing.assert_close(b["image"][2], torch.full((1, 4, 4), 3.0))
    # Text: padded with PAD_ID, lengths 0 where absent.
    assert b["text"].tolist() == [[5, 6, 7], [9, PAD_ID, PAD_ID], [PAD_ID] * 3]
    assert b["lengths"]["text"].tolist() == [3, 1, 0]
    # Audio: [B, n_mels, F_max] padded with zeros along frames.
    assert b["audio"].shape == (3, 3, 5)
    torch.testing.assert_close(b["audio"][1, :, :2], torch.full((3, 2), 2.0))
    torch.testing.assert_close(b["audio"][1, :, 2:], torch.zeros(3, 3))
    assert b["lengths"]["audio"].tolist() == [0, 2, 5]
    assert {m: p.tolist() for m, p in b["present"].items()} == {
        "image": [True, False, True], "text": [True, True, False], "audio": [False, True, True]}
    assert all(p.dtype == torch.bool for p in b["present"].values())
    # Tasks: union of names, IGNORE_LABEL where a row has no label.
    assert b["tasks"]["parity"].tolist() == [1, IGNORE_LABEL, 0]
    assert b["tasks"]["size"].tolist() == [IGNORE_LABEL, IGNORE_LABEL, 2]


def test_modality_absent_everywhere_is_left_out() -> None:
    b = collate([{"id": "x", "label": 0, "text": torch.tensor([3])},
                 {"id": "y", "label": 1, "text": torch.tensor([4, 5])}])
    assert batch_modalities(b) == ["text"]
    assert set(b["present"]) == {"text"} and set(b["lengths"]) == {"text"}
    assert "image" not in b and "audio" not in b and "tasks" not in b


def test_collate_rejects_mismatched_shapes_and_empty() -> None:
    with pytest.raises(ValueError, match="sample 'b'"):
        collate([{"id": "a", "label": 0, "image": torch.zeros(1, 4, 4)},
                 {"id": "b", "label": 0, "image": torch.zeros(1, 5, 5)}])
    with pytest.raises(ValueError, match="sample 'b'"):
        collate([{"id": "a", "label": 0, "audio": torch.zeros(3, 4)},
                 {"id": "b", "label": 0, "audio": torch.zeros(4, 4)}])
    with pytest.raises(ValueError, match="at least one"):
        collate([])
