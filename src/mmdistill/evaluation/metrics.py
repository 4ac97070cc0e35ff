"""Classification metrics in NumPy (no scikit-learn): accuracy, macro-F1, confusion matrix,
agreement between two models, expected calibration error, and a JSON-ready report.

Every function accepts NumPy arrays or torch tensors; rows whose label is ``IGNORE_LABEL`` are
excluded. Wherever predictions are expected, ``[N, K]`` scores (logits or probabilities) are
accepted too and reduced with argmax.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from mmdistill.data.batch import IGNORE_LABEL

if TYPE_CHECKING:  # loop.py imports this module; only the type is needed here
    from mmdistill.training.predict import Predictions


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _labels_of(x: Any) -> np.ndarray:
    """Class indices from ``[N]`` predictions or ``[N, K]`` scores."""
    a = _np(x)
    if a.ndim == 2:
        return a.argmax(-1)
    if a.ndim != 1:
        raise ValueError(f"expected predictions [N] or scores [N, K], got shape {a.shape}")
    return a.astype(np.int64)


def _valid(preds: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if preds.shape[0] != labels.shape[0]:
        raise ValueError(f"predictions and labels differ in length: {preds.shape[0]} vs {labels.shape[0]}")
    keep = labels != IGNORE_LABEL
    return preds[keep], labels[keep]


def accuracy(logits_or_preds: Any, labels: Any) -> float:
    """Fraction of labelled rows predicted correctly; NaN when no row is labelled.

    Shapes:
        logits_or_preds: ``[N, K]`` scores or ``[N]`` class indices; labels: ``[N]``.
    """
    preds, y = _valid(_labels_of(logits_or_preds), _np(labels).astype(np.int64))
    return float((preds == y).mean()) if y.size else float("nan")


def confusion_matrix(preds: Any, labels: Any, num_classes: int) -> np.ndarray:
    """Counts with rows = true class and columns = predicted class.

    Shapes:
        preds: ``[N]`` (or ``[N, K]`` scores); labels: ``[N]``. Returns ``[K, K]`` int64.
    """
    p, y = _valid(_labels_of(preds), _np(labels).astype(np.int64))
    for name, a in (("prediction", p), ("label", y)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} values must be in [0, {num_classes}), got range [{a.min()}, {a.max()}]")
    flat = np.bincount(y * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined).

    Shapes:
        cm: ``[K, K]``; each returned array is ``[K]``.
    """
    tp = np.diag(cm).astype(np.float64)
    predicted, support = cm.sum(0).astype(np.float64), cm.sum(1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def macro_f1(preds: Any, labels: Any, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes that occur in the labels or predictions.

    Classes seen in neither are left out (scikit-learn's default when ``labels`` is not given),
    so a test split lacking a class is not penalised for it. NaN when no row is labelled.
    """
    cm = confusion_matrix(preds, labels, num_classes)
    seen = (cm.sum(0) + cm.sum(1)) > 0
    if not seen.any():
        return float("nan")
    return float(per_class_scores(cm)["f1"][seen].mean())


def agreement(preds_a: Any, preds_b: Any) -> float:
    """Fraction of rows where two models predict the same class (e.g. student vs teacher top-1).

    Shapes:
        preds_a, preds_b: ``[N]`` class indices or ``[N, K]`` scores.
    """
    a, b = _labels_of(preds_a), _labels_of(preds_b)
    if a.shape != b.shape:
        raise ValueError(f"agreement needs predictions of equal length, got {a.shape[0]} and {b.shape[0]}")
    return float((a == b).mean()) if a.size else float("nan")


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """ECE (Guo et al., 2017): ``sum_b |B_b| / N * |acc(B_b) - conf(B_b)|``.

    Rows are binned by confidence ``max_k p_k`` into ``n_bins`` equal-width bins ``(lo, hi]``
    (confidence 0 falls in the first bin).

    Shapes:
        probs: ``[N, K]`` probabilities (rows sum to 1: apply softmax to logits first); labels: ``[N]``.
    """
    p = _np(probs).astype(np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be [N, K], got shape {p.shape}")
    if p.size and not np.allclose(p.sum(1), 1.0, atol=1e-3):
        raise ValueError("probs rows must sum to 1; pass softmax(logits), not logits")
    y = _np(labels).astype(np.int64)
    keep = y != IGNORE_LABEL
    p, y = p[keep], y[keep]
    if not y.size:
        return float("nan")
    conf, correct = p.max(1), (p.argmax(1) == y).astype(np.float64)
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return float(ece)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _task_summary(logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    k = logits.shape[1]
    return {
        "n": int((labels != IGNORE_LABEL).sum()),
        "accuracy": accuracy(logits, labels),
        "macro_f1": macro_f1(logits, labels, k),
    }


def classification_report(
    predictions: Predictions, num_classes: int, class_names: list[str] | None = None
) -> dict[str, Any]:
    """Quality of the primary task (and each extra task) as a JSON-serializable dict.

    Returns:
        ``{"n", "accuracy", "macro_f1", "ece", "confusion_matrix": [[...]] (rows true),
        "class_names", "per_class": {name: {"precision", "recall", "f1", "support"}},
        "tasks": {task: {"n", "accuracy", "macro_f1"}}}`` (``tasks`` holds every head except the
        primary ``"label"``; empty for single-task models).
    """
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} names for {num_classes} classes")
    logits, labels = _np(predictions.logits), _np(predictions.labels).astype(np.int64)
    cm = confusion_matrix(logits, labels, num_classes)
    scores = per_class_scores(cm)
    report: dict[str, Any] = {
        "n": int((labels != IGNORE_LABEL).sum()),
        "accuracy": accuracy(logits, labels),
        "macro_f1": macro_f1(logits, labels, num_classes),
        "ece": expected_calibration_error(_softmax(logits), labels) if logits.size else float("nan"),
        "confusion_matrix": cm.tolist(),
        "class_names": names,
        "per_class": {
            name: {
                "precision": float(scores["precision"][i]),
                "recall": float(scores["recall"][i]),
                "f1": float(scores["f1"][i]),
                "support": int(scores["support"][i]),
            }
            for i, name in enumerate(names)
        },
        "tasks": {},
    }
    for task, t_logits in predictions.task_logits.items():
        if task != "label":  # the primary task is reported above
            t_labels = _np(predictions.task_labels[task]).astype(np.int64)
            report["tasks"][task] = _task_summary(_np(t_logits), t_labels)
    return report
