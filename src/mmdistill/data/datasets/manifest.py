"""Read a user dataset described by a JSONL or CSV manifest (format: ``docs/data.md``).

Each row names one sample: ``id``, ``image`` (path), ``text``, ``audio`` (path), ``label``,
``split`` and optional extra task columns. Files are decoded eagerly so every problem surfaces
at once, each reported with the file, the row, the value and the fix; ``on_error="skip"`` drops
bad rows instead and lists them in :attr:`ManifestData.skipped`.

Rows are checked in two passes: first the cheap checks on every row (format, split, label,
duplicate id, paths and file existence), so a typo fails in milliseconds; then the decoding.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from mmdistill.data.records import SPLITS, RawSample
from mmdistill.data.transforms.audio import load_audio
from mmdistill.data.transforms.image import load_image
from mmdistill.errors import DataError

log = logging.getLogger(__name__)

COLUMNS: tuple[str, ...] = ("id", "image", "text", "audio", "label", "split")
"""Columns with a fixed meaning; any other column is an extra task (if named by the caller) or ignored."""

SKIP_HINT = "or set `data.on_error: skip` to skip such rows"
_INT_RE = re.compile(r"^[+-]?\d+$")


@dataclass
class SkipRecord:
    """A manifest row left out under ``on_error="skip"``; ``reason`` starts with the error kind."""

    row: int
    id: str | None
    reason: str


@dataclass
class ManifestData:
    """What :func:`read_manifest` returns.

    Attributes:
        records: decoded samples of every usable row, in file order (all splits).
        classes: class names of the primary label; ``records[i].label`` indexes this list.
        task_classes: class names of each extra task; ``records[i].tasks[t]`` indexes them.
        skipped: rows left out under ``on_error="skip"``.
    """

    records: list[RawSample]
    classes: list[str]
    task_classes: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[SkipRecord] = field(default_factory=list)


class _RowError(Exception):
    """A problem with one row: ``kind`` (short category), what is wrong, and the fix."""

    def __init__(self, kind: str, message: str, fix: str) -> None:
        super().__init__(message)
        self.kind, self.message, self.fix = kind, message, fix

    def text(self) -> str:
        return f"{self.kind}: {self.message}. Fix: {self.fix}"


@dataclass
class _Row:
    """A row that passed the cheap checks; labels are still names."""

    row: int
    id: str
    split: str
    label: str
    text: str | None
    image: tuple[str, Path] | None  # (value as written, resolved path)
    audio: tuple[str, Path] | None
    tasks: dict[str, str]


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read the manifest ({e.strerror}); check the path and permissions",
                        path=str(path)) from e
    try:
        return data.decode("utf-8-sig")  # tolerates a BOM (Excel writes one)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"the manifest is not UTF-8 (bad byte at line {line}); save it as UTF-8",
                        path=str(path)) from e


def _jsonl_rows(text: str) -> Iterator[tuple[int, dict[str, Any] | _RowError]]:
    # split("\n"), not splitlines(): JSON strings may hold U+2028, which splitlines breaks on.
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            yield lineno, _RowError("malformed row", f"invalid JSON ({e.msg} at column {e.colno})",
                                    "write one JSON object per line")
            continue
        if not isinstance(obj, dict):
            yield lineno, _RowError("malformed row", f"expected a JSON object, got {type(obj).__name__}",
                                    'write one object per line, e.g. {"image": "a.png", "label": "cat", ...}')
            continue
        yield lineno, obj


def _csv_rows(text: str, path: Path) -> Iterator[tuple[int, dict[str, Any] | _RowError]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    row = 0
    try:
        for values in reader:
            if not values or all(not v.strip() for v in values):
                continue
            if header is None:
                header = [h.strip() for h in values]
                dupes = sorted(h for h, n in Counter(header).items() if n > 1)
                if dupes:
                    raise DataError(f"duplicate column(s) {dupes} in the header; rename them", path=str(path))
                yield 0, {"__header__": header}
                continue
            row += 1
            if len(values) != len(header):
                yield row, _RowError(
                    "malformed row", f"{len(values)} values but the header has {len(header)} columns",
                    "quote values that contain commas and give every row one value per column",
                )
                continue
            yield row, dict(zip(header, values, strict=True))
    except csv.Error as e:
        msg = f"unreadable CSV after data row {row} ({e}); check the quoting"
        raise DataError(msg, path=str(path)) from e


def _label_name(value: Any, column: str, *, required: bool) -> str | None:
    """Normalize a label cell: ints (or "3") → "3", strings stripped; None/"" → None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise _RowError("malformed row", f"no value in column '{column}'", f"give every row a {column}")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _RowError("malformed row", f"column '{column}' must be a class name or integer, got {value!r}",
                        "write the class name as a string or an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise _RowError("malformed row", f"column '{column}' is the non-integer number {value!r}",
                            "write the class name as a string or an integer")
        value = int(value)
    text = str(value).strip()
    return str(int(text)) if _INT_RE.match(text) else text


