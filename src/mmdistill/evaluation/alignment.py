"""Teacher–student feature alignment per modality: linear CKA and mean cosine similarity.

How close a student's representations are to its teacher's, encoder by encoder and after fusion.
Linear CKA (Kornblith et al., ICML 2019, "Similarity of Neural Network Representations
Revisited") compares two representations of the same rows even when their widths differ, and is
invariant to orthogonal transforms and isotropic scaling of either side, so a student that learnt
the teacher's features up to a rotation still scores 1. Mean cosine similarity is stricter: it
asks for the same coordinates, so it is only defined when the widths match (e.g. a student
trained with a feature-matching loss and no adapter), and is reported as None otherwise.

Everything is computed in float64 with NumPy; the forward passes run under
``torch.inference_mode`` in eval mode.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from mmdistill.data.batch import Batch, move_batch
from mmdistill.errors import DataError

POOLED = ".pooled"
FUSED = "fused"


def _as_2d(name: str, a: Any) -> np.ndarray:
    if hasattr(a, "detach"):  # torch.Tensor
        a = a.detach().cpu().numpy()
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a [N, D] matrix of features, got shape {arr.shape}")
    return arr


def _pair(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_2d("x", x), _as_2d("y", y)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"x and y must hold the same rows: x has {a.shape[0]} rows, y has {b.shape[0]}")
    return a, b


def _is_constant(raw: np.ndarray, centered: np.ndarray) -> bool:
    """No variance over rows, up to rounding of the column means (relative to the raw scale)."""
    return float(np.linalg.norm(centered)) <= 1e-10 * max(float(np.linalg.norm(raw)), 1e-300)


def linear_cka(x: Any, y: Any) -> float:
    """Linear CKA of two representations of the same N rows (Kornblith et al., ICML 2019, eq. 5).

    ``CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F * ||Y^T Y||_F)`` with ``X`` and ``Y`` column-centered
    (each feature minus its mean over the rows), computed in float64 through the ``D x D``
    products, so memory grows with the widths, not with N^2. It equals HSIC with linear kernels,
    normalized; for one feature on each side it is the squared Pearson correlation.

    Properties: 1.0 for identical inputs; unchanged by an orthogonal transform or an isotropic
    scaling of either side (and by adding a constant vector to every row); in ``[0, 1]``. For
    independent random features it is small but not zero (about ``sqrt(D1 * D2) / N``), so compare
    values measured on the same rows.

    Args:
        x: ``[N, D1]`` features (NumPy array or torch tensor).
        y: ``[N, D2]`` features of the same rows, in the same order.

    Returns:
        The similarity, a float in ``[0, 1]``.

    Raises:
        ValueError: not 2-D, different row counts, fewer than 2 rows, or a side that is constant
            over the rows (zero variance: CKA is undefined, 0 / 0).
    """
    a, b = _pair(x, y)
    if a.shape[0] < 2:
        raise ValueError(f"linear CKA needs at least 2 rows, got {a.shape[0]}")
    ac, bc = a - a.mean(0, keepdims=True), b - b.mean(0, keepdims=True)
    for name, raw, cen in (("x", a, ac), ("y", b, bc)):
        if _is_constant(raw, cen):
            raise ValueError(f"linear CKA is undefined: {name} is constant over its {a.shape[0]} rows "
                             "(zero variance after centering)")
    cross = float(np.linalg.norm(bc.T @ ac) ** 2)
    norm = float(np.linalg.norm(ac.T @ ac)) * float(np.linalg.norm(bc.T @ bc))
    return float(min(1.0, max(0.0, cross / norm)))  # clipped: rounding can give 1 + 1e-16


def mean_cosine(x: Any, y: Any, *, eps: float = 1e-12) -> float | None:
    """Mean over rows of ``cos(x_i, y_i) = x_i . y_i / max(||x_i|| ||y_i||, eps)`` (not centered).

    Only meaningful when both sides live in the same coordinates, so it is defined only when
    the widths match.

    Shapes:
        x: ``[N, D1]``, y: ``[N, D2]`` (same rows, same order).

    Returns:
        A float in ``[-1, 1]`` (a zero row counts as cosine 0), or None when ``D1 != D2``.

    Raises:
        ValueError: not 2-D, different row counts, or no rows.
    """
    a, b = _pair(x, y)
    if a.shape[1] != b.shape[1]:
        return None
    if a.shape[0] == 0:
        raise ValueError("mean cosine similarity needs at least 1 row, got 0")
    dots = (a * b).sum(1)
    norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), eps)
    return float(np.clip(dots / norms, -1.0, 1.0).mean())


@dataclass(frozen=True)
class FeatureSet:
    """One model's features over a list of batches, row-aligned with ``ids``.

    Attributes:
        ids: the row ids, in batch order.
        features: ``"<modality>.pooled"`` and ``"fused"`` → ``[N, D]`` float32 (CPU).
        present: modality → ``[N]`` bool, True where the input row holds that modality (for
            every modality of the batches, whether or not the model uses it).
    """

    ids: list[str]
    features: dict[str, torch.Tensor]
    present: dict[str, torch.Tensor]

    @property
    def modalities(self) -> list[str]:
        """The model's modalities: those with a ``"<m>.pooled"`` feature."""
        return [k[: -len(POOLED)] for k in self.features if k.endswith(POOLED)]


