"""Read a user dataset described by a JSONL or CSV manifest (format: ``docs/data.md``).

Each row names one sample: ``id``, ``image`` (path), ``text``, ``audio`` (path), ``label``,
``split`` and optional extra task columns. Files are decoded eagerly so every problem surfaces
at once, each reported with the file, the row, the value and the fix; ``on_error="skip"`` drops
bad rows instead and lists them in :attr:`ManifestData.skipped`.

Rows are checked in two passes: first the cheap checks on every row (format, split, label,
duplicate id, paths and file existence: :mod:`~mmdistill.data.datasets.manifest_rows`), so a
typo fails in milliseconds; then the decoding. Skipped rows are reported by
:meth:`ManifestData.skip_summary` (count per kind, the rows of each kind, each row's reason).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
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
from mmdistill.data.records import RawSample
from mmdistill.data.transforms.audio import load_audio
from mmdistill.data.transforms.image import load_image
from mmdistill.errors import DataError

log = logging.getLogger(__name__)

COLUMNS: tuple[str, ...] = ("id", "image", "text", "audio", "label", "split")
"""Columns with a fixed meaning; any other column is an extra task (if named by the caller) or ignored."""

SKIP_HINT = "or set `data.on_error: skip` to skip such rows"
SKIP_LINES = 20
"""The skip warning lists at most this many rows one by one (all are in ``ManifestData.skipped``)."""


@dataclass
class SkipRecord:
    """A manifest row left out under ``on_error="skip"``; ``reason`` starts with the error kind."""

    row: int
    id: str | None
    reason: str

    @property
    def kind(self) -> str:
        """The error kind (``missing file``, ``corrupt image``, ...): ``reason`` up to the first colon."""
        return self.reason.split(":", 1)[0]


@dataclass
class ManifestData:
    """What :func:`read_manifest` returns.

    Attributes:
        records: decoded samples of every usable row, in file order (all splits).
        classes: class names of the primary label; ``records[i].label`` indexes this list.
        task_classes: class names of each extra task; ``records[i].tasks[t]`` indexes them.
        skipped: rows left out under ``on_error="skip"``, in file order.
        rows_read: data rows in the file (usable and skipped).
    """

    records: list[RawSample]
    classes: list[str]
    task_classes: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[SkipRecord] = field(default_factory=list)
    rows_read: int = 0

    def skip_counts(self) -> dict[str, list[int]]:
        """Error kind → the rows skipped for it, most frequent kind first."""
        by_kind: dict[str, list[int]] = {}
        for s in self.skipped:
            by_kind.setdefault(s.kind, []).append(s.row)
        return dict(sorted(by_kind.items(), key=lambda kv: -len(kv[1])))

    def skip_summary(self, source: str | Path = "manifest") -> str:
        """The skip report: counts per kind with their rows, then each row (id, reason), or ``""``.

        The first line reads ``<source>: skipped 2 of 6 rows (2 missing file)``.
        """
        if not self.skipped:
            return ""
        counts = self.skip_counts()
        summary = ", ".join(f"{len(rows)} {kind}" for kind, rows in counts.items())
        lines = [f"{source}: skipped {len(self.skipped)} of {self.rows_read} rows ({summary})"]
        lines += [f"  {kind}: row(s) {_rows(rows)}" for kind, rows in counts.items()]
        for s in self.skipped[:SKIP_LINES]:
            lines.append(f"  row {s.row}{f' (id {s.id!r})' if s.id is not None else ''}: {s.reason}")
        if len(self.skipped) > SKIP_LINES:
            more = len(self.skipped) - SKIP_LINES
            lines.append(f"  ... and {more} more (all in ManifestData.skipped and the run's data.json)")
        return "\n".join(lines)


def _rows(rows: list[int], limit: int = 30) -> str:
    shown = ", ".join(str(r) for r in rows[:limit])
    return shown + (f", ... ({len(rows)} in all)" if len(rows) > limit else "")


def read_manifest(
    path: str | Path,
    *,
    tasks: Sequence[str] = (),
    classes: Sequence[str] | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    allow_outside_root: bool = False,
    target_sample_rate: int = 16000,
    progress: bool = True,
) -> ManifestData:
    """Read and decode every sample of a JSONL or CSV manifest.

    Args:
        path: ``*.jsonl`` (one JSON object per line) or ``*.csv`` (header row first); UTF-8 with
            or without BOM, LF or CRLF line ends.
        tasks: extra label columns to read as multi-task labels.
        classes: class names of the primary label (index = class id); default: the sorted unique
            labels of the train split (integers sorted numerically).
        on_error: ``"raise"`` stops at the first bad row; ``"skip"`` leaves bad rows out, lists
            them in ``skipped`` and logs the skip report (:meth:`ManifestData.skip_summary`: the
            count per kind, the rows of each kind, and each row's id and reason).
        allow_outside_root: accept absolute paths, ``..`` and symbolic links leading out of the
            manifest's folder.
        target_sample_rate: audio is resampled to this rate (Hz).
        progress: show a progress bar while decoding files.

    Returns:
        the decoded records with their class lists and skipped rows.

    Raises:
        DataError: the manifest is missing, unreadable or empty, no row is usable, or (with
            ``on_error="raise"``) a row is bad. The message names the file, the row, the value
            and the fix.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    clash = [t for t in tasks if t in COLUMNS]
    if clash:
        raise ValueError(f"task columns {clash} clash with the fixed columns {list(COLUMNS)}; rename them")
    path = Path(path)
    if path.is_dir():
        msg = "is a folder; point `data.manifest` at the .jsonl or .csv file inside it"
        raise DataError(msg, path=str(path))
    if not path.is_file():
        raise DataError("manifest not found; check `data.manifest` (a .jsonl or .csv file)", path=str(path))
    skipped: list[SkipRecord] = []

    def fail(row: int, sample_id: str | None, err: RowError) -> None:
        if on_error == "raise":
            msg = f"{err.kind}: {err.message}. Fix: {err.fix}; {SKIP_HINT}"
            raise DataError(msg, path=str(path), row=row)
        skipped.append(SkipRecord(row=row, id=sample_id, reason=err.text()))
        log.debug("%s row %d skipped: %s", path, row, err.text())

    # Pass 1: cheap checks on every row.
    parsed, n_rows, seen_columns = parse_manifest(path, tasks, allow_outside_root, fail)
    unknown_columns = sorted(seen_columns - set(COLUMNS) - set(tasks))
    if unknown_columns:
        log.warning("%s: ignoring column(s) %s; known columns are %s, extra label columns must be listed "
                    "in `data.tasks`", path, unknown_columns, list(COLUMNS))

    # Classes, from the caller or the train split; then the label check.
    train = [r for r in parsed if r.split == "train"]
    if classes is not None:
        class_list = [str(c) for c in classes]
        if len(set(class_list)) != len(class_list):
            raise ValueError(f"classes contain duplicates: {class_list}")
    elif not train and parsed:
        raise DataError("no usable train rows to take the class list from; add train rows or pass the "
                        "class list (`data.classes`)", path=str(path))
    else:
        class_list = sorted_classes({r.label for r in train})
    task_classes = {t: sorted_classes({r.tasks[t] for r in train if t in r.tasks}) for t in tasks}
    class_index = {c: i for i, c in enumerate(class_list)}
    task_index = {t: {c: i for i, c in enumerate(cs)} for t, cs in task_classes.items()}
    source = "the given classes" if classes is not None else "the labels of the train split"
    labelled: list[Row] = []
    for r in parsed:
        bad = [("label", r.label, class_list)] if r.label not in class_index else []
        bad += [(t, v, task_classes[t]) for t, v in r.tasks.items() if v not in task_index[t]]
        if bad:
            column, value, known = bad[0]
            shown = known if len(known) <= 20 else [*known[:20], "..."]
            src = source if column == "label" else f"the {column} values of the train split"
            fix = "correct the label, add a train row with it, or list it in the classes"
            msg = f"{column} '{value}' is not among {src} {shown}"
            fail(r.row, r.id, RowError("unknown label", msg, fix))
            continue
        labelled.append(r)

    # Pass 2: decode the files.
    records: list[RawSample] = []
    for r in tqdm(labelled, desc=f"reading {path.name}", disable=not progress, unit="row"):
        try:
            records.append(_decode(r, path, class_index, task_index, target_sample_rate))
        except RowError as err:
            fail(r.row, r.id, err)

    skipped.sort(key=lambda s: s.row)  # pass 1 and pass 2 failures, back in file order
    result = ManifestData(records=records, classes=class_list, task_classes=task_classes, skipped=skipped,
                          rows_read=n_rows)
    if skipped:
        log.warning("%s", result.skip_summary(path))
    if not records:
        counts = ", ".join(f"{len(rows)} {kind}" for kind, rows in result.skip_counts().items())
        raise DataError(f"no usable rows: all {n_rows} rows were skipped ({counts}); first: row "
                        f"{skipped[0].row}: {skipped[0].reason}", path=str(path))
    return result


def _decode(
    r: Row, manifest: Path, class_index: dict[str, int], task_index: dict[str, dict[str, int]], rate: int
) -> RawSample:
    meta: dict[str, Any] = {"manifest": str(manifest), "row": r.row, "label_name": r.label}
    image = audio = None
    if r.image is not None:
        meta["image"] = r.image[0]
        try:
            image = load_image(r.image[1])
        except DataError as e:
            raise RowError("corrupt image", f"image '{r.image[0]}': {loader_detail(e)}",
                            "replace the file with a valid image or remove the row") from e
    if r.audio is not None:
        meta["audio"] = r.audio[0]
        try:
            audio = load_audio(r.audio[1], rate)
        except DataError as e:
            raise RowError("corrupt audio", f"audio '{r.audio[0]}': {loader_detail(e)}",
                            "replace the file with a valid WAV/FLAC/OGG or remove the row") from e
    return RawSample(
        id=r.id, label=class_index[r.label], split=r.split, image=image, text=r.text, audio=audio,
        sample_rate=rate, tasks={t: task_index[t][v] for t, v in r.tasks.items()}, meta=meta,
    )
