"""Read a sharded dataset: Parquet shards written by ``mmdistill data pack`` (format: ``docs/data.md``).

A shard folder holds ``<split>-00000.parquet ...`` and ``index.json`` (format version, classes,
per-split shard list with rows, row groups and sha256 of every shard, and the fingerprint of the
source manifest). Each Parquet row is one manifest row with the media files' *bytes* (not decoded
pixels), so packing is lossless and decoding runs the manifest's own loaders
(:func:`~mmdistill.data.transforms.image.load_image`, :func:`~mmdistill.data.transforms.audio.load_audio`).

Two ways to read:

- :func:`read_split`: every record of a split in memory (what ``data.source: shards`` does, and
  ``data.stream: true`` for val/test); :func:`iter_split`: the same records one at a time (one row
  group in memory); :func:`read_column`: one column (the tokenizer's text).
- :class:`ShardStream`: a torch ``IterableDataset`` that streams a split with bounded memory (one
  row group plus a shuffle buffer per reader), reshuffled per epoch, and split across DDP ranks
  and DataLoader workers so every row is read exactly once per epoch. ``data.stream: true`` streams the
  train split with it (:mod:`mmdistill.recipes.data`, :mod:`mmdistill.training.epochs`);
  :meth:`ShardStream.head` gives the split's first rows in packing order (fixed inputs).

pyarrow is an optional dependency (``mmdistill[shards]``), imported lazily.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from mmdistill.data.records import SPLITS, RawSample
from mmdistill.data.transforms.audio import load_audio
from mmdistill.data.transforms.image import load_image
from mmdistill.errors import DataError, MissingDependencyError

FORMAT = "mmdistill-shards"
VERSION = 1
INDEX_FILE = "index.json"
REPACK = "re-create the folder with `mmdistill data pack MANIFEST OUT --overwrite`"


def pyarrow_parquet() -> Any:
    """``pyarrow.parquet``, or a :class:`MissingDependencyError` naming the ``shards`` extra."""
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise MissingDependencyError("pyarrow", "shards", "reading or writing Parquet shards") from e
    return pq


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in ``chunk``-byte pieces (bounded memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class ShardIndex:
    """The parsed ``index.json`` of a shard folder.

    Attributes:
        root: the shard folder.
        classes: class names of the primary label (index = class id).
        task_classes: extra task → its class names.
        splits: split → list of shard entries ``{"file", "rows", "row_groups": [rows...], "sha256"}``.
        source: where the data came from (``manifest`` path, its ``sha256``, ``rows_read``).
        skipped: manifest rows left out at pack time (``row``, ``id``, ``reason``).
    """

    root: Path
    classes: list[str]
    task_classes: dict[str, list[str]]
    splits: dict[str, list[dict[str, Any]]]
    source: dict[str, Any]
    skipped: list[dict[str, Any]]

    def rows(self, split: str) -> int:
        return sum(int(s["rows"]) for s in self.splits.get(split, []))


def read_index(folder: str | Path) -> ShardIndex:
    """Read and check ``folder/index.json``.

    Raises:
        DataError: the folder or index is missing, unreadable, of another format or version, or
            names a shard file that is not there.
    """
    root = Path(folder)
    path = root / INDEX_FILE
    if not root.is_dir():
        raise DataError("shard folder not found; check `data.shards` (the OUT folder of `mmdistill data "
                        "pack`)", path=str(root))
    if not path.is_file():
        raise DataError(f"no {INDEX_FILE} in the shard folder (packing never finished, or not a shard "
                        f"folder); {REPACK}", path=str(root))
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"unreadable index ({e}); {REPACK}", path=str(path)) from e
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise DataError(f"not an mmdistill shard index (format {obj.get('format')!r} if a dict); {REPACK}",
                        path=str(path))
    if obj.get("version") != VERSION:
        raise DataError(f"shard format version {obj.get('version')!r}, this mmdistill reads version "
                        f"{VERSION}; {REPACK}", path=str(path))
    splits = {s: list(obj["splits"].get(s, [])) for s in SPLITS}
    for entries in splits.values():
        for e in entries:
            if not (root / e["file"]).is_file():
                raise DataError(f"shard '{e['file']}' listed in {INDEX_FILE} is missing; {REPACK}",
                                path=str(root))
    return ShardIndex(root=root, classes=list(obj["classes"]), task_classes=dict(obj.get("task_classes", {})),
                      splits=splits, source=dict(obj.get("source", {})), skipped=list(obj.get("skipped", [])))


def verify_shard(index: ShardIndex, entry: dict[str, Any]) -> None:
    """Compare a shard's sha256 with the index; a damaged or replaced shard raises DataError."""
    path = index.root / entry["file"]
    got = sha256_file(path)
    if got != entry["sha256"]:
        raise DataError(f"checksum mismatch in shard '{entry['file']}' (sha256 {got[:16]}..., the index "
                        f"expects {entry['sha256'][:16]}...): the file is damaged or was changed after "
                        f"packing; {REPACK}", path=str(path))


