"""Teacher-output cache: run the frozen teacher once per data split, memory-map its outputs after.

``<run_dir>/cache/teacher-<key[:16]>/`` holds ``logits.npy`` ``[N, K]``, ``features-<name>.npy``
``[N, D]`` per requested feature, ``ids.json`` (row i is sample ``ids[i]``) and ``meta.json`` (key,
its ingredients, shapes, sha256 of every file). The key hashes the teacher's weights, the data and
the feature names, so a changed teacher or data set gets a new directory instead of stale outputs.
A cache is built in a temporary directory and moved into place with one ``os.replace``, so a crash
never leaves a half-written cache under the final name. Opening one never unpickles anything
(``.npy`` read with ``allow_pickle=False``, ids in JSON). User guide: ``docs/cache.md``.
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mmdistill import __version__
from mmdistill.data.batch import Sample, move_batch
from mmdistill.data.collate import collate
from mmdistill.distill.fingerprint import canonical_json, dataset_fingerprint, model_fingerprint
from mmdistill.errors import CheckpointError, ConfigError, DataError
from mmdistill.models.outputs import ModelOutput
from mmdistill.training import distributed as dist_utils

log = logging.getLogger(__name__)

CACHE_FORMAT = "mmdistill.teacher_cache/1"
DTYPES = ("float32", "float16")
_TMP_PREFIX = ".tmp-teacher-"
_FLOAT16_MAX = 65504.0


class CacheMissError(DataError, KeyError):
    """A sample id is not in the cache (a ``DataError`` that ``except KeyError`` also catches)."""

    def __str__(self) -> str:  # KeyError.__str__ would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


def cache_key(teacher_fp: str, data_fp: str, features: Sequence[str], *, dtype: str = "float32") -> str:
    """The cache key: sha256 over the fingerprints, the (sorted, distinct) feature names and the dtype."""
    payload = {"format": CACHE_FORMAT, "teacher": teacher_fp, "data": data_fp,
               "features": sorted(set(features)), "dtype": dtype}
    return hashlib.sha256(canonical_json(payload, "cache key")).hexdigest()


def feature_filename(name: str) -> str:
    """``features-<name>.npy``, '.' kept, characters outside ``[A-Za-z0-9._-]`` replaced by '_'."""
    return f"features-{re.sub(r'[^A-Za-z0-9._-]', '_', name)}.npy"


def _sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _fsync(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


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


def _read_json(path: Path, damaged: Callable[[str], CheckpointError]) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise damaged(f"{path.name} is unreadable ({exc})") from exc


def _outputs(out: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    if isinstance(out, ModelOutput):
        return out.logits, out.features
    if isinstance(out, torch.Tensor):
        return out, {}
    raise ConfigError(f"the teacher returned {type(out).__name__}; it must return ModelOutput or logits")


def _check_build(teacher: nn.Module, dataset: Sequence[Sample], features: Sequence[str], batch_size: int,
                 device: torch.device, dtype: str) -> tuple[list[str], dict[str, str], list[str]]:
    """Validate build arguments before any compute; returns (features, feature files, ids)."""
    if dtype not in DTYPES:
        raise ConfigError(f"teacher cache dtype must be one of {list(DTYPES)}, got {dtype!r}")
    if batch_size < 1:
        raise ConfigError(f"teacher cache batch_size must be >= 1, got {batch_size}")
    feats = sorted(set(features))
    files = {f: feature_filename(f) for f in feats}
    if len(set(files.values())) != len(files):
        raise ConfigError(f"teacher cache features {feats} map to the same file names "
                          f"{sorted(files.values())}; rename the features")
    ids = [str(dataset[i]["id"]) for i in range(len(dataset))]
    if not ids:
        raise DataError("cannot build a teacher cache over an empty dataset; check the data split")
    seen: set[str] = set()
    for sid in ids:
        if sid in seen:
            raise DataError(f"sample id {sid!r} appears more than once; the teacher cache maps ids to rows, "
                            "so ids must be unique: fix the manifest's id column")
        seen.add(sid)
    param = next(iter(teacher.parameters()), None)
    if param is not None and param.device.type != device.type:
        raise ConfigError(f"the teacher is on {param.device} but the cache was asked for device="
                          f"{str(device)!r}; move the teacher or pass the matching device")
    return feats, files, ids


def _run_teacher(tmp: Path, teacher: nn.Module, loader: DataLoader, n: int, feats: list[str],
                 files: dict[str, str], *, progress: bool, device: torch.device,
                 dtype: str) -> dict[str, list[int]]:
    """Run the teacher over ``loader`` and write its outputs to ``.npy`` files in ``tmp``; returns shapes.

    Rows go straight into memory-mapped ``.npy`` files sized at the first batch, so a split larger
    than RAM can be cached.
    """
    arrays: dict[str, np.memmap] = {}
    row = 0
    was_training = teacher.training
    teacher.eval()
    try:
        with torch.inference_mode():
            for batch in tqdm(loader, desc="teacher cache", leave=False,
                              disable=not (progress and dist_utils.is_main())):
                logits, produced = _outputs(teacher(move_batch(batch, device)))
                outs = {"logits": logits, **{f: produced[f] for f in feats if f in produced}}
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
                b = int(logits.shape[0])
                for name, t in outs.items():
                    x = t.detach().float().cpu()
                    if dtype == "float16" and bool((x.abs() > _FLOAT16_MAX).any()):
                        raise ConfigError(f"teacher output '{name}' exceeds the float16 range (max "
                                          f"{float(x.abs().max()):.4g}); use dtype='float32'")
                    if not bool(torch.isfinite(x).all()):
                        log.warning("teacher output '%s' is not finite in rows %d-%d", name, row, row + b)
                    arrays[name][row:row + b] = x.numpy()
                row += b
    finally:
        teacher.train(was_training)
    assert row == n, f"wrote {row} rows for {n} samples"
    for a in arrays.values():
        a.flush()
    return {name: list(a.shape) for name, a in arrays.items()}


def _write_meta(tmp: Path, ids: list[str], feats: list[str], files: dict[str, str],
                shapes: dict[str, list[int]], key: str, ingredients: dict[str, str], dtype: str) -> None:
    """Write ``ids.json`` and ``meta.json`` (with every file's sha256), all fsynced before the rename."""
    (tmp / "ids.json").write_text(json.dumps(ids, ensure_ascii=False), encoding="utf-8")
    names = ["logits.npy", *files.values(), "ids.json"]
    for f in names:
        _fsync(tmp / f)
    meta = {
        "format": CACHE_FORMAT, "key": key,
        "ingredients": {**ingredients, "features": feats, "dtype": dtype},
        "features": feats, "feature_files": files, "dtype": dtype, "rows": len(ids), "shapes": shapes,
        "files": {f: {"sha256": _sha256_file(tmp / f), "bytes": (tmp / f).stat().st_size} for f in names},
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mmdistill_version": __version__, "torch_version": torch.__version__,
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    _fsync(tmp / "meta.json")


class TeacherCache:
    """Read-only, memory-mapped teacher outputs for one data split (see the module docstring).

    Attributes:
        directory: ``<root>/teacher-<key[:16]>``; key: the full cache key; meta: parsed ``meta.json``.
        ids: sample ids (row i of every array is ``ids[i]``); features: cached feature names, sorted.
    """

    def __init__(self, directory: Path, meta: dict[str, Any], ids: list[str], arrays: dict[str, np.ndarray]):
        self.directory, self.meta, self.ids, self._arrays = directory, meta, ids, arrays
        self.key: str = meta["key"]
        self.features: list[str] = list(meta["features"])
        self._row = {sid: i for i, sid in enumerate(ids)}

    @staticmethod
    def directory_for(root: Path, key: str) -> Path:
        """Where the cache with ``key`` lives under ``root``."""
        return Path(root) / f"teacher-{key[:16]}"

    @classmethod
    def open(cls, root: Path, key: str, *, verify: bool = True) -> TeacherCache | None:
        """Open the cache with ``key`` under ``root``; None when there is none.

        Args:
            root: the cache root (``<run_dir>/cache``).
            key: the full key (see :func:`cache_key`).
            verify: check every file's sha256 against ``meta.json`` (one read of the files).

        Raises:
            CheckpointError: the directory exists but a file is missing, unreadable, has the wrong
                checksum, shape or dtype, or ``meta.json`` holds another key.
        """
        directory = cls.directory_for(root, key)
        if not directory.is_dir():
            return None

        def damaged(why: str) -> CheckpointError:
            return CheckpointError(f"cache {directory} is damaged: {why}; delete it and rerun")

        meta = _read_json(directory / "meta.json", damaged)
        if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
            raise damaged(f"meta.json is not a '{CACHE_FORMAT}' file")
        if meta.get("key") != key:
            raise damaged(f"meta.json holds key {meta.get('key')!r}, expected {key!r}")
        try:
            files: dict[str, dict[str, Any]] = meta["files"]
            names = {"logits": "logits.npy", **{f: meta["feature_files"][f] for f in meta["features"]}}
            shapes = {n: tuple(meta["shapes"][n]) for n in names}
            rows, dtype = int(meta["rows"]), np.dtype(meta["dtype"])
        except (KeyError, TypeError, ValueError) as exc:
            raise damaged(f"meta.json lacks or mangles an entry ({exc!r})") from exc
        for fname, info in files.items():
            path = directory / fname
            if not path.is_file():
                raise damaged(f"{fname} is missing")
            if verify and _sha256_file(path) != info.get("sha256"):
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
        return cls(directory, meta, ids, arrays)

    @classmethod
    def build(cls, root: Path, teacher: nn.Module, dataset: Sequence[Sample], *, features: Sequence[str] = (),
              batch_size: int = 256, key: str | None = None, progress: bool = True,
              device: str | torch.device = "cpu", dtype: str = "float32") -> TeacherCache:
        """Run ``teacher`` over ``dataset`` once and store its outputs; reuse a valid cache with the key.

        Args:
            root: the cache root (``<run_dir>/cache``), created if needed.
            teacher: the model, already on ``device``; run in eval mode under ``torch.inference_mode``
                (its train/eval mode is restored afterwards).
            dataset: samples in a fixed order (a list or ``SampleDataset``) with unique ids.
            features: names from ``ModelOutput.features`` to store besides the logits.
            batch_size: samples per teacher forward; key: default :func:`cache_key` of the fingerprints;
                progress: show a progress bar; device: where batches go.
            dtype: ``"float32"`` or ``"float16"`` (half the disk; lookups still return float32).

        Raises:
            ConfigError: unknown feature name (the message lists the available ones), bad dtype or
                batch size, teacher on another device, or float16 overflow.
            DataError: empty dataset or repeated sample ids.
            CheckpointError: a cache with this key exists but is damaged.
        """
        ingredients = {"teacher": model_fingerprint(teacher), "data": dataset_fingerprint(dataset)}
        if key is None:
            key = cache_key(ingredients["teacher"], ingredients["data"], features, dtype=dtype)
        return cls._open_or_create(Path(root), teacher, dataset, key, ingredients, features=features,
                                   batch_size=batch_size, progress=progress, device=device, dtype=dtype)

    @classmethod
    def get_or_build(cls, root: Path, teacher: nn.Module, dataset: Sequence[Sample], *,
                     features: Sequence[str] = (), extra: dict[str, Any] | None = None, batch_size: int = 256,
                     progress: bool = True, device: str | torch.device = "cpu",
                     dtype: str = "float32") -> TeacherCache:
        """Open the cache for (teacher, dataset + ``extra``, features), building it when absent.

        Under torchrun every rank must pass the same full dataset (not its shard): rank 0 builds,
        the others wait, then every rank opens the same files read-only (``root`` must be on a
        filesystem all ranks see). Arguments are those of :meth:`build`; ``extra`` describes the
        preprocessing and goes into the data fingerprint.

        Raises:
            ConfigError: ranks computed different keys (different teacher weights or data), plus
                everything :meth:`build` raises (re-raised on every rank).
        """
        root = Path(root)
        teacher_fp, data_fp = model_fingerprint(teacher), dataset_fingerprint(dataset, extra=extra)
        ingredients = {"teacher": teacher_fp, "data": data_fp}
        key = cache_key(teacher_fp, data_fp, features, dtype=dtype)
        keys = dist_utils.all_gather_object(key)
        if len(set(keys)) > 1:
            raise ConfigError(f"ranks computed different teacher-cache keys {[k[:16] for k in keys]}: every "
                              "rank must load the same teacher weights and the same full data split")
        cache: TeacherCache | None = None
        if dist_utils.is_main():
            try:
                cache = cls._open_or_create(root, teacher, dataset, key, ingredients, features=features,
                                            dtype=dtype, batch_size=batch_size, progress=progress,
                                            device=device)
            except Exception as exc:
                # Tell the waiting ranks before re-raising, so they fail too instead of hanging.
                dist_utils.broadcast_object(f"{type(exc).__name__}: {exc}")
                raise
        error: str | None = dist_utils.broadcast_object(None)  # also the barrier: rank 0 has finished
        if error is not None:
            raise CheckpointError(f"rank 0 failed to build the teacher cache: {error}")
        if cache is None and (cache := cls.open(root, key)) is None:
            raise CheckpointError(f"rank 0 built the teacher cache, but {cls.directory_for(root, key)} is "
                                  "not visible here; put the run directory on a filesystem all ranks see")
        return cache

    @classmethod
    def _open_or_create(cls, root: Path, teacher: nn.Module, dataset: Sequence[Sample], key: str,
                        ingredients: dict[str, str], *, features: Sequence[str], batch_size: int,
                        progress: bool, device: str | torch.device, dtype: str) -> TeacherCache:
        existing = cls.open(root, key)
        if existing is not None:
            log.info("teacher cache hit: %s (%d rows)", existing.directory, len(existing))
            return existing
        log.info("teacher cache miss: building %s", cls.directory_for(root, key))
        feats, files, ids = _check_build(teacher, dataset, features, batch_size, torch.device(device), dtype)
        root.mkdir(parents=True, exist_ok=True)
        _clean_leftovers(root)
        tmp = root / f"{_TMP_PREFIX}{key[:16]}-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        final = cls.directory_for(root, key)
        try:
            loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)  # type: ignore
            shapes = _run_teacher(tmp, teacher, loader, len(ids), feats, files, progress=progress,
                                  device=torch.device(device), dtype=dtype)
            _write_meta(tmp, ids, feats, files, shapes, key, ingredients, dtype)
            try:
                os.replace(tmp, final)
            except OSError:
                # Another process finished the same cache first: keep theirs if it is valid.
                theirs = cls.open(root, key)
                if theirs is None:
                    raise
                log.info("teacher cache %s was built concurrently; using that one", final)
                return theirs
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        log.info("teacher cache written: %s (%d rows, %s)", final, len(ids), dtype)
        return cls.open(root, key)  # type: ignore[return-value]  # just written, so not None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dims(self) -> dict[str, int]:
        """Width of each stored array: ``{"logits": K, "<feature>": D, ...}``."""
        return {name: int(a.shape[1]) for name, a in self._arrays.items()}

    def lookup(self, ids: Sequence[str]) -> dict[str, torch.Tensor]:
        """Teacher outputs for ``ids``, in the order given.

        Raises:
            CacheMissError: (a ``DataError`` and ``KeyError``) an id is not in the cache.

        Shapes:
            returns ``{"logits": [B, K], "<feature>": [B, D], ...}``, float32 on CPU (B = len(ids)).
        """
        try:
            rows = np.fromiter((self._row[str(i)] for i in ids), dtype=np.int64, count=len(ids))
        except KeyError as exc:
            raise CacheMissError(
                f"sample id {exc.args[0]!r} is not in teacher cache {self.directory} ({len(self)} rows); "
                "the data changed since the cache was built: rebuild it (TeacherCache.get_or_build computes "
                "a new key from the current data)"
            ) from None
        # Fancy indexing copies just these rows out of the memory map; np.array makes the copy writable
        # float32 (float16 caches are widened here) so torch.from_numpy gets memory it may own.
        return {n: torch.from_numpy(np.array(a[rows], dtype=np.float32)) for n, a in self._arrays.items()}

    def describe(self) -> dict[str, Any]:
        """A JSON-serializable summary for logs and reports."""
        return {"directory": str(self.directory), "key": self.key, "rows": len(self),
                "features": list(self.features), "dims": self.dims, "dtype": self.meta["dtype"],
                "bytes": int(sum(f["bytes"] for f in self.meta["files"].values())),
                "created": self.meta.get("created")}

    def __repr__(self) -> str:
        return f"TeacherCache({self.directory}, rows={len(self)}, features={self.features})"
