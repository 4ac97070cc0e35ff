"""Epochs over a streaming training split: :class:`StreamBatches`, the train loader of ``data.stream``.

:func:`~mmdistill.training.loop.fit` needs three things of a train loader: ``len()`` (steps per
epoch, for the LR schedule and progress bars), a way to reshuffle per epoch (``set_epoch``) and,
under DDP, **the same number of batches on every rank** (each step all-reduces gradients: a rank
with one batch more would wait forever). A :class:`~mmdistill.data.shard_stream.ShardStream` gives every
rank ``R // W`` or ``R // W + 1`` rows, so its batch counts may differ by one; this wrapper fixes
the count instead:

- every rank runs ``steps = ceil((R // W) / B)`` batches per epoch (``B`` the per-rank batch);
- batches are filled in stream order with ``B`` rows each, the last one with what is left (at most
  ``B``); rows past ``steps * B`` are dropped. That is at most one row per rank and epoch, only on a
  rank holding ``R // W + 1`` rows when ``R // W`` is a multiple of ``B`` (never in a single
  process), and a different row each epoch since the order is reshuffled.

Batches are formed in the main process from single samples (DataLoader ``batch_size=None``), so
DataLoader workers do the decoding and preprocessing and the batch count does not depend on the
number of workers. The order depends only on the stream's seed and the epoch (not on any RNG
state), so a resumed run reads the same batches as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from itertools import islice
from typing import Any

from torch.utils.data import DataLoader

from mmdistill.data.batch import Batch
from mmdistill.data.collate import collate
from mmdistill.data.shard_stream import ShardStream
from mmdistill.errors import DataError


def _one(sample: Any) -> Any:  # module level: DataLoader workers pickle their collate_fn
    return sample


class StreamBatches:
    """Collated batches of ``batch_size`` over ``stream``, ``len(self)`` of them on every rank.

    Args:
        stream: the training split's stream (shuffled per epoch, split across ranks and workers).
        batch_size: rows per batch on this rank (>= 1).
        num_workers: DataLoader workers decoding and preprocessing rows (each reads its own slice).
    """

    def __init__(self, stream: ShardStream, batch_size: int, *, num_workers: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.stream = stream
        self.batch_size = int(batch_size)
        self.loader = DataLoader(stream, batch_size=None, num_workers=num_workers, collate_fn=_one,
                                 persistent_workers=False)  # re-created each epoch: workers see set_epoch

    def __len__(self) -> int:
        return math.ceil(self.stream.min_rank_rows() / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Select ``epoch``'s order (:meth:`ShardStream.set_epoch`); :func:`fit` calls it every epoch."""
        self.stream.set_epoch(epoch)

    def __iter__(self) -> Iterator[Batch]:
        steps = len(self)
        rows = iter(self.loader)
        try:
            for step in range(steps):
                chunk = list(islice(rows, self.batch_size))
                if not chunk:  # cannot happen: the smallest rank holds at least (steps - 1) * B + 1 rows
                    raise DataError(f"the training stream ended after {step} of {steps} batches")
                yield collate(chunk)
        finally:
            del rows  # stops the workers, dropping the (at most one) row past steps * B
