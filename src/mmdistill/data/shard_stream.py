"""Stream one split of a shard folder with bounded memory: :class:`ShardStream` and its epoch plan.

A torch ``IterableDataset`` over the Parquet shards of :mod:`mmdistill.data.shards`: one row group
plus a shuffle buffer per reader, reshuffled per epoch, and split across DDP ranks and DataLoader
workers so every row is read exactly once per epoch (:func:`plan_epoch`). ``data.stream: true``
streams the train split with it (:mod:`mmdistill.recipes.data`, :mod:`mmdistill.training.epochs`);
:meth:`ShardStream.head` gives the split's first rows in packing order (fixed inputs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from mmdistill.data.records import SPLITS, RawSample
from mmdistill.data.shards import (
    RowDecoder,
    ShardIndex,
    packed_rows,
    pyarrow_parquet,
    read_index,
    verify_shard,
)

Piece = tuple[int, int, int, int]
"""``(shard number, row group, first row, end row)`` within the row group: one reader's share."""


def plan_epoch(
    groups: Sequence[tuple[int, int, int]], *, seed: int, epoch: int, shuffle: bool, rank: int,
    world_size: int, worker: int, num_workers: int,
) -> list[Piece]:
    """The pieces of row groups one reader (``rank`` × ``worker``) reads in ``epoch``.

    The row groups ``(shard, group, rows)`` are put in one order (seeded by ``seed + epoch`` when
    ``shuffle``), laid end to end as rows ``0..R-1``, and cut into contiguous slices: first one per
    rank (sizes differ by at most one row), then each rank's slice into one per worker. Every row
    is in exactly one slice, whatever the shard count, so no row is repeated or dropped; a slice
    boundary that falls inside a row group splits that group at the row.
    """
    order = list(groups)
    if shuffle:
        perm = np.random.default_rng([seed, epoch]).permutation(len(order))
        order = [order[i] for i in perm]
    total = sum(n for _, _, n in order)
    lo_r, hi_r = rank * total // world_size, (rank + 1) * total // world_size
    n = hi_r - lo_r
    lo, hi = lo_r + worker * n // num_workers, lo_r + (worker + 1) * n // num_workers
    pieces: list[Piece] = []
    start = 0
    for shard, group, rows in order:
        end = start + rows
        a, b = max(lo, start), min(hi, end)
        if a < b:
            pieces.append((shard, group, a - start, b - start))
        start = end
    return pieces


