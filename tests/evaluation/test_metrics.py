"""Classification metrics against values computed by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmdistill.data.batch import IGNORE_LABEL
from mmdistill.evaluation.metrics import (
    accuracy,
    agreement,
    classification_report,
    confusion_matrix,
    expected_calibration_error,
    macro_f1,
)
from mmdistill.training.predict import Predictions

# Valid rows (pred, true): (0,0) (1,1) (2,1) (2,2) (0,2); the row labelled IGNORE_LABEL is dropped.
PREDS = [0, 1, 2, 2, 1, 0]
LABELS = [0, 1, 1, 2, IGNORE_LABEL, 2]


def test_accuracy_from_preds_or_logits_numpy_or_torch() -> None:
    assert accuracy(np.array(PREDS), np.array(LABELS)) == pytest.approx(3 / 5)
    logits = torch.nn.functional.one_hot(torch.tensor(PREDS), 3).float() * 5
    assert accuracy(logits, torch.tensor(LABELS)) == pytest.approx(3 / 5)
    assert np.isnan(accuracy([1, 2], [IGNORE_LABEL, IGNORE_LABEL]))
    with pytest.raises(ValueError, match="differ in length: 2 vs 3"):
        accuracy([0, 1], [0, 1, 2])


def test_confusion_matrix_rows_true_cols_predicted() -> None:
    cm = confusion_matrix(PREDS, LABELS, 3)
    assert cm.dtype == np.int64
    assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [1, 0, 1]]
    with pytest.raises(ValueError, match=r"label values must be in \[0, 2\)"):
        confusion_matrix([0, 1], [0, 2], 2)


def test_macro_f1_hand_value() -> None:
    # F1 per class: c0 P=1/2 R=1 -> 2/3; c1 P=1 R=1/2 -> 2/3; c2 P=1/2 R=1/2 -> 1/2.
    assert macro_f1(PREDS, LABELS, 3) == pytest.approx((2 / 3 + 2 / 3 + 1 / 2) / 3)
    # A class seen in neither labels nor predictions is left out of the average.
    assert macro_f1(PREDS, LABELS, 4) == pytest.approx(11 / 18)
    # A class that is predicted but never true counts with F1 = 0.
    assert macro_f1([0, 1], [0, 0], 2) == pytest.approx((2 / 3 + 0) / 2)


def test_agreement() -> None:
    assert agreement([0, 1, 2, 2], torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1]])) == 0.75
    with pytest.raises(ValueError, match="equal length"):
        agreement([0, 1], [0])


def test_expected_calibration_error_hand_values() -> None:
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55], [0.5, 0.5]])
    labels = np.array([0, 1, 1, 0, IGNORE_LABEL])
    # 2 bins: all four confidences are > 0.5: |acc 2/4 - mean conf 0.6875| = 0.1875.
    assert expected_calibration_error(probs, labels, n_bins=2) == pytest.approx(0.1875)
    # 4 bins: (0.75, 1] holds 0.9 (right): 1/4 * 0.1; (0.5, 0.75] holds 0.6, 0.7, 0.55 (1 of 3 right).
    expected = 0.25 * 0.1 + 0.75 * abs(1 / 3 - (0.6 + 0.7 + 0.55) / 3)
    assert expected_calibration_error(probs, labels, n_bins=4) == pytest.approx(expected)
    assert expected_calibration_error(np.eye(3), [0, 1, 2]) == 0.0  # confident and right
    with pytest.raises(ValueError, match="softmax"):
        expected_calibration_error(np.array([[2.0, 1.0]]), [0])


def test_classification_report_with_tasks() -> None:
    logits = torch.nn.functional.one_hot(torch.tensor(PREDS), 3).float() * 4
    sign_logits = torch.tensor([[1.0, 0], [0, 1], [0, 1], [1, 0], [1, 0], [0, 1]])
    preds = Predictions(
        logits=logits,
        labels=torch.tensor(LABELS),
        ids=[f"r{i}" for i in range(6)],
        task_logits={"label": logits, "sign": sign_logits},
        task_labels={"label": torch.tensor(LABELS), "sign": torch.tensor([0, 1, 0, 0, IGNORE_LABEL, 1])},
    )
    report = classification_report(preds, 3, class_names=["a", "b", "c"])
    json.dumps(report)
    assert report["n"] == 5 and report["accuracy"] == pytest.approx(0.6)
    assert report["macro_f1"] == pytest.approx(11 / 18)
    assert report["confusion_matrix"] == [[1, 0, 0], [0, 1, 1], [1, 0, 1]]
    b = report["per_class"]["b"]
    assert b == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert 0.0 <= report["ece"] <= 1.0
    assert list(report["tasks"]) == ["sign"]  # the primary task is the top level
    assert report["tasks"]["sign"]["n"] == 5
    assert report["tasks"]["sign"]["accuracy"] == pytest.approx(4 / 5)
    with pytest.raises(ValueError, match="2 names for 3 classes"):
        classification_report(preds, 3, class_names=["a", "b"])
