"""Reading the run folder's files and writing the report's artifacts atomically.

Every artifact is written through :mod:`mmdistill.io_atomic` (a temporary file in the same folder,
fsynced, then moved over the target with :func:`os.replace`; re-exported here), so a reader (a
browser, ``mmdistill compare``, a second report) never sees half a file, and an interrupted write
leaves the previous version in place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmdistill.errors import DataError
from mmdistill.io_atomic import atomic_write_bytes, atomic_write_text, jsonable

__all__ = ["atomic_write_bytes", "atomic_write_text", "dump_json", "jsonable", "read_json",
           "read_optional_json"]


def dump_json(obj: Any) -> str:
    """``obj`` as indented strict JSON (no NaN), with a trailing newline."""
    return json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n"


def read_json(path: Path) -> Any:
    """Parse a JSON file of the run folder.

    Raises:
        DataError: the file is not valid JSON (names the file, the line and the fix).
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(
            f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); the stage that writes it was "
            "probably interrupted: rerun that stage, or delete the file to leave it out of the report",
            path=str(path),
        ) from e


def read_optional_json(path: Path) -> Any | None:
    """:func:`read_json`, or ``None`` when the file does not exist."""
    return read_json(path) if Path(path).is_file() else None
