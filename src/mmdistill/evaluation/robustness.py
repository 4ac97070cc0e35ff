"""Missing-modality robustness: accuracy of a model for every non-empty subset of its modalities.

A multimodal model that ships will meet rows where a camera, a microphone or a text field is
missing. For a model over M modalities this evaluates the 2^M - 1 subsets by hiding the other
modalities from every test batch (as if they had never been loaded), so the numbers say what
the deployed model does when inputs go missing, not what it does on complete rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import combinations

from torch import nn

from mmdistill.data.batch import Batch, drop_modalities
from mmdistill.evaluation.metrics import accuracy


def modality_subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``modalities``, largest first, each in the given order.

    >>> modality_subsets(["image", "audio"])
    [('image', 'audio'), ('image',), ('audio',)]
    """
    mods = list(modalities)
    return [c for k in range(len(mods), 0, -1) for c in combinations(mods, k)]


def subset_accuracy(
    model: nn.Module,
    batches: Iterable[Batch],
    modalities: Sequence[str],
    *,
    device: str = "cpu",
    full_accuracy: float | None = None,
) -> dict[str, float]:
    """Accuracy for each non-empty subset of ``modalities`` (keys like ``"image+audio"``).

    Args:
        model: a model taking a batch dict and returning ``ModelOutput``.
        batches: the evaluation batches (iterated once per subset, so pass a list).
        modalities: the model's modalities.
        device: where to run.
        full_accuracy: the accuracy with every modality, when the caller already measured it
            (that pass is then skipped).

    Shapes:
        each batch per the contract of :mod:`mmdistill.data.batch`; ``batch["label"]`` ``[B]``.
    """
    from mmdistill.training.predict import predict

    batches = list(batches)
    out: dict[str, float] = {}
    for subset in modality_subsets(modalities):
        if full_accuracy is not None and len(subset) == len(modalities):
            out["+".join(subset)] = full_accuracy
            continue
        hidden = [m for m in modalities if m not in subset]
        preds = predict(model, [drop_modalities(b, hidden) for b in batches], device=device)
        out["+".join(subset)] = accuracy(preds.logits, preds.labels)
    return out


def drop_one_losses(subsets: dict[str, float], modalities: Sequence[str]) -> dict[str, float]:
    """Per-modality contribution: accuracy lost when each single modality is removed.

    ``drop[m] = acc(all) - acc(all minus m)``, accuracies as fractions in [0, 1] (0.12 = 12 points);
    negative when the model does better without ``m``. Empty for a single-modality model (removing
    its only input leaves nothing to evaluate).

    >>> drop_one_losses({"image+audio": 0.75, "image": 0.5, "audio": 0.25}, ["image", "audio"])
    {'image': 0.5, 'audio': 0.25}
    """
    full = subsets["+".join(modalities)]
    return {
        m: full - subsets["+".join(x for x in modalities if x != m)]
        for m in modalities
        if len(modalities) > 1
    }


__all__ = ["drop_one_losses", "modality_subsets", "subset_accuracy"]
