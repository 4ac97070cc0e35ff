"""The cheap, per-row half of the manifest reader: decoding the file, splitting it into rows
(JSONL or CSV), and checking each row's cells (ids, split, labels, text, paths) before any image
or audio file is opened. :mod:`mmdistill.data.datasets.manifest` drives it.

Every problem with one row is a :class:`RowError` (a kind, what is wrong, the fix) so the reader
can either raise it as a :class:`~mmdistill.errors.DataError` naming the file and row, or skip
the row and report it. Problems with the file as a whole raise ``DataError`` directly.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import io
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmdistill.data.records import SPLITS
from mmdistill.errors import DataError

INT_RE = re.compile(r"^[+-]?\d+$")
_BOMS = {codecs.BOM_UTF32_LE: "UTF-32", codecs.BOM_UTF32_BE: "UTF-32", codecs.BOM_UTF16_LE: "UTF-16",
         codecs.BOM_UTF16_BE: "UTF-16"}  # UTF-32 LE first: its BOM starts with UTF-16 LE's


class RowError(Exception):
    """A problem with one row: ``kind`` (short category), what is wrong, and the fix."""

    def __init__(self, kind: str, message: str, fix: str) -> None:
        super().__init__(message)
        self.kind, self.message, self.fix = kind, message, fix

    def text(self) -> str:
        return f"{self.kind}: {self.message}. Fix: {self.fix}"


@dataclass
class Row:
    """A row that passed the cheap checks; labels are still names."""

    row: int
    id: str
    split: str
    label: str
    text: str | None
    image: tuple[str, Path] | None  # (value as written, resolved path)
    audio: tuple[str, Path] | None
    tasks: dict[str, str]


def loader_detail(e: DataError) -> str:
    """A file loader's message without its leading path (the row message names the file already)."""
    return str(e).removeprefix(f"{e.path}: ") if e.path else str(e)


def read_text(path: Path) -> str:
    """The manifest's text: UTF-8 with or without BOM; anything else is refused with the fix."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read the manifest ({e.strerror}); check the path and permissions",
                        path=str(path)) from e
    for bom, name in _BOMS.items():
        if data.startswith(bom):
            raise DataError(f"the manifest is {name} (it starts with a {name} byte-order mark), not UTF-8; "
                            "save it as UTF-8 (in Excel: 'CSV UTF-8')", path=str(path))
    try:
        return data.decode("utf-8-sig")  # tolerates a BOM (Excel writes one)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        where = f"byte 0x{data[e.start]:02x} at line {line}, byte {column} of the line"
        raise DataError(f"the manifest is not UTF-8 ({where}; Latin-1 or Windows-1252 text?); save it as "
                        "UTF-8", path=str(path)) from e


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    dupes = sorted(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
    if dupes:
        raise ValueError(f"key(s) {dupes} appear more than once in an object")
    return dict(pairs)


def jsonl_rows(text: str) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """``(line number, object or RowError)`` for every non-blank line (LF or CRLF ends)."""
    # split("\n"), not splitlines(): JSON strings may hold U+2028, which splitlines breaks on.
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line, object_pairs_hook=_no_duplicates)
        except json.JSONDecodeError as e:
            yield lineno, RowError("malformed row", f"invalid JSON ({e.msg} at column {e.colno})",
                                   "write one JSON object per line")
            continue
        except (RecursionError, ValueError) as e:  # nested thousands deep, duplicate keys, 4300+ digits
            why = "nested too deeply" if isinstance(e, RecursionError) else str(e).split(";")[0]
            fix = "give each key once" if why.startswith("key(s)") else "write long numbers as strings"
            yield lineno, RowError("malformed row", f"unreadable JSON ({why})", f"write one flat JSON object "
                                   f"per line; {fix}")
            continue
        if not isinstance(obj, dict):
            yield lineno, RowError("malformed row", f"expected a JSON object, got {type(obj).__name__}",
                                   'write one object per line, e.g. {"image": "a.png", "label": "cat", ...}')
            continue
        yield lineno, obj


def csv_rows(text: str, path: Path) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """``(data row number, row dict or RowError)``; row 0 is ``{"__header__": [...]}``."""
    limit = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long texts: the default cell limit is 128 KiB
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[list[str]] = []
    try:
        rows.extend(reader)  # parsed at once, so the process-wide limit is raised only this long
    except csv.Error as e:
        msg = f"unreadable CSV at line {reader.line_num} ({e}); check the quoting"
        raise DataError(msg, path=str(path)) from e
    finally:
        csv.field_size_limit(limit)
    header: list[str] | None = None
    row = 0
    for values in rows:
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
            unclosed = " (a quote opened here is never closed?)" if any("\n" in v for v in values) else ""
            yield row, RowError(
                "malformed row", f"{len(values)} values but the header has {len(header)} columns{unclosed}",
                "quote values that contain commas and give every row one value per column",
            )
            continue
        yield row, dict(zip(header, values, strict=True))


def header_problem(header: Sequence[str], required: Sequence[str]) -> str | None:
    """What is wrong with a CSV header that lacks ``required`` columns (with a hint), or None."""
    missing = [c for c in required if c not in header]
    if not missing:
        return None
    hint = "add them (see docs/data.md)"
    lower = {h.lower(): h for h in header}
    near = {c: lower[c] for c in missing if c in lower}
    if near:
        hint = f"column names are lowercase: rename {', '.join(f'{v!r} to {k!r}' for k, v in near.items())}"
    elif len(header) == 1 and any(sep in header[0] for sep in ";\t|"):
        hint = f"the header {header[0]!r} is not separated by commas: save the file comma-separated"
    return f"the header lacks column(s) {missing}; {hint}"


def label_name(value: Any, column: str, *, required: bool) -> str | None:
    """Normalize a label cell: ints (or "3") → "3", strings stripped; None/"" → None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise RowError("malformed row", f"no value in column '{column}'", f"give every row a {column}")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise RowError("malformed row", f"column '{column}' must be a class name or integer, got {value!r}",
                       "write the class name as a string or an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise RowError("malformed row", f"column '{column}' is the non-integer number {value!r}",
                           "write the class name as a string or an integer")
        value = int(value)
    text = str(value).strip()
    return str(int(text)) if INT_RE.match(text) else text