def _row_presence(batch: Batch, modality: str, rows: int) -> torch.Tensor:
    """``[B]`` bool per the batch contract: absent key → no row; no mask → every row."""
    if not isinstance(batch.get(modality), torch.Tensor):
        return torch.zeros(rows, dtype=torch.bool)
    mask = batch.get("present", {}).get(modality)
    return torch.ones(rows, dtype=torch.bool) if mask is None else mask.detach().cpu().bool()


@torch.inference_mode()
def collect_features(model: nn.Module, batches: Iterable[Batch], *, device: str = "cpu") -> FeatureSet:
    """Run ``model`` (eval mode, restored afterwards) over ``batches`` and keep its features.

    Shapes:
        each batch per :mod:`mmdistill.data.batch`; the model returns ``ModelOutput`` whose
        ``features`` hold ``"<m>.pooled"`` ``[B, D_m]`` and ``"fused"`` ``[B, D_f]``.

    Raises:
        DataError: no batches, or a batch without an ``"id"`` list.
    """
    was_training = model.training
    model.eval()
    ids: list[str] = []
    feats: dict[str, list[torch.Tensor]] = {}
    batch_list: list[Batch] = []
    try:
        for batch in batches:
            if "id" not in batch:
                raise DataError("batch has no 'id' list; build batches with mmdistill.data.collate.collate")
            out = model(move_batch(batch, device))
            ids.extend(str(i) for i in batch["id"])
            batch_list.append(batch)
            for key, value in out.features.items():
                feats.setdefault(key, []).append(value.detach().float().cpu())
    finally:
        model.train(was_training)
    if not ids:
        raise DataError("collect_features: no batches given; is the split empty?")
    mods = [k[: -len(POOLED)] for k in feats if k.endswith(POOLED)]
    mods += [m for b in batch_list for m in b.get("present", {}) if m not in mods]
    mods = list(dict.fromkeys(mods))
    present = {m: torch.cat([_row_presence(b, m, len(b["id"])) for b in batch_list]) for m in mods}
    return FeatureSet(ids=ids, features={k: torch.cat(v) for k, v in feats.items()}, present=present)


def _measures(x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    n = int(x.shape[0])
    try:
        cka: float | None = linear_cka(x, y)
    except ValueError:  # fewer than 2 rows or a constant side: undefined, reported as None
        cka = None
    return {
        "linear_cka": cka,
        "cosine": mean_cosine(x, y) if n else None,
        "n": n,
        "dims": [int(x.shape[1]), int(y.shape[1])],
    }


def compare_features(student: FeatureSet, teacher: FeatureSet) -> dict[str, dict[str, Any]]:
    """Alignment of ``student`` with ``teacher`` for each modality both models have, and after fusion.

    A modality's entry uses only the rows whose input holds that modality (absent rows carry
    zero placeholders, not features); ``"fused"`` uses every row. Modalities one of the two
    models lacks are left out.

    Returns:
        ``{"<modality>": {...}, ..., "fused": {...}}`` (teacher's modality order), each with
        ``linear_cka`` (float in [0, 1], None with fewer than 2 rows or a constant side),
        ``cosine`` (mean cosine similarity, None unless the widths match), ``n`` (rows used) and
        ``dims`` (``[student width, teacher width]``).

    Raises:
        ValueError: the two feature sets are not of the same rows in the same order.
    """
    if student.ids != teacher.ids:
        raise ValueError(f"student and teacher features cover different rows ({len(student.ids)} vs "
                         f"{len(teacher.ids)} ids, or another order); collect both from the same batches")
    out: dict[str, dict[str, Any]] = {}
    for m in [m for m in teacher.modalities if m in student.modalities]:
        rows = student.present.get(m, torch.zeros(len(student.ids), dtype=torch.bool))
        key = m + POOLED
        out[m] = _measures(student.features[key][rows], teacher.features[key][rows])
    out[FUSED] = _measures(student.features[FUSED], teacher.features[FUSED])
    return out


def feature_alignment(
    student: nn.Module, teacher: nn.Module, batches: Iterable[Batch], *, device: str = "cpu"
) -> dict[str, dict[str, Any]]:
    """Run ``student`` and ``teacher`` over the same ``batches`` and compare their features.

    Rows where a modality is absent from the input are excluded from that modality's entry;
    see :func:`compare_features` for the returned dict. To compare several students with one
    teacher, collect the teacher's :class:`FeatureSet` once with :func:`collect_features`.
    """
    batches = list(batches)
    return compare_features(collect_features(student, batches, device=device),
                            collect_features(teacher, batches, device=device))


def alignment_summary(alignment: Mapping[str, Mapping[str, Any]]) -> str:
    """A short ``"fused 0.91, image 0.85"`` string of the linear CKA values, for log lines."""
    return ", ".join(f"{k} {v['linear_cka']:.2f}" for k, v in alignment.items()
                     if v.get("linear_cka") is not None)


__all__ = [
    "FeatureSet",
    "alignment_summary",
    "collect_features",
    "compare_features",
    "feature_alignment",
    "linear_cka",
    "mean_cosine",
]
