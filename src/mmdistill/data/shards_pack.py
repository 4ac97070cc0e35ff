"""Pack a manifest into Parquet shards (``mmdistill data pack MANIFEST OUT``; format: ``docs/data.md``).

Rows get the manifest reader's own checks (:mod:`~mmdistill.data.datasets.manifest_rows`) and
every image and audio file is decoded once to prove it is readable, but only the file's bytes are
stored, so memory stays bounded by one row group whatever the dataset's size. Shards are written
under temporary names and renamed when complete; ``index.json`` (with the sha256 of every shard)
is written last, so a folder without it is an unfinished pack that readers refuse.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from mmdistill.data.datasets.manifest_rows import (
    Row,
    RowError,
    loader_detail,
    parse_manifest,
    sorted_classes,
)
from mmdistill.data.records import SPLITS
from mmdistill.data.shards import (
    FORMAT,
    INDEX_FILE,
    VERSION,
    ShardIndex,
    pyarrow_parquet,
    read_index,
)
from mmdistill.data.transforms.audio import load_audio
from mmdistill.data.transforms.image import load_image
from mmdistill.errors import DataError
from mmdistill.io_atomic import atomic_write_json, file_sha256, fsync_dir

log = logging.getLogger(__name__)

PACK_SKIP_HINT = "or pass --skip-bad-rows to leave such rows out (listed in index.json)"
COLUMNS = ("id", "split", "label", "text", "image", "image_name", "audio", "audio_name", "tasks", "row")


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema([
        ("id", pa.string()), ("split", pa.string()), ("label", pa.string()), ("text", pa.string()),
        ("image", pa.binary()), ("image_name", pa.string()),
        ("audio", pa.binary()), ("audio_name", pa.string()),
        ("tasks", pa.string()), ("row", pa.int64()),
    ])


def _read_files(r: Row) -> dict[str, Any]:
    out: dict[str, Any] = {"image": None, "image_name": None, "audio": None, "audio_name": None}
    for key, loader, kind, fix in (
        ("image", load_image, "corrupt image", "replace the file with a valid image or remove the row"),
        ("audio", lambda p, data: load_audio(p, 16000, data), "corrupt audio",
         "replace the file with a valid WAV/FLAC/OGG or remove the row"),
    ):
        ref = getattr(r, key)
        if ref is None:
            continue
        try:
            data = ref[1].read_bytes()  # read once: the bytes decoded are the bytes stored
            loader(ref[1], data)  # decoded once to prove it is readable; only the bytes are kept
        except DataError as e:
            raise RowError(kind, f"{key} '{ref[0]}': {loader_detail(e)}", fix) from e
        except OSError as e:
            raise RowError("missing file", f"{key} '{ref[0]}' cannot be read ({e.strerror})", fix) from e
        out[key] = data
        out[f"{key}_name"] = ref[0]
    return out


class _SplitWriter:
    """Writes one split's rows into ``<split>-NNNNN.parquet`` shards of ``rows_per_shard`` rows."""

    def __init__(self, out: Path, split: str, rows_per_shard: int, row_group_rows: int) -> None:
        self.pq = pyarrow_parquet()
        self.out, self.split = out, split
        self.rows_per_shard, self.row_group_rows = rows_per_shard, row_group_rows
        self.schema = _schema()
        self.entries: list[dict[str, Any]] = []
        self.entry: dict[str, Any] = {}
        self.group: list[dict[str, Any]] = []
        self.writer: Any = None

    def add(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            name = f"{self.split}-{len(self.entries):05d}.parquet"
            self.entry = {"file": name, "rows": 0, "row_groups": []}
            self.writer = self.pq.ParquetWriter(self.out / f".tmp-{name}", self.schema, compression="zstd")
        self.group.append(row)
        if len(self.group) >= self.row_group_rows:
            self._flush()
        if self.entry["rows"] + len(self.group) >= self.rows_per_shard:
            self._close()

    def _flush(self) -> None:
        import pyarrow as pa

        if self.group:
            table = pa.Table.from_pylist(self.group, schema=self.schema)
            self.writer.write_table(table, row_group_size=len(self.group))
            self.entry["row_groups"].append(len(self.group))
            self.entry["rows"] += len(self.group)
            self.group = []

    def _close(self) -> None:
        self._flush()
        self.writer.close()
        self.writer = None
        tmp, final = self.out / f".tmp-{self.entry['file']}", self.out / self.entry["file"]
        self.entry["sha256"] = file_sha256(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)  # atomic: a shard is either whole or absent
        fsync_dir(self.out)
        self.entries.append(self.entry)

    def finish(self) -> list[dict[str, Any]]:
        if self.writer is not None:
            self._close()
        return self.entries


def _clear(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DataError("the output exists and is not a folder; choose a new folder", path=str(out))
    if out.is_dir() and any(out.iterdir()):
        ours = (out / INDEX_FILE).is_file() or any(out.glob("*.parquet")) or any(out.glob(".tmp-*.parquet"))
        if not overwrite or not ours:
            fix = "pass --overwrite to replace it" if ours else "choose an empty or new folder"
            raise DataError(f"the output folder is not empty; {fix}", path=str(out))
        (out / INDEX_FILE).unlink(missing_ok=True)  # first: a half-replaced folder is never trusted
        for p in {*out.glob("*.parquet"), *out.glob(".tmp-*.parquet")}:
            p.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def pack_manifest(
    manifest: str | Path,
    out: str | Path,
    *,
    rows_per_shard: int = 1000,
    row_group_rows: int = 64,
    tasks: Sequence[str] = (),
    on_error: Literal["raise", "skip"] = "raise",
    allow_outside_root: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> ShardIndex:
    """Write ``out/<split>-NNNNN.parquet`` shards and ``out/index.json`` from a manifest.

    Args:
        manifest: the JSONL or CSV manifest (same format and checks as ``data.manifest``).
        out: the shard folder (created; must be empty or an earlier pack with ``overwrite``).
        rows_per_shard: rows per shard file (the last shard of a split may hold fewer).
        row_group_rows: rows per Parquet row group, the unit a streaming reader decodes at once.
        tasks: extra label columns to pack (``data.tasks`` of the configs that will read it).
        on_error: ``raise`` stops at the first bad row; ``skip`` leaves it out and lists it in the index.
        allow_outside_root: as ``data.allow_outside_root``.
        overwrite: replace an earlier pack in ``out``.
        progress: show a progress bar.

    Returns:
        the index of the written folder (read back from disk).

    Raises:
        DataError: the manifest or a row is bad (with ``on_error="raise"``), or ``out`` is not usable.
    """
    if rows_per_shard < 1 or row_group_rows < 1:
        raise ValueError(f"rows_per_shard and row_group_rows must be >= 1, got {rows_per_shard}, "
                         f"{row_group_rows}")
    pyarrow_parquet()  # a missing pyarrow fails before any work

    path, out = Path(manifest), Path(out)
    if not path.is_file():
        raise DataError("manifest not found (a .jsonl or .csv file)", path=str(path))
    skipped: list[dict[str, Any]] = []

    def fail(row: int, sample_id: str | None, err: RowError) -> None:
        if on_error == "raise":
            raise DataError(f"{err.kind}: {err.message}. Fix: {err.fix}; {PACK_SKIP_HINT}", path=str(path),
                            row=row)
        skipped.append({"row": row, "id": sample_id, "reason": err.text()})

    parsed, n_rows, _ = parse_manifest(path, tasks, allow_outside_root, fail)
    train = [r for r in parsed if r.split == "train"]
    if not train:
        raise DataError("no usable train rows to take the class list from; add train rows", path=str(path))
    classes = sorted_classes({r.label for r in train})
    task_classes = {t: sorted_classes({r.tasks[t] for r in train if t in r.tasks}) for t in tasks}
    _clear(out, overwrite)

    splits: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    bar = tqdm(total=len(parsed), desc=f"packing {path.name}", disable=not progress, unit="row")
    for split in SPLITS:
        writer = _SplitWriter(out, split, rows_per_shard, row_group_rows)
        for r in (r for r in parsed if r.split == split):
            bar.update(1)
            bad = [("label", r.label)] if r.label not in classes else []
            bad += [(t, v) for t, v in r.tasks.items() if v not in task_classes[t]]
            if bad:
                msg = f"{bad[0][0]} '{bad[0][1]}' is not among the labels of the train split"
                fix = "correct the label or add a train row with it"
                fail(r.row, r.id, RowError("unknown label", msg, fix))
                continue
            try:
                files = _read_files(r)
            except RowError as err:
                fail(r.row, r.id, err)
                continue
            writer.add({"id": r.id, "split": split, "label": r.label, "text": r.text, **files,
                        "tasks": json.dumps(r.tasks, sort_keys=True) if r.tasks else None, "row": r.row})
        splits[split] = writer.finish()
    bar.close()
    if not any(splits.values()):
        raise DataError(f"no usable rows: all {n_rows} rows were skipped", path=str(path))
    index = {
        "format": FORMAT, "version": VERSION, "columns": list(COLUMNS), "classes": classes,
        "task_classes": task_classes,
        "source": {"manifest": str(path.resolve()), "sha256": file_sha256(path),
                   "rows_read": n_rows},
        "splits": splits, "skipped": skipped,
    }
    atomic_write_json(out / INDEX_FILE, index)  # last: the folder is trusted only once all is in place
    if skipped:
        log.warning("%s: skipped %d of %d rows (listed in %s)", path, len(skipped), n_rows, out / INDEX_FILE)
    return read_index(out)