def _sorted_classes(names: set[str]) -> list[str]:
    """Integers sort numerically ("2" < "10"), anything else alphabetically."""
    if names and all(_INT_RE.match(n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


class _RowParser:
    """The cheap per-row checks (pass 1)."""

    def __init__(self, path: Path, tasks: Sequence[str], allow_outside_root: bool) -> None:
        self.root = Path(os.path.normpath(path.parent.absolute()))
        self.tasks = tuple(tasks)
        self.allow_outside_root = allow_outside_root
        self.seen_ids: dict[str, int] = {}

    def _file(self, obj: dict[str, Any], column: str) -> tuple[str, Path] | None:
        value = obj.get(column)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str):
            raise _RowError("malformed row", f"column '{column}' must be a path string, got {value!r}",
                            "write the file path as a string relative to the manifest's folder")
        value = value.strip()
        p = Path(value)
        full = Path(os.path.normpath(p if p.is_absolute() else self.root / p))
        if not self.allow_outside_root and (p.is_absolute() or not full.is_relative_to(self.root)):
            raise _RowError(
                "path outside root",
                f"{column} path '{value}' points outside the manifest's folder {self.root}",
                "move the file under that folder and use a relative path, or pass allow_outside_root=True "
                "(`data.allow_outside_root: true`) if you trust this manifest",
            )
        if not full.is_file():
            raise _RowError("missing file", f"{column} file '{value}' not found (looked for {full})",
                            "correct the path (relative to the manifest's folder) or remove the row")
        return value, full

    def parse(self, row: int, obj: dict[str, Any]) -> _Row:
        raw_id = obj.get("id")
        if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
            sample_id = str(row)
        elif isinstance(raw_id, str | int) and not isinstance(raw_id, bool):
            sample_id = str(raw_id).strip()
        else:
            raise _RowError("malformed row", f"id must be a string or an integer, got {raw_id!r}",
                            "write ids as strings")
        split_value = obj.get("split")
        split = split_value.strip().lower() if isinstance(split_value, str) else split_value
        if split not in SPLITS:
            near = difflib.get_close_matches(str(split), SPLITS, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise _RowError("unknown split", f"split {split_value!r} is not one of {list(SPLITS)}{hint}",
                            "set split to train, val or test")
        label = _label_name(obj.get("label"), "label", required=True)
        assert label is not None
        text = obj.get("text")
        if text is not None and not isinstance(text, str):
            raise _RowError("malformed row", f"text must be a string, got {text!r}", "quote the text")
        text = text if text else None  # an empty cell means "no text" (CSV cannot tell the two apart)
        tasks = {}
        for t in self.tasks:
            name = _label_name(obj.get(t), t, required=False)
            if name is not None:
                tasks[t] = name
        if sample_id in self.seen_ids:
            first = self.seen_ids[sample_id]
            raise _RowError("duplicate id", f"id '{sample_id}' is already used by row {first}",
                            "give every row a unique id")
        image, audio = self._file(obj, "image"), self._file(obj, "audio")
        if image is None and audio is None and text is None:
            raise _RowError("no modality", "the row has no image, text or audio",
                            "fill at least one of the image, text and audio columns, or remove the row")
        self.seen_ids[sample_id] = row
        return _Row(row, sample_id, split, label, text, image, audio, tasks)


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
            them in ``skipped`` and logs a warning with the count.
        allow_outside_root: accept absolute paths and ``..`` leading out of the manifest's folder.
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
    if not path.is_file():
        raise DataError("manifest not found; check `data.manifest` (a .jsonl or .csv file)", path=str(path))
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise DataError(f"unsupported manifest extension '{path.suffix}'; use .jsonl or .csv", path=str(path))
    text = _read_text(path)
    rows = _jsonl_rows(text) if suffix == ".jsonl" else _csv_rows(text, path)

    skipped: list[SkipRecord] = []
    n_rows = 0

    def fail(row: int, sample_id: str | None, err: _RowError) -> None:
        if on_error == "raise":
            msg = f"{err.kind}: {err.message}. Fix: {err.fix}; {SKIP_HINT}"
            raise DataError(msg, path=str(path), row=row)
        skipped.append(SkipRecord(row=row, id=sample_id, reason=err.text()))
        log.debug("%s row %d skipped: %s", path, row, err.text())

    # Pass 1: cheap checks on every row.
    parser = _RowParser(path, tasks, allow_outside_root)
    parsed: list[_Row] = []
    seen_columns: set[str] = set()
    for row, obj in rows:
        if isinstance(obj, dict) and "__header__" in obj:
            missing = [c for c in ("label", "split", *tasks) if c not in obj["__header__"]]
            if missing:
                msg = f"the header lacks column(s) {missing}; add them (see docs/data.md)"
                raise DataError(msg, path=str(path))
            seen_columns.update(obj["__header__"])
            continue
        n_rows += 1
        if isinstance(obj, _RowError):
            fail(row, None, obj)
            continue
        seen_columns.update(obj)
        raw_id = obj.get("id")
        try:
            parsed.append(parser.parse(row, obj))
        except _RowError as err:
            fail(row, str(row) if raw_id is None or raw_id == "" else str(raw_id), err)
    if n_rows == 0:
        msg = "the manifest has no data rows; add one row per sample (see docs/data.md)"
        raise DataError(msg, path=str(path))
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
        class_list = _sorted_classes({r.label for r in train})
    task_classes = {t: _sorted_classes({r.tasks[t] for r in train if t in r.tasks}) for t in tasks}
    class_index = {c: i for i, c in enumerate(class_list)}
    task_index = {t: {c: i for i, c in enumerate(cs)} for t, cs in task_classes.items()}
    source = "the given classes" if classes is not None else "the labels of the train split"
    labelled: list[_Row] = []
    for r in parsed:
        bad = [("label", r.label, class_list)] if r.label not in class_index else []
        bad += [(t, v, task_classes[t]) for t, v in r.tasks.items() if v not in task_index[t]]
        if bad:
            column, value, known = bad[0]
            shown = known if len(known) <= 20 else [*known[:20], "..."]
            src = source if column == "label" else f"the {column} values of the train split"
            fix = "correct the label, add a train row with it, or list it in the classes"
            msg = f"{column} '{value}' is not among {src} {shown}"
            fail(r.row, r.id, _RowError("unknown label", msg, fix))
            continue
        labelled.append(r)

    # Pass 2: decode the files.
    records: list[RawSample] = []
    for r in tqdm(labelled, desc=f"reading {path.name}", disable=not progress, unit="row"):
        try:
            records.append(_decode(r, path, class_index, task_index, target_sample_rate))
        except _RowError as err:
            fail(r.row, r.id, err)

    skipped.sort(key=lambda s: s.row)  # pass 1 and pass 2 failures, back in file order
    if skipped:
        kinds = Counter(s.reason.split(":", 1)[0] for s in skipped)
        summary = ", ".join(f"{n} {k}" for k, n in kinds.most_common())
        log.warning("%s: skipped %d of %d rows (%s); first: row %d: %s", path, len(skipped), n_rows, summary,
                    skipped[0].row, skipped[0].reason)
    if not records:
        raise DataError(f"no usable rows: all {n_rows} rows were skipped; first: row {skipped[0].row}: "
                        f"{skipped[0].reason}", path=str(path))
    return ManifestData(records=records, classes=class_list, task_classes=task_classes, skipped=skipped)


def _detail(e: DataError) -> str:
    """The loader's message without its leading path (the row message names the file already)."""
    return str(e).removeprefix(f"{e.path}: ") if e.path else str(e)


def _decode(
    r: _Row, manifest: Path, class_index: dict[str, int], task_index: dict[str, dict[str, int]], rate: int
) -> RawSample:
    meta: dict[str, Any] = {"manifest": str(manifest), "row": r.row, "label_name": r.label}
    image = audio = None
    if r.image is not None:
        meta["image"] = r.image[0]
        try:
            image = load_image(r.image[1])
        except DataError as e:
            raise _RowError("corrupt image", f"image '{r.image[0]}': {_detail(e)}",
                            "replace the file with a valid image or remove the row") from e
    if r.audio is not None:
        meta["audio"] = r.audio[0]
        try:
            audio = load_audio(r.audio[1], rate)
        except DataError as e:
            raise _RowError("corrupt audio", f"audio '{r.audio[0]}': {_detail(e)}",
                            "replace the file with a valid WAV/FLAC/OGG or remove the row") from e
    return RawSample(
        id=r.id, label=class_index[r.label], split=r.split, image=image, text=r.text, audio=audio,
        sample_rate=rate, tasks={t: task_index[t][v] for t, v in r.tasks.items()}, meta=meta,
    )
