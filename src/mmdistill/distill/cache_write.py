"""Writing a teacher-output cache: keys, file names, checks, the ``.npy`` writer and ``meta.json``.

The helpers behind :class:`mmdistill.distill.cache.TeacherCache` (its module docstring describes the
format): :func:`cache_key` and :func:`feature_filename` are public and re-exported there; the rest
validates build arguments, streams a teacher's outputs into memory-mapped ``.npy`` files of a
temporary directory and writes the checksummed ``meta.json`` before the caller renames it into place.
"""

from __future__ import annotations

import datetime
import difflib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mmdistill import __version__
from mmdistill.data.batch import Sample, move_batch
from mmdistill.distill.fingerprint import canonical_json
from mmdistill.errors import CheckpointError, ConfigError, DataError
from mmdistill.io_atomic import file_sha256, fsync_dir, fsync_file
from mmdistill.models.outputs import ModelOutput
from mmdistill.training import distributed as dist_utils
from mmdistill.training.kill_hook import maybe_test_kill_at

log = logging.getLogger(__name__)

CACHE_FORMAT = "mmdistill.teacher_cache/1"
DTYPES = ("float32", "float16")
_TMP_PREFIX = ".tmp-teacher-"
_FLOAT16_MAX = 65504.0


def cache_key(teacher_fp: str, data_fp: str, features: Sequence[str], *, dtype: str = "float32",
              logits: bool = True) -> str:
    """The cache key: sha256 over the fingerprints, the (sorted, distinct) feature names and the dtype
    (and ``logits=False`` for a features-only cache; the default leaves earlier keys unchanged)."""
    payload = {"format": CACHE_FORMAT, "teacher": teacher_fp, "data": data_fp,
               "features": sorted(set(features)), "dtype": dtype, **({} if logits else {"logits": False})}
    return hashlib.sha256(canonical_json(payload, "cache key")).hexdigest()


def cache_directory(root: Path, key: str) -> Path:
    """Where the cache (plain or chunked) with ``key`` lives under ``root``: ``<root>/teacher-<key[:16]>``."""
    return Path(root) / f"teacher-{key[:16]}"


def feature_filename(name: str) -> str:
    """``features-<name>.npy``, '.' kept, characters outside ``[A-Za-z0-9._-]`` replaced by '_'."""
    return f"features-{re.sub(r'[^A-Za-z0-9._-]', '_', name)}.npy"


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


def _clean_leftovers(root: Path) -> None:
    """Remove temporary directories (``.tmp-teacher-<key>-<host>-<pid>-<rand>``) of crashed builds.

    Only those of this host whose process is gone: a concurrent build keeps its own. Temporary
    directories are never opened as caches, so one left behind elsewhere is merely ignored.
    """
    for p in root.glob(f"{_TMP_PREFIX}*"):
        parts = p.name[len(_TMP_PREFIX):].split("-")
        if len(parts) != 4 or parts[1] != _host() or not parts[2].isdigit():
            continue
        try:
            os.kill(int(parts[2]), 0)  # signal 0 only checks that the process exists
        except ProcessLookupError:
            log.info("removing leftover temporary cache directory %s", p)
            shutil.rmtree(p, ignore_errors=True)
        except PermissionError:  # alive, owned by another user
            pass


def _outputs(out: Any) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """A teacher's result (ModelOutput, logits tensor, or name → ``[B, D]`` mapping) as (logits, features)."""
    if isinstance(out, ModelOutput):
        return out.logits, out.features
    if isinstance(out, torch.Tensor):
        return out, {}
    if isinstance(out, Mapping):
        return out.get("logits"), {str(k): v for k, v in out.items() if k != "logits"}
    raise ConfigError(f"the teacher returned {type(out).__name__}; it must return ModelOutput, logits or a "
                      "mapping of names to [B, D] tensors")


def _check_options(features: Sequence[str], batch_size: int, dtype: str) -> tuple[list[str], dict[str, str]]:
    """Validate dtype, batch size and feature names; returns (sorted features, feature files)."""
    if dtype not in DTYPES:
        raise ConfigError(f"teacher cache dtype must be one of {list(DTYPES)}, got {dtype!r}")
    if batch_size < 1:
        raise ConfigError(f"teacher cache batch_size must be >= 1, got {batch_size}")
    feats = sorted(set(features))
    files = {f: feature_filename(f) for f in feats}
    if len(set(files.values())) != len(files):
        raise ConfigError(f"teacher cache features {feats} map to the same file names "
                          f"{sorted(files.values())}; rename the features")
    return feats, files


