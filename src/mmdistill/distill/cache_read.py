"""Opening a teacher-output cache directory: every file checked before anything is trusted.

:func:`read_cache_dir` is what :meth:`mmdistill.distill.cache.TeacherCache.open` runs: ``meta.json``
must be this format with the expected key, every file must exist and match its sha256, every
``.npy`` must be a plain numeric array of the recorded shape and dtype (``allow_pickle=False``,
memory-mapped), and ``ids.json`` a list of distinct strings, one per row.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mmdistill.distill.cache_write import CACHE_FORMAT
from mmdistill.errors import CheckpointError
from mmdistill.io_atomic import file_sha256


def _read_json(path: Path, damaged: Callable[[str], CheckpointError]) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise damaged(f"{path.name} is unreadable ({exc})") from exc


CacheContents = tuple[dict[str, Any], list[str], dict[str, "np.ndarray"]]
"""``(meta, ids, arrays)``: parsed ``meta.json``, the row ids, name → memory-mapped ``[N, D]`` array."""


def read_cache_dir(directory: Path, key: str, *, verify: bool = True) -> CacheContents:
    """``(meta, ids, arrays)`` of the cache in ``directory`` (which exists), arrays memory-mapped.

    Raises:
        CheckpointError: a file is missing, unreadable, has the wrong checksum, shape or dtype, or
            ``meta.json`` holds another key ("cache ... is damaged: ...; delete it and rerun").
    """

    def damaged(why: str) -> CheckpointError:
        return CheckpointError(f"cache {directory} is damaged: {why}; delete it and rerun")

    meta = _read_json(directory / "meta.json", damaged)
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        raise damaged(f"meta.json is not a '{CACHE_FORMAT}' file")
    if meta.get("key") != key:
        raise damaged(f"meta.json holds key {meta.get('key')!r}, expected {key!r}")
    try:
        files: dict[str, dict[str, Any]] = meta["files"]
        # Caches written before "logits" was optional have no such key and always hold logits.
        names = {"logits": "logits.npy"} if meta.get("logits", True) else {}
        names.update({f: meta["feature_files"][f] for f in meta["features"]})
        shapes = {n: tuple(meta["shapes"][n]) for n in names}
        rows, dtype = int(meta["rows"]), np.dtype(meta["dtype"])
    except (KeyError, TypeError, ValueError) as exc:
        raise damaged(f"meta.json lacks or mangles an entry ({exc!r})") from exc
    for fname, info in files.items():
        path = directory / fname
        if not path.is_file():
            raise damaged(f"{fname} is missing")
        if verify and file_sha256(path) != info.get("sha256"):
            raise damaged(f"{fname} does not match its sha256 checksum in meta.json")
    arrays: dict[str, np.ndarray] = {}
    for name, fname in names.items():
        if fname not in files:
            raise damaged(f"meta.json has no checksum for {fname}")
        try:
            arr = np.load(directory / fname, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise damaged(f"{fname} is not a plain numeric .npy array ({exc})") from exc
        if arr.shape != shapes[name] or arr.dtype != dtype or arr.ndim != 2 or arr.shape[0] != rows:
            raise damaged(f"{fname} holds {arr.dtype}{list(arr.shape)}, meta.json says "
                          f"{dtype}{list(shapes[name])} with {rows} rows")
        arrays[name] = arr
    ids = _read_json(directory / "ids.json", damaged)
    if not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)
            and len(ids) == len(set(ids)) == rows):
        raise damaged(f"ids.json must be a list of {rows} distinct strings")
    return meta, ids, arrays
