"""Tests for mmdistill.evaluation.alignment: linear CKA, mean cosine and per-modality alignment."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from _helpers import tiny_batch, tiny_model
from mmdistill.errors import DataError
from mmdistill.evaluation.alignment import (
    FeatureSet,
    alignment_summary,
    collect_features,
    compare_features,
    feature_alignment,
    linear_cka,
    mean_cosine,
)
from mmdistill.models.outputs import ModelOutput


def _random(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def test_linear_cka_hand_computed_examples() -> None:
    # One feature each: CKA is the squared Pearson correlation. Centered x = [-1, 0, 1],
    # y = [-1, 1, 0]: y.x = 1, x.x = y.y = 2, so CKA = 1^2 / (2 * 2) = 0.25 (= corr 0.5 squared).
    assert linear_cka([[1.0], [2.0], [3.0]], [[1.0], [3.0], [2.0]]) == pytest.approx(0.25, abs=1e-12)
    # Already centered: X^T X = diag(2, 2) (Frobenius 2 sqrt 2), Y^T Y = [[2]], Y^T X = [2, 0]:
    # CKA = 4 / (2 sqrt(2) * 2) = 1 / sqrt(2).
    x = [[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]
    y = [[1.0], [-1.0], [0.0], [0.0]]
    assert linear_cka(x, y) == pytest.approx(1 / math.sqrt(2), abs=1e-12)
    assert linear_cka(y, x) == pytest.approx(1 / math.sqrt(2), abs=1e-12)  # symmetric


def test_linear_cka_invariances_and_independence() -> None:
    x = _random(200, 6, 0)
    y = x @ _random(6, 4, 1) + 0.5 * _random(200, 4, 2)  # related to x, narrower
    base = linear_cka(x, y)
    assert 0.2 < base < 1.0
    q, _ = np.linalg.qr(_random(6, 6, 3))  # a random orthogonal matrix
    assert linear_cka(x @ q, y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(7.5 * x, y) == pytest.approx(base, abs=1e-10)  # isotropic scaling
    assert linear_cka(x + 3.0, y * 0.01) == pytest.approx(base, abs=1e-10)  # offset (centering) and scale
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    xt = torch.from_numpy(x).float()
    assert linear_cka(xt, xt) == pytest.approx(1.0, abs=1e-9)  # torch tensors too
    # a non-isotropic scaling does change it: CKA is not invariant to arbitrary linear maps
    assert abs(linear_cka(x * np.array([10.0, 1, 1, 1, 1, 1]), y) - base) > 1e-3
    # independent features: about sqrt(D1 * D2) / N = 10 / 2000 = 0.005
    assert linear_cka(_random(2000, 10, 4), _random(2000, 10, 5)) < 0.03


def test_linear_cka_errors() -> None:
    with pytest.raises(ValueError, match="same rows"):
        linear_cka(_random(5, 3, 0), _random(6, 3, 0))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        linear_cka(np.zeros(5), _random(5, 3, 0))
    with pytest.raises(ValueError, match="at least 2 rows"):
        linear_cka(_random(1, 3, 0), _random(1, 3, 0))
    with pytest.raises(ValueError, match="y is constant"):
        linear_cka(_random(4, 3, 0), np.full((4, 2), 0.1))


def test_mean_cosine_needs_equal_widths() -> None:
    x = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    y = np.array([[2.0, 0.0], [0.0, -1.0], [0.0, 0.0]])  # cos 1, cos -1, zero row counts as 0
    assert mean_cosine(x, y) == pytest.approx(0.0)
    assert mean_cosine(x, x) == pytest.approx(1.0)
    assert mean_cosine(x, np.ones((3, 5))) is None  # widths differ: not defined
    with pytest.raises(ValueError, match="same rows"):
        mean_cosine(x, x[:2])


class Scripted(nn.Module):
    """Features written by hand: image features from the batch, fused = 2 * label + 1 (one column)."""

    def __init__(self, modalities: list[str], width: int = 2) -> None:
        super().__init__()
        self.mods, self.width = modalities, width

    def forward(self, batch: dict) -> ModelOutput:
        n = batch["label"].shape[0]
        feats = {f"{m}.pooled": batch[m][:, : self.width].float() * batch["present"][m][:, None]
                 for m in self.mods}
        feats["fused"] = 2.0 * batch["label"].float()[:, None] + 1.0
        return ModelOutput(logits=torch.zeros(n, 2), features=feats)


def _scripted_batches() -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for b in range(2):
        image = torch.randn(4, 3, generator=g)
        present = torch.tensor([True, True, b == 0, True])  # one absent image row, in batch 1
        out.append({"id": [f"{b}-{i}" for i in range(4)], "label": torch.tensor([0, 1, 0, 1]),
                    "image": image, "audio": torch.randn(4, 3, generator=g),
                    "present": {"image": present, "audio": torch.ones(4, dtype=torch.bool)}})
    return out


def test_collect_and_compare_exclude_absent_rows_and_missing_modalities() -> None:
    batches = _scripted_batches()
    teacher = collect_features(Scripted(["image", "audio"], width=3), batches)
    assert teacher.ids == [f"{b}-{i}" for b in range(2) for i in range(4)]
    assert teacher.present["image"].tolist() == [True] * 6 + [False, True]
    assert teacher.features["image.pooled"].shape == (8, 3) and teacher.modalities == ["image", "audio"]
    student = collect_features(Scripted(["image"], width=2), batches)
    res = compare_features(student, teacher)
    assert list(res) == ["image", "fused"]  # audio: the student lacks it
    assert res["image"]["n"] == 7 and res["image"]["dims"] == [2, 3] and res["image"]["cosine"] is None
    keep = teacher.present["image"]
    expected = linear_cka(student.features["image.pooled"][keep], teacher.features["image.pooled"][keep])
    assert res["image"]["linear_cka"] == pytest.approx(expected)
    # fused features are identical (2 * label + 1) on every row: CKA 1, cosine 1 (1-D, equal widths)
    assert res["fused"] == {"linear_cka": pytest.approx(1.0), "cosine": pytest.approx(1.0), "n": 8,
                            "dims": [1, 1]}
    assert alignment_summary(res).startswith("image ") and alignment_summary(res).endswith("fused 1.00")


def test_compare_undefined_cases_and_row_mismatch() -> None:
    f = torch.ones(3, 2)
    a = FeatureSet(ids=["a", "b", "c"], features={"image.pooled": f, "fused": f},
                   present={"image": torch.tensor([True, False, False])})
    res = compare_features(a, a)
    assert res["image"] == {"linear_cka": None, "cosine": pytest.approx(1.0), "n": 1, "dims": [2, 2]}
    assert res["fused"]["linear_cka"] is None  # constant over rows: CKA undefined, not an error
    with pytest.raises(ValueError, match="different rows"):
        compare_features(a, FeatureSet(ids=["c", "b", "a"], features=a.features, present=a.present))
    with pytest.raises(DataError, match="no batches"):
        collect_features(Scripted(["image"]), [])


def test_teacher_against_itself_and_a_smaller_student() -> None:
    batches = [tiny_batch(8, seed=s) for s in range(3)]
    batches[1]["present"]["audio"] = torch.tensor([True, False] * 4)
    teacher = tiny_model(seed=0)
    self_res = feature_alignment(teacher, teacher, batches)
    assert list(self_res) == ["image", "text", "audio", "fused"]
    for v in self_res.values():
        assert v["linear_cka"] == pytest.approx(1.0, abs=1e-6) and v["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert self_res["audio"]["n"] == 20 and self_res["image"]["n"] == 24
    student = tiny_model(("image", "text"), seed=1)
    res = feature_alignment(student, teacher, batches)
    assert list(res) == ["image", "text", "fused"]
    assert all(0.0 <= v["linear_cka"] <= 1.0 for v in res.values())
    assert res["image"]["linear_cka"] < 1.0 - 1e-3
    assert teacher.training is False and student.training is False