def _check_ids(ids: list[str]) -> list[str]:
    """The ids, or DataError when there are none or one repeats."""
    if not ids:
        raise DataError("cannot build a teacher cache over an empty dataset; check the data split")
    seen: set[str] = set()
    for sid in ids:
        if sid in seen:
            raise DataError(f"sample id {sid!r} appears more than once; the teacher cache maps ids to rows, "
                            "so ids must be unique: fix the manifest's id column")
        seen.add(sid)
    return ids


def _check_build(teacher: nn.Module, dataset: Sequence[Sample], features: Sequence[str], batch_size: int,
                 device: torch.device, dtype: str) -> tuple[list[str], dict[str, str], list[str]]:
    """Validate build arguments before any compute; returns (features, feature files, ids)."""
    feats, files = _check_options(features, batch_size, dtype)
    ids = _check_ids([str(dataset[i]["id"]) for i in range(len(dataset))])
    param = next(iter(teacher.parameters()), None)
    if param is not None and param.device.type != device.type:
        raise ConfigError(f"the teacher is on {param.device} but the cache was asked for device="
                          f"{str(device)!r}; move the teacher or pass the matching device")
    return feats, files, ids


def _write_outputs(tmp: Path, results: Iterable[Any], n: int, feats: list[str], files: dict[str, str],
                   dtype: str, logits: bool = True) -> dict[str, list[int]]:
    """Write each teacher result of ``results`` (see :func:`_outputs`) to ``.npy`` files in ``tmp``.

    Rows go straight into memory-mapped files sized at the first result, so a split larger than RAM
    can be cached. ``logits=False`` stores only ``feats`` (an embedding store). Returns the shapes.
    """
    arrays: dict[str, np.memmap] = {}
    row = 0
    for result in results:
        out_logits, produced = _outputs(result)
        if logits and out_logits is None:
            raise ConfigError("the teacher returned no logits; return ModelOutput or a mapping with 'logits'")
        outs = {"logits": out_logits} if logits else {}
        outs.update({f: produced[f] for f in feats if f in produced})
        if not arrays:  # first batch: check names, then size the files
            unknown = [f for f in feats if f not in produced]
            if unknown:
                hints = [difflib.get_close_matches(u, sorted(produced), n=1) for u in unknown]
                means = "".join(f" (did you mean '{h[0]}'?)" for h in hints if h)
                raise ConfigError(f"teacher feature(s) {unknown} not produced by the teacher{means}; "
                                  f"available: {', '.join(sorted(produced)) or '(none)'}")
            for name, t in outs.items():
                if t.ndim != 2:
                    raise ConfigError(f"teacher output '{name}' has shape {list(t.shape)}; only "
                                      "[B, D] outputs can be cached")
                fname = "logits.npy" if name == "logits" else files[name]
                arrays[name] = np.lib.format.open_memmap(tmp / fname, mode="w+", dtype=dtype,
                                                         shape=(n, int(t.shape[1])))
        b = int(next(iter(outs.values())).shape[0])
        if row + b > n or any(int(t.shape[0]) != b for t in outs.values()):
            raise ConfigError(f"the teacher returned rows {row}..{row + b} of outputs "
                              f"{ {k: list(t.shape) for k, t in outs.items()} } for {n} samples")
        for name, t in outs.items():
            x = t.detach().float().cpu()
            if dtype == "float16" and bool((x.abs() > _FLOAT16_MAX).any()):
                raise ConfigError(f"teacher output '{name}' exceeds the float16 range (max "
                                  f"{float(x.abs().max()):.4g}); use dtype='float32'")
            if not bool(torch.isfinite(x).all()):
                log.warning("teacher output '%s' is not finite in rows %d-%d", name, row, row + b)
            arrays[name][row:row + b] = x.numpy()
        row += b
    if row != n:
        raise ConfigError(f"the teacher returned {row} rows for {n} samples")
    for a in arrays.values():
        a.flush()
    return {name: list(a.shape) for name, a in arrays.items()}


def _run_teacher(tmp: Path, teacher: nn.Module, loader: DataLoader, n: int, feats: list[str],
                 files: dict[str, str], *, progress: bool, device: torch.device,
                 dtype: str) -> dict[str, list[int]]:
    """Run the teacher over ``loader`` and write its outputs to ``.npy`` files in ``tmp``; returns shapes."""
    was_training = teacher.training
    teacher.eval()
    try:
        with torch.inference_mode():
            bar = tqdm(loader, desc="teacher cache", leave=False,
                       disable=not (progress and dist_utils.is_main()))
            return _write_outputs(tmp, (teacher(move_batch(b, device)) for b in bar), n, feats, files, dtype)
    finally:
        teacher.train(was_training)