class RowDecoder:
    """A Parquet row (dict) → :class:`RawSample`, with labels as indices of the index's classes."""

    def __init__(self, index: ShardIndex, tasks: Sequence[str] = (), target_sample_rate: int = 16000) -> None:
        unknown = [t for t in tasks if t not in index.task_classes]
        if unknown:
            raise DataError(f"task(s) {unknown} were not packed (packed tasks: "
                            f"{sorted(index.task_classes)}); pack with `--task NAME` or remove them from "
                            "data.tasks", path=str(index.root))
        self.index = index
        self.tasks = tuple(tasks)
        self.rate = int(target_sample_rate)
        self.class_index = {c: i for i, c in enumerate(index.classes)}
        self.task_index = {t: {c: i for i, c in enumerate(index.task_classes[t])} for t in self.tasks}

    def __call__(self, row: dict[str, Any], shard: str) -> RawSample:
        where = f"{self.index.root / shard}, id {row['id']!r}"
        try:
            image = audio = None
            if row["image"] is not None:
                image = load_image(row["image_name"] or "image", row["image"])
            if row["audio"] is not None:
                audio = load_audio(row["audio_name"] or "audio", self.rate, row["audio"])
        except DataError as e:
            raise DataError(f"{where}: {e}; {REPACK}") from e
        packed = json.loads(row["tasks"]) if row["tasks"] else {}
        meta: dict[str, Any] = {"shards": str(self.index.root), "shard": shard, "row": row["row"],
                                "label_name": row["label"]}
        for key in ("image", "audio"):
            if row[f"{key}_name"] is not None:
                meta[key] = row[f"{key}_name"]
        return RawSample(
            id=row["id"], label=self.class_index[row["label"]], split=row["split"], image=image,
            text=row["text"], audio=audio, sample_rate=self.rate,
            tasks={t: self.task_index[t][packed[t]] for t in self.tasks if t in packed}, meta=meta,
        )


def packed_rows(
    index: ShardIndex, split: str, decode: RowDecoder, *, verify: bool = True
) -> Iterator[RawSample]:
    """The records of ``split`` one at a time, in packing order (= manifest file order).

    Holds one decoded row group at a time; a shard's sha256 is checked when it is first opened, so
    stopping early (``itertools.islice``) reads and checks only the shards it reached.

    Raises:
        DataError: a shard is damaged (checksum) or a stored file does not decode.
    """
    pq = pyarrow_parquet()
    for entry in index.splits[split]:
        if verify:
            verify_shard(index, entry)
        pf = pq.ParquetFile(index.root / entry["file"])
        for g in range(pf.num_row_groups):
            for row in pf.read_row_group(g).to_pylist():
                yield decode(row, entry["file"])


def iter_split(
    folder: str | Path | ShardIndex, split: str, *, tasks: Sequence[str] = (),
    target_sample_rate: int = 16000, verify: bool = True,
) -> Iterator[RawSample]:
    """Every record of ``split`` in packing order, streamed (one row group in memory): :func:`packed_rows`."""
    index = folder if isinstance(folder, ShardIndex) else read_index(folder)
    return packed_rows(index, split, RowDecoder(index, tasks, target_sample_rate), verify=verify)


def read_split(
    folder: str | Path | ShardIndex, split: str, *, tasks: Sequence[str] = (),
    target_sample_rate: int = 16000, verify: bool = True,
) -> list[RawSample]:
    """Every record of ``split``, in packing order (= manifest file order), in memory.

    Raises:
        DataError: a shard is damaged (checksum) or a stored file does not decode.
    """
    return list(iter_split(folder, split, tasks=tasks, target_sample_rate=target_sample_rate, verify=verify))


def read_column(
    folder: str | Path | ShardIndex, split: str, column: str, *, verify: bool = True,
) -> list[Any]:
    """One column of ``split`` in packing order, read without the other columns (no media bytes).

    The streamed run fits its tokenizer on ``read_column(index, "train", "text")``: Parquet reads a
    column on its own, so this costs the text, not the images and audio.

    Raises:
        DataError: a shard is damaged (checksum).
    """
    pq = pyarrow_parquet()
    index = folder if isinstance(folder, ShardIndex) else read_index(folder)
    out: list[Any] = []
    for entry in index.splits[split]:
        if verify:
            verify_shard(index, entry)
        out.extend(pq.read_table(index.root / entry["file"], columns=[column]).column(column).to_pylist())
    return out


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
    Shards are checked against their sha256 when a reader first opens them.

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
        self.epoch = 0
        self.peak_buffer = 0
        self.peak_held = 0
        self.groups = [(s, g, int(n)) for s, entry in enumerate(self.index.splits[split])
                       for g, n in enumerate(entry["row_groups"])]

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
        verified: set[int] = set()
        buffer: list[Any] = []
        self.peak_buffer = self.peak_held = 0
        for shard, group, a, b in self.pieces():
            entry = entries[shard]
            if self.verify and shard not in verified:
                verify_shard(self.index, entry)  # once per shard and epoch, even if its groups are apart
                verified.add(shard)
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
