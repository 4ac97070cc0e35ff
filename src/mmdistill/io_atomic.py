"""Atomic artifact writes: a temporary file in the target's folder, fsynced, then ``os.replace``.

Every file a later stage trusts (checkpoints, resume states, cache files, evaluation results, export
artifacts, reports) is written through this module, so a crash or a ``kill -9`` at any moment
leaves either the previous complete file or the new complete one under the final name, never a
torn one. The temporary file lives in the same folder (``os.replace`` is atomic only within one
file system) and is named ``.<name>.<random>.tmp``: hidden, and never matching a reader's glob such
as ``eval/*.json``. A failed write removes it; a ``kill -9`` can leave one behind, which nothing
reads.

The data is fsynced before the rename and the folder after it (POSIX), so a power loss cannot
reorder the rename before the data. Files get the usual ``0o666 & ~umask`` permissions.

``metrics.jsonl`` is the one exception: an append-only log, written line by line. A kill can cut
its last line; its readers drop a line that does not parse (:func:`mmdistill.training.state_io.
drop_stage_records`, :func:`mmdistill.report.curves.read_metrics`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "file_sha256",
           "fsync_dir", "fsync_file", "jsonable", "remove_stale_temps"]

# The names _temp_name makes: ".<name>.<8 hex>.tmp" and ".<stem>.<8 hex>.tmp<suffix>".
_TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp(\.[A-Za-z0-9_]+)?$")


def _temp_name(path: Path, keep_suffix: bool) -> Path:
    token = secrets.token_hex(4)  # two writers of one file (ranks, a rerun) never share a temp name
    if keep_suffix:  # for libraries that look at the ending (np.save appends .npy, tokenizers .json)
        return path.with_name(f".{path.stem}.{token}.tmp{path.suffix}")
    return path.with_name(f".{path.name}.{token}.tmp")


def fsync_dir(directory: Path) -> None:
    """Flush a folder's entries (a rename) to disk; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename itself is still atomic
    finally:
        os.close(fd)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks (bounded memory): the checksum every artifact
    (checkpoint weights, cache files, shards) is recorded and verified with."""
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fsync_file(path: Path) -> None:
    """Flush a file's data to disk."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextmanager
def atomic_path(path: str | Path, *, keep_suffix: bool = False, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; move it into place on success.

    For libraries that write to a path themselves (``safetensors.torch.save_file``,
    ``torch.onnx.export``, ONNX Runtime's quantizers)::

        with atomic_path(out / "model.safetensors") as tmp:
            save_file(tensors, str(tmp))

    Args:
        path: the final file (its folder is created).
        keep_suffix: end the temporary name with ``path``'s suffix (``.<stem>.<random>.tmp.npy``),
            for writers that add or check an ending. Such a name can match a reader's glob, so use it
            only where no reader globs the folder.
        fsync: flush the file and the folder (off only for scratch files).

    Raises:
        FileNotFoundError: the block ended without writing the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path, keep_suffix)
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"{tmp}: the writer of {path} left no file behind")
        if fsync:
            fsync_file(tmp)
        os.replace(tmp, path)
        if fsync:
            fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)  # gone after a successful rename; removed after a failure


def remove_stale_temps(root: str | Path) -> list[Path]:
    """Delete the temporary files that writers killed mid-write left anywhere under ``root``.

    Only names this module makes are touched (``.<name>.<8 hex>.tmp[<suffix>]``, plain files).
    Call it only while no writer is active under ``root`` (``mmdistill run --resume`` does, before
    its stages start): a live writer's temporary file would be taken from under it.

    Returns:
        the removed paths, sorted.
    """
    removed = []
    for path in Path(root).rglob(".*.tmp*"):
        if _TEMP_RE.match(path.name) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return sorted(removed)


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; return ``path``."""
    path = Path(path)
    with atomic_path(path, fsync=fsync) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    return path


def atomic_write_text(path: str | Path, text: str, *, fsync: bool = True) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; return ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2, **dumps: Any) -> Path:
    """Write ``json.dumps(obj, indent=indent, **dumps)`` plus a newline to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, **dumps) + "\n")


def jsonable(value: Any) -> Any:
    """Plain JSON values from tensors, NumPy scalars and arrays; NaN/inf become null (strict JSON)."""
    if hasattr(value, "tolist") and callable(value.tolist):  # torch.Tensor, np.ndarray, np.generic
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