def sorted_classes(names: set[str]) -> list[str]:
    """Integers sort numerically ("2" < "10"), anything else alphabetically."""
    if names and all(INT_RE.match(n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _check_unicode(obj: dict[str, Any], columns: Sequence[str]) -> None:
    """Refuse cells holding unpaired surrogates (JSON ``"\\ud800"``): not text, and unwritable as UTF-8."""
    for column in columns:
        value = obj.get(column)
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                n, bad = e.start + 1, value[e.start]
                msg = f"column '{column}' holds an unpaired surrogate {bad!r} at character {n}"
                fix = "fix or remove that \\u escape (an emoji needs both halves of its pair)"
                raise RowError("malformed row", f"{msg}, which is not Unicode", fix) from None


class RowParser:
    """The cheap per-row checks (pass 1)."""

    def __init__(self, path: Path, tasks: Sequence[str], allow_outside_root: bool) -> None:
        self.root = Path(os.path.normpath(path.parent.absolute()))
        self.real_root = self.root.resolve()
        self.tasks = tuple(tasks)
        self.allow_outside_root = allow_outside_root
        self.seen_ids: dict[str, int] = {}

    def _outside(self, column: str, value: str, detail: str) -> RowError:
        return RowError(
            "path outside root",
            f"{column} path '{value}' {detail} outside the manifest's folder {self.root}",
            "move the file under that folder and use a relative path, or pass allow_outside_root=True "
            "(`data.allow_outside_root: true`) if you trust this manifest",
        )

    def _file(self, obj: dict[str, Any], column: str) -> tuple[str, Path] | None:
        value = obj.get(column)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str):
            raise RowError("malformed row", f"column '{column}' must be a path string, got {value!r}",
                           "write the file path as a string relative to the manifest's folder")
        value = value.strip()
        if "\0" in value:
            raise RowError("malformed row", f"{column} path {value!r} contains a NUL character",
                           "remove the NUL (\\u0000) from the path")
        p = Path(value)
        full = Path(os.path.normpath(p if p.is_absolute() else self.root / p))
        if not self.allow_outside_root and (p.is_absolute() or not full.is_relative_to(self.root)):
            raise self._outside(column, value, "points")
        try:
            is_file, exists = full.is_file(), full.exists()
        except OSError as e:  # e.g. a name longer than the file system allows
            raise RowError("missing file", f"{column} file '{value}' cannot be looked up ({e.strerror})",
                           "correct the path (relative to the manifest's folder) or remove the row") from None
        if not is_file:
            what = f"not found (looked for {full})"
            if exists:
                what = "is a folder, not a file"
            elif full.is_symlink():
                what = "is a broken symbolic link (its target is missing, or links loop)"
            raise RowError("missing file", f"{column} file '{value}' {what}",
                           "correct the path (relative to the manifest's folder) or remove the row")
        if not self.allow_outside_root:
            real = full.resolve()
            if not real.is_relative_to(self.real_root):
                raise self._outside(column, value, f"leads through a symbolic link to {real},")
        return value, full

    def parse(self, row: int, obj: dict[str, Any]) -> Row:
        _check_unicode(obj, ("id", "split", "label", "text", "image", "audio", *self.tasks))
        raw_id = obj.get("id")
        if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
            sample_id = str(row)
        elif isinstance(raw_id, str | int) and not isinstance(raw_id, bool):
            sample_id = str(raw_id).strip()
        else:
            raise RowError("malformed row", f"id must be a string or an integer, got {raw_id!r}",
                           "write ids as strings")
        split_value = obj.get("split")
        split = split_value.strip().lower() if isinstance(split_value, str) else split_value
        if split not in SPLITS:
            near = difflib.get_close_matches(str(split), SPLITS, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise RowError("unknown split", f"split {split_value!r} is not one of {list(SPLITS)}{hint}",
                           "set split to train, val or test")
        label = label_name(obj.get("label"), "label", required=True)
        assert label is not None
        text = obj.get("text")
        if text is not None and not isinstance(text, str):
            raise RowError("malformed row", f"text must be a string, got {text!r}", "quote the text")
        text = text if text else None  # an empty cell means "no text" (CSV cannot tell the two apart)
        tasks = {}
        for t in self.tasks:
            name = label_name(obj.get(t), t, required=False)
            if name is not None:
                tasks[t] = name
        if sample_id in self.seen_ids:
            first = self.seen_ids[sample_id]
            raise RowError("duplicate id", f"id '{sample_id}' is already used by row {first}",
                           "give every row a unique id")
        image, audio = self._file(obj, "image"), self._file(obj, "audio")
        if image is None and audio is None and text is None:
            raise RowError("no modality", "the row has no image, text or audio",
                           "fill at least one of the image, text and audio columns, or remove the row")
        self.seen_ids[sample_id] = row
        return Row(row, sample_id, split, label, text, image, audio, tasks)


def parse_manifest(
    path: Path, tasks: Sequence[str], allow_outside_root: bool,
    fail: Callable[[int, str | None, RowError], None],
) -> tuple[list[Row], int, set[str]]:
    """Pass 1 over a JSONL or CSV manifest: every data row through :class:`RowParser`.

    ``fail(row, sample_id, err)`` gets each bad row (it raises, or records the row as skipped).

    Returns:
        the parsed rows, the number of data rows read, and every column name seen.

    Raises:
        DataError: the extension is not ``.jsonl``/``.csv``, the file is unreadable, a CSV header
            lacks a required column, or there is no data row.
    """
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise DataError(f"unsupported manifest extension '{path.suffix}'; use .jsonl or .csv", path=str(path))
    text = read_text(path)
    rows = jsonl_rows(text) if suffix == ".jsonl" else csv_rows(text, path)
    parser = RowParser(path, tasks, allow_outside_root)
    parsed: list[Row] = []
    seen_columns: set[str] = set()
    n_rows = 0
    for row, obj in rows:
        if isinstance(obj, dict) and "__header__" in obj:
            problem = header_problem(obj["__header__"], ("label", "split", *tasks))
            if problem:
                raise DataError(problem, path=str(path))
            seen_columns.update(obj["__header__"])
            continue
        n_rows += 1
        if isinstance(obj, RowError):
            fail(row, None, obj)
            continue
        seen_columns.update(obj)
        try:
            parsed.append(parser.parse(row, obj))
        except RowError as err:
            raw_id = obj.get("id")
            fail(row, str(row) if raw_id is None or raw_id == "" else str(raw_id), err)
    if n_rows == 0:
        raise DataError("the manifest has no data rows; add one row per sample (see docs/data.md)",
                        path=str(path))
    return parsed, n_rows, seen_columns
