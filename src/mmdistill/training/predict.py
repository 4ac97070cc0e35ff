"""Predictions over a whole split: :func:`predict` and :func:`evaluate`, gathered across DDP ranks.

Split from :mod:`mmdistill.training.loop` (which uses :func:`evaluate` for validation). Under
torchrun a loader sharded by a ``DistributedSampler`` gives every rank the predictions of the
whole split, in the one-process order, with the sampler's padding removed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from mmdistill.data.batch import IGNORE_LABEL, PRIMARY_TASK, Batch, move_batch
from mmdistill.errors import DataError
from mmdistill.evaluation.metrics import accuracy
from mmdistill.training.distributed import all_gather_object, is_distributed, is_main, unwrap
from mmdistill.training.steps import labels_for_task, masked_cross_entropy


@dataclass
class Predictions:
    """Model outputs over a whole split, on CPU, in loader order (rank-interleaved under DDP).

    Shapes:
        logits: ``[N, K]`` float32 primary-task logits.
        labels: ``[N]`` long (``IGNORE_LABEL`` where unlabelled).
        task_logits / task_labels: task → ``[N, K_t]`` / ``[N]`` for multi-task models, else empty.
    """

    logits: torch.Tensor
    labels: torch.Tensor
    ids: list[str]
    task_logits: dict[str, torch.Tensor] = field(default_factory=dict)
    task_labels: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def preds(self) -> torch.Tensor:
        """Top-1 class per row, ``[N]``."""
        return self.logits.argmax(-1)

    def __len__(self) -> int:
        return len(self.ids)


def _gather_predictions(local: Predictions) -> Predictions:
    """Gather every rank's predictions; undo DistributedSampler's split and drop its padding.

    DistributedSampler gives rank r the indices ``r, r + W, r + 2W, ...`` of its (padded) order,
    so taking row i of every rank in turn restores that order; the padding repeats the first
    samples, so keeping the first occurrence of each id drops it.
    """
    parts: list[Predictions] = all_gather_object(local)
    offsets = [0]
    for p in parts:
        offsets.append(offsets[-1] + len(p))
    seen: set[str] = set()
    order: list[int] = []
    for i in range(max(len(p) for p in parts)):
        for r, p in enumerate(parts):
            if i < len(p) and p.ids[i] not in seen:
                seen.add(p.ids[i])
                order.append(offsets[r] + i)
    index = torch.tensor(order, dtype=torch.long)

    def cat(tensors: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(tensors).index_select(0, index)

    all_ids = [i for p in parts for i in p.ids]
    return Predictions(
        logits=cat([p.logits for p in parts]),
        labels=cat([p.labels for p in parts]),
        ids=[all_ids[j] for j in order],
        task_logits={t: cat([p.task_logits[t] for p in parts]) for t in local.task_logits},
        task_labels={t: cat([p.task_labels[t] for p in parts]) for t in local.task_labels},
    )


@torch.inference_mode()
def predict(
    model: nn.Module, loader: Iterable[Batch], *, device: torch.device | str, progress: bool = False
) -> Predictions:
    """Run ``model`` (in eval mode; its mode is restored afterwards) over ``loader``.

    When the loader shards the split across DDP ranks (a ``DistributedSampler``), every rank gets
    the predictions of the whole split, gathered from all ranks with the sampler's padding
    duplicates removed by id. A loader that is not sharded is predicted locally, so one rank can
    evaluate alone.

    Raises:
        DataError: the loader yields no batches, or a batch has no ``"id"`` list.
    """
    net = unwrap(model)  # plain forward: no DDP buffer broadcast, nothing to synchronize
    was_training = net.training
    net.eval()
    logits, labels, ids = [], [], []
    task_logits: dict[str, list[torch.Tensor]] = {}
    task_labels: dict[str, list[torch.Tensor]] = {}
    try:
        for batch in tqdm(loader, desc="predict", leave=False, disable=not (progress and is_main())):
            if "id" not in batch:
                raise DataError("batch has no 'id' list; build batches with mmdistill.data.collate.collate")
            batch = move_batch(batch, device)
            out = net(batch)
            logits.append(out.logits.float().cpu())
            labels.append(batch["label"].cpu())
            ids.extend(str(i) for i in batch["id"])
            for name, t_logits in out.task_logits.items():
                t_labels = labels_for_task(batch, name)
                if t_labels is None:  # no labels for this head in this batch: predictions only
                    t_labels = torch.full((t_logits.shape[0],), IGNORE_LABEL, dtype=torch.long)
                task_logits.setdefault(name, []).append(t_logits.float().cpu())
                task_labels.setdefault(name, []).append(t_labels.cpu())
    finally:
        net.train(was_training)
    if not logits:
        raise DataError("predict: the loader yielded no batches; is the split empty?")
    result = Predictions(
        logits=torch.cat(logits),
        labels=torch.cat(labels).long(),
        ids=ids,
        task_logits={t: torch.cat(v) for t, v in task_logits.items()},
        task_labels={t: torch.cat(v).long() for t, v in task_labels.items()},
    )
    sharded = isinstance(getattr(loader, "sampler", None), DistributedSampler)
    return _gather_predictions(result) if sharded and is_distributed() else result


def evaluate(
    model: nn.Module, loader: Iterable[Batch], *, device: torch.device | str, progress: bool = False
) -> tuple[dict[str, float], Predictions]:
    """Cross-entropy and accuracy of the primary task (plus ``accuracy/<task>`` per extra task).

    The loss is plain CE on the primary logits whatever the training objective, so validation
    losses of teacher, baseline and distilled students are comparable.
    """
    preds = predict(model, loader, device=device, progress=progress)
    metrics = {
        "loss": float(masked_cross_entropy(preds.logits, preds.labels)),
        "accuracy": accuracy(preds.logits, preds.labels),
    }
    for task, t_logits in preds.task_logits.items():
        if task != PRIMARY_TASK:
            metrics[f"accuracy/{task}"] = accuracy(t_logits, preds.task_labels[task])
    return metrics, preds


__all__ = ["Predictions", "evaluate", "predict"]
