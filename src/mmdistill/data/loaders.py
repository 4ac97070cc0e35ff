"""In-memory dataset of preprocessed samples and a seeded (optionally distributed) DataLoader.

Shuffling depends only on ``(seed, epoch)``, in one process or many, so a resumed run replays
the same order: call :func:`set_loader_epoch` at the start of every epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    IterableDataset,
    Sampler,
    SequentialSampler,
)

from mmdistill.data.batch import Sample
from mmdistill.data.collate import collate

log = logging.getLogger(__name__)


class SampleDataset(Dataset[Sample]):
    """A list of preprocessed samples as a torch ``Dataset``."""

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]


class EpochShuffleSampler(Sampler[int]):
    """Random permutation seeded by ``seed + epoch`` (the single-process twin of
    ``DistributedSampler``'s shuffling), so epoch ``e`` has the same order after a resume."""

    def __init__(self, length: int, seed: int) -> None:
        self.length = length
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch``."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.length, generator=g).tolist())

    def __len__(self) -> int:
        return self.length


def make_loader(
    dataset: Dataset[Sample],
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    drop_last: bool = False,
    distributed: bool = False,
    num_workers: int = 0,
) -> DataLoader[Sample]:
    """A DataLoader that collates with :func:`~mmdistill.data.collate.collate`.

    With ``distributed=True`` and ``torch.distributed`` initialized, each rank gets its shard
    through a ``DistributedSampler`` (which pads the last shard with repeated samples when not
    ``drop_last``, so metrics on such a loader count a few samples twice); otherwise one process
    reads everything (a warning is logged when distributed was asked but is not initialized).

    Args:
        dataset: map-style dataset of samples.
        batch_size: samples per batch (per rank when distributed).
        shuffle: reshuffle every epoch (order fixed by seed and epoch).
        seed: shuffling seed.
        drop_last: drop the last incomplete batch.
        distributed: shard across ranks when torch.distributed is initialized.
        num_workers: loader worker processes (0 = load in the main process; samples are in
            memory, so workers rarely help).

    Returns:
        the loader; call :func:`set_loader_epoch` before each epoch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sampler: Sampler[int]
    if distributed and dist.is_available() and dist.is_initialized():
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    else:
        if distributed:
            log.warning("distributed loader requested but torch.distributed is not initialized; "
                        "this process reads the whole dataset")
        sampler = EpochShuffleSampler(len(dataset), seed) if shuffle else SequentialSampler(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=collate,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )


def make_stream_loader(
    dataset: IterableDataset[Sample], batch_size: int, *, drop_last: bool = False, num_workers: int = 0,
) -> DataLoader[Sample]:
    """A collating DataLoader over a streaming dataset (e.g. a
    :class:`~mmdistill.data.shard_stream.ShardStream`).

    The dataset itself splits the rows across DDP ranks and workers and shuffles them, so there is
    no sampler. Workers are not persistent: they are re-created each epoch and so receive the
    epoch set by :func:`set_loader_epoch` (a persistent worker would keep epoch 0's order).

    Args:
        dataset: an iterable dataset of samples.
        batch_size: samples per batch (per rank when distributed).
        drop_last: drop the last incomplete batch of each worker.
        num_workers: loader worker processes, each reading its own slice of the rows.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return DataLoader(dataset, batch_size=batch_size, drop_last=drop_last, num_workers=num_workers,
                      collate_fn=collate, persistent_workers=False)


def set_loader_epoch(loader: Iterable[Any], epoch: int) -> None:
    """Tell the loader (e.g. :class:`~mmdistill.training.epochs.StreamBatches`), its sampler or its
    streaming dataset which epoch starts (no-op when unshuffled)."""
    for owner in (loader, getattr(loader, "sampler", None), getattr(loader, "dataset", None)):
        set_epoch = getattr(owner, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
