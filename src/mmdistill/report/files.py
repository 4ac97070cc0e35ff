"""Reading the run folder's files and writing the report's artifacts atomically.

Every artifact is written to a temporary file in the same folder, then moved over the target with
:func:`os.replace`, so a reader (a browser, ``mmdistill compare``, a second report) never sees half a
file, and an interrupted write leaves the previous version in place.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmdistill.errors import DataError


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder; return ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the report is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def jsonable(value: Any) -> Any:
    """A copy of ``value`` that strict JSON accepts: NaN and infinities become ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


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