def _write_meta(tmp: Path, ids: list[str], feats: list[str], files: dict[str, str],
                shapes: dict[str, list[int]], key: str, ingredients: dict[str, str], dtype: str,
                extra: dict[str, Any] | None = None) -> None:
    """Write ``ids.json`` and ``meta.json`` (with every file's sha256), all fsynced before the rename.

    ``extra`` entries (e.g. ``built_by``, see :meth:`TeacherCache.get_or_build`) are added to the
    meta as they are; they are not part of the key.
    """
    (tmp / "ids.json").write_text(json.dumps(ids, ensure_ascii=False), encoding="utf-8")
    names = [*(["logits.npy"] if "logits" in shapes else []), *files.values(), "ids.json"]
    for f in names:
        fsync_file(tmp / f)
    meta = {
        "format": CACHE_FORMAT, "key": key,
        "ingredients": {**ingredients, "features": feats, "dtype": dtype},
        "features": feats, "feature_files": files, "dtype": dtype, "rows": len(ids), "shapes": shapes,
        "logits": "logits" in shapes,
        "files": {f: {"sha256": file_sha256(tmp / f), "bytes": (tmp / f).stat().st_size} for f in names},
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mmdistill_version": __version__, "torch_version": torch.__version__,
    }
    meta |= extra or {}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    fsync_file(tmp / "meta.json")


def write_into_place(root: Path, key: str, final: Path, ingredients: dict[str, str], ids: list[str],
                     feats: list[str], files: dict[str, str], write: Callable[..., dict[str, list[int]]],
                     dtype: str, *, concurrent: Callable[[], Any], meta: dict[str, Any] | None = None) -> Any:
    """``write(tmp, feats, files, rows)`` into a fresh temporary directory of ``root``, add
    ``meta.json`` (plus the entries ``meta`` holds once ``write`` has returned), and rename it to
    ``final`` with one ``os.replace``.

    Returns None when this call's cache is in place, or ``concurrent()`` (the valid cache another
    process renamed there first) when the rename found ``final`` taken. The temporary directory
    never outlives the call.

    Raises:
        OSError: the rename failed and ``concurrent()`` found no valid cache there.
    """
    root.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(root)
    tmp = root / f"{_TMP_PREFIX}{key[:16]}-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        shapes = write(tmp, feats, files, len(ids))
        maybe_test_kill_at("cache:outputs")  # test-only: arrays written, meta.json and rename not
        _write_meta(tmp, ids, feats, files, shapes, key, ingredients, dtype, meta)
        try:
            os.replace(tmp, final)
            fsync_dir(root)  # the rename itself reaches the disk before a stage relies on it
        except OSError:
            # Another process finished the same cache first: keep theirs if it is valid.
            theirs = concurrent()
            if theirs is None:
                raise
            log.info("teacher cache %s was built concurrently; using that one", final)
            return theirs
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return None


def on_rank0_then_all(key: str, create: Callable[[str], Any], open_cache: Callable[[], Any],
                      final: Path) -> Any:
    """``create(key)`` on rank 0 while the other ranks wait, then every rank opens the result.

    Raises:
        ConfigError: the ranks computed different keys.
        CheckpointError: rank 0 failed (its error is re-raised there and reported here), or the
            cache rank 0 wrote is not visible on this rank.
    """
    keys = dist_utils.all_gather_object(key)
    if len(set(keys)) > 1:
        raise ConfigError(f"ranks computed different teacher-cache keys {[k[:16] for k in keys]}: every "
                          "rank must load the same teacher weights and the same full data split")
    cache = None
    if dist_utils.is_main():
        try:
            cache = create(key)
        except Exception as exc:
            # Tell the waiting ranks before re-raising, so they fail too instead of hanging.
            dist_utils.broadcast_object(f"{type(exc).__name__}: {exc}")
            raise
    error: str | None = dist_utils.broadcast_object(None)  # also the barrier: rank 0 has finished
    if error is not None:
        raise CheckpointError(f"rank 0 failed to build the teacher cache: {error}")
    if cache is None and (cache := open_cache()) is None:
        raise CheckpointError(f"rank 0 built the teacher cache, but {final} is not visible here; put the "
                              "run directory on a filesystem all ranks see")
    return cache