def _dist_rank() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ShardStream(IterableDataset):
    """Stream one split of a shard folder with bounded memory.

    Per epoch (:meth:`set_epoch`), the row groups of all shards are put in a seeded order and cut
    into one contiguous slice per (DDP rank × DataLoader worker) (:func:`plan_epoch`), so each row
    is read exactly once per epoch across all readers. Each reader holds at most one decoded row
    group plus ``buffer_size`` samples: rows enter a shuffle buffer and leave it at a random slot
    (seeded by seed, epoch, rank and worker), so the order is the same for the same seed and epoch.
    Shards are checked against their sha256 when a reader first opens them (once per process: a
    DataLoader worker, re-created each epoch, checks the shards it reads again).

    Args:
        folder: the shard folder (or its parsed :class:`ShardIndex`).
        split: ``train``, ``val`` or ``test``.
        transform: applied to every :class:`RawSample` (e.g. a
            :class:`~mmdistill.data.preprocess.Preprocessor`); None yields the raw records.
        shuffle: shuffle row-group order and rows (else: packing order, no buffer).
        seed: shuffling seed.
        buffer_size: shuffle-buffer capacity in samples (>= 1).
        rank, world_size: this process's DDP rank and the world size; None = from
            ``torch.distributed`` when initialized, else 0 and 1.
        tasks, target_sample_rate: as for the manifest reader.
        verify: check each shard's sha256 before reading it.

    Attributes:
        peak_buffer: most samples the shuffle buffer held in the last iteration (this process).
        peak_held: most decoded rows held at once (buffer + rest of the current row group).
    """

    def __init__(
        self, folder: str | Path | ShardIndex, split: str, *,
        transform: Callable[[RawSample], Any] | None = None, shuffle: bool = True, seed: int = 0,
        buffer_size: int = 256, rank: int | None = None,
        world_size: int | None = None, tasks: Sequence[str] = (), target_sample_rate: int = 16000,
        verify: bool = True,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        self.index = folder if isinstance(folder, ShardIndex) else read_index(folder)
        self.split = split
        self.transform = transform
        self.shuffle = shuffle
        self.seed = int(seed)
        self.buffer_size = int(buffer_size)
        self.rank, self.world_size = rank, world_size
        self.decode = RowDecoder(self.index, tasks, target_sample_rate)
        self.verify = verify
        self.verified: set[int] = set()  # shards this process has checked: kept across epochs
        self.epoch = 0
        self.peak_buffer = 0
        self.peak_held = 0
        self.groups = [(s, g, int(n)) for s, entry in enumerate(self.index.splits[split])
                       for g, n in enumerate(entry["row_groups"])]

    def derive(self, **changes: Any) -> ShardStream:
        """A new stream over the same split and parsed index, with this one's options except ``changes``
        (any ``__init__`` keyword: ``transform``, ``shuffle``, ``seed``, ``buffer_size``, ``rank``,
        ``world_size``, ``verify``; ``tasks``/``target_sample_rate`` keep the decoder's)."""
        options: dict[str, Any] = {
            "transform": self.transform, "shuffle": self.shuffle, "seed": self.seed,
            "buffer_size": self.buffer_size, "rank": self.rank, "world_size": self.world_size,
            "tasks": self.decode.tasks, "target_sample_rate": self.decode.rate, "verify": self.verify,
        }
        return ShardStream(self.index, self.split, **(options | changes))

    def set_epoch(self, epoch: int) -> None:
        """Select the order of ``epoch`` (call before iterating; DataLoader workers are re-created
        each epoch by :func:`~mmdistill.data.loaders.make_stream_loader`, so they see it)."""
        self.epoch = int(epoch)

    def _reader(self) -> tuple[int, int, int, int]:
        rank, world = self.rank, self.world_size
        if rank is None or world is None:
            rank, world = _dist_rank()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank, world, worker, workers

    def __len__(self) -> int:
        """Rows this rank reads per epoch (all its workers together): its slice of the split."""
        rank, world, _, _ = self._reader()
        total = sum(n for _, _, n in self.groups)
        return (rank + 1) * total // world - rank * total // world

    def min_rank_rows(self) -> int:
        """Rows of the smallest rank's slice per epoch (``R // world_size``): ranks read it or one more."""
        _, world, _, _ = self._reader()
        return sum(n for _, _, n in self.groups) // world

    def head(self, n: int) -> list[Any]:
        """The first ``n`` rows of the split in packing order (fewer if it is shorter), transformed.

        Independent of the epoch, ``shuffle``, the DDP rank and the DataLoader worker: every process
        gets the same rows, which makes fixed inputs (pruning's Taylor batches, quantization
        calibration, an export's example input) of a streamed split. Reads only the row groups those
        rows are in, holding one decoded row group plus the ``n`` rows returned.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        rows = islice(packed_rows(self.index, self.split, self.decode, verify=self.verify), n)
        return [self.transform(r) if self.transform is not None else r for r in rows]

    def pieces(self) -> list[Piece]:
        """This reader's pieces of the current epoch (see :func:`plan_epoch`)."""
        rank, world, worker, workers = self._reader()
        return plan_epoch(self.groups, seed=self.seed, epoch=self.epoch, shuffle=self.shuffle, rank=rank,
                          world_size=world, worker=worker, num_workers=workers)

    def __iter__(self) -> Iterator[Any]:
        pq = pyarrow_parquet()
        rank, world, worker, workers = self._reader()
        rng = np.random.default_rng([self.seed, self.epoch, rank, worker, 1])
        entries = self.index.splits[self.split]
        files: dict[int, Any] = {}
        buffer: list[Any] = []
        self.peak_buffer = self.peak_held = 0
        for shard, group, a, b in self.pieces():
            entry = entries[shard]
            if self.verify and shard not in self.verified:
                verify_shard(self.index, entry)  # once per shard and process, even if its groups are apart
                self.verified.add(shard)
            if shard not in files:
                files = {shard: pq.ParquetFile(self.index.root / entry["file"])}  # one open shard at a time
            rows = files[shard].read_row_group(group).slice(a, b - a).to_pylist()
            for i, row in enumerate(rows):
                raw = self.decode(row, entry["file"])
                item = self.transform(raw) if self.transform is not None else raw
                if not self.shuffle:
                    yield item
                    continue
                buffer.append(item)
                self.peak_buffer = max(self.peak_buffer, len(buffer))
                self.peak_held = max(self.peak_held, len(buffer) + len(rows) - i - 1)
                if len(buffer) >= self.buffer_size:
                    yield self._pop(buffer, rng)
            del rows
        while buffer:
            yield self._pop(buffer, rng)

    @staticmethod
    def _pop(buffer: list[Any], rng: np.random.Generator) -> Any:
        j = int(rng.integers(len(buffer)))
        buffer[j], buffer[-1] = buffer[-1], buffer[j]
        return buffer.pop()
