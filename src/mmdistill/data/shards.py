"""Read a sharded dataset: Parquet shards written by ``mmdistill data pack`` (format: ``docs/data.md``).

A shard folder holds ``<split>-00000.parquet ...`` and ``index.json`` (format version, classes,
per-split shard list with rows, row groups and sha256 of every shard, and the fingerprint of the
source manifest). Each Parquet row is one manifest row with the media files' *bytes* (not decoded
pixels), so packing is lossless and decoding runs the manifest's own loaders
(:func:`~mmdistill.data.transforms.image.load_image`, :func:`~mmdistill.data.transforms.audio.load_audio`).

Two ways to read:

- Here: :func:`read_split`: every record of a split in memory (what ``data.source: shards`` does,
  and ``data.stream: true`` for val/test); :func:`iter_split`: the same records one at a time (one
  row group in memory); :func:`read_column`: one column (the tokenizer's text).
- :class:`~mmdistill.data.shard_stream.ShardStream` (:mod:`mmdistill.data.shard_stream`): a torch
  ``IterableDataset`` that streams a split with bounded memory, reshuffled per epoch and split
  across DDP ranks and DataLoader workers (``data.stream: true``).

pyarrow is an optional dependency (``mmdistill[shards]``), imported lazily.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmdistill.data.records import SPLITS, RawSample
from mmdistill.data.transforms.audio import load_audio
from mmdistill.data.transforms.image import load_image
from mmdistill.errors import DataError, MissingDependencyError
from mmdistill.io_atomic import file_sha256

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
    got = file_sha256(path)
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
