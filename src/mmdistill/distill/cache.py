"""Teacher-output cache: run the frozen teacher once per data split, memory-map its outputs after.

``<run_dir>/cache/teacher-<key[:16]>/`` holds ``logits.npy`` ``[N, K]``, ``features-<name>.npy``
``[N, D]`` per requested feature, ``ids.json`` (row i is sample ``ids[i]``) and ``meta.json`` (key,
its ingredients, shapes, sha256 of every file). The key hashes the teacher's weights, the data and
the feature names, so a changed teacher or data set gets a new directory instead of stale outputs.
A cache is built in a temporary directory and moved into place with one ``os.replace``, so a crash
never leaves a half-written cache under the final name. Opening one never unpickles anything
(``.npy`` read with ``allow_pickle=False``, ids in JSON). User guide: ``docs/cache.md``.

:meth:`TeacherCache.get_or_build_from` builds the same format from any callable over any items
(raw records run through a pretrained teacher's own preprocessing, or a frozen encoder's
embeddings, with ``logits=False``), keyed by fingerprints the caller computes.

This module is the API; :mod:`~mmdistill.distill.cache_write` holds the key, the checks of build
arguments and the writer, :mod:`~mmdistill.distill.cache_read` the checks every open runs.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mmdistill.data.batch import Sample
from mmdistill.data.collate import collate
from mmdistill.distill.cache_read import read_cache_dir
from mmdistill.distill.cache_write import (  # cache_key, feature_filename, CACHE_FORMAT, DTYPES: public
    _TMP_PREFIX,  # noqa: F401  (the private helpers the cache tests reach through this module)
    CACHE_FORMAT,
    DTYPES,
    _check_build,
    _check_ids,
    _check_options,
    _host,  # noqa: F401
    _run_teacher,
    _write_outputs,
    cache_directory,
    cache_key,
    feature_filename,
    on_rank0_then_all,
    write_into_place,
)
from mmdistill.distill.fingerprint import dataset_fingerprint, model_fingerprint
from mmdistill.errors import ConfigError, DataError
from mmdistill.training import distributed as dist_utils

log = logging.getLogger(__name__)

__all__ = ["CACHE_FORMAT", "DTYPES", "CacheMissError", "TeacherCache", "cache_key", "dataset_fingerprint",
           "feature_filename", "model_fingerprint"]


def _rng_step(before: torch.Tensor, after: torch.Tensor) -> dict[str, str]:
    """What a cache build did to torch's global RNG: the state's sha256 before, the state after."""
    return {"before_sha256": hashlib.sha256(before.numpy().tobytes()).hexdigest(),
            "after": base64.b64encode(after.numpy().tobytes()).decode("ascii")}


def _replay_rng_step(step: dict[str, str] | None) -> None:
    """Move torch's global RNG to where the build left it, if it is where the build started."""
    if not isinstance(step, dict):
        return
    now = torch.get_rng_state()
    if hashlib.sha256(now.numpy().tobytes()).hexdigest() != step.get("before_sha256"):
        log.debug("teacher cache: the RNG state differs from the build's, left as it is")
        return
    try:
        after = np.frombuffer(base64.b64decode(str(step.get("after", "")), validate=True), dtype=np.uint8)
        torch.set_rng_state(torch.from_numpy(after.copy()))
    except (ValueError, RuntimeError) as exc:  # binascii.Error is a ValueError
        torch.set_rng_state(now)
        log.warning("teacher cache: meta.json's rng.after is not a torch RNG state (%s); the random "
                    "stream after this cache hit differs from the build's", exc)


class CacheMissError(DataError, KeyError):
    """A sample id is not in the cache (a ``DataError`` that ``except KeyError`` also catches)."""

    def __str__(self) -> str:  # KeyError.__str__ would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


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
        return cache_directory(root, key)

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
        meta, ids, arrays = read_cache_dir(directory, key, verify=verify)
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
                     dtype: str = "float32", built_by: str | None = None) -> TeacherCache:
        """Open the cache for (teacher, dataset + ``extra``, features), building it when absent.

        Under torchrun every rank must pass the same full dataset (not its shard): rank 0 builds,
        the others wait, then every rank opens the same files read-only (``root`` must be on a
        filesystem all ranks see). Arguments are those of :meth:`build`; ``extra`` describes the
        preprocessing and goes into the data fingerprint.

        ``built_by`` names the caller (a training stage, e.g. ``student-kd``) and is recorded in a
        cache it builds, with torch's global RNG state before and after the build (iterating the
        DataLoader draws its base seed from that generator). When the same stage later finds its
        cache (a resumed or repeated run) starting from the same RNG state, the state moves on to
        where the build left it: the training that follows sees the same random stream whether the
        cache was built now or before, so a run killed after the cache was written resumes to the
        uninterrupted run's weights bit for bit. Other callers find it and draw nothing.

        Raises:
            ConfigError: ranks computed different keys (different teacher weights or data), plus
                everything :meth:`build` raises (re-raised on every rank).
        """
        root = Path(root)
        teacher_fp, data_fp = model_fingerprint(teacher), dataset_fingerprint(dataset, extra=extra)
        return cls._shared(root, cache_key(teacher_fp, data_fp, features, dtype=dtype),
                           lambda key: cls._open_or_create(
                               root, teacher, dataset, key, {"teacher": teacher_fp, "data": data_fp},
                               features=features, dtype=dtype, batch_size=batch_size, progress=progress,
                               device=device, built_by=built_by))

    @classmethod
    def get_or_build_from(cls, root: Path, fn: Callable[[Sequence[Any]], Any], items: Sequence[Any], *,
                          ids: Sequence[str], teacher_fp: str, data_fp: str, features: Sequence[str] = (),
                          logits: bool = True, batch_size: int = 256, progress: bool = True,
                          dtype: str = "float32") -> TeacherCache:
        """Open or build a cache of ``fn``'s outputs over ``items`` (any objects, e.g. raw records).

        The generic twin of :meth:`get_or_build` for teachers that are not an ``nn.Module`` over
        collated sample batches: a pretrained teacher reading raw records through its own
        preprocessing, an ONNX model, or a frozen encoder whose embeddings are stored once
        (``logits=False``). The caller fingerprints what ``fn`` computes (``teacher_fp``: weights
        and preprocessing) and the items (``data_fp``); the key is :func:`cache_key` of the two.
        Ranks behave as in :meth:`get_or_build`.

        Args:
            root: the cache root, created if needed.
            fn: called with consecutive chunks of at most ``batch_size`` items (under
                ``torch.inference_mode``); returns ``ModelOutput``, a logits tensor, or a mapping of
                names to ``[B, D]`` tensors (``"logits"`` among them when ``logits``).
            items: what ``fn`` reads, in a fixed order; ids: one unique id per item (row ids).
            teacher_fp / data_fp: fingerprints of ``fn`` and of ``items``.
            features: names of ``fn``'s outputs to store; logits: store ``"logits"`` too.
            batch_size, progress, dtype: as in :meth:`build`.

        Raises:
            ConfigError: no outputs asked for, unknown feature, wrong row count, bad dtype or batch size.
            DataError: no items, repeated or missing ids.
        """
        root = Path(root)
        ids = [str(i) for i in ids]
        if len(ids) != len(items):
            raise DataError(f"get_or_build_from got {len(ids)} ids for {len(items)} items; give one id each")
        if not logits and not features:
            raise ConfigError("a cache without logits needs at least one feature name to store")

        def write(tmp: Path, feats: list[str], files: dict[str, str], n: int) -> dict[str, list[int]]:
            bar = tqdm(range(0, n, batch_size), desc="teacher cache", leave=False,
                       disable=not (progress and dist_utils.is_main()))
            with torch.inference_mode():
                results = (fn([items[i] for i in range(s, min(s + batch_size, n))]) for s in bar)
                return _write_outputs(tmp, results, n, feats, files, dtype, logits=logits)

        def create(key: str) -> TeacherCache:
            ingredients = {"teacher": teacher_fp, "data": data_fp}
            return cls._create(root, key, ingredients, lambda: ids, features, write, batch_size=batch_size,
                               dtype=dtype)

        return cls._shared(root, cache_key(teacher_fp, data_fp, features, dtype=dtype, logits=logits), create)

    @classmethod
    def _shared(cls, root: Path, key: str, create: Callable[[str], TeacherCache]) -> TeacherCache:
        """``create(key)`` on rank 0 while the other ranks wait, then every rank opens the result."""
        return on_rank0_then_all(key, create, lambda: cls.open(root, key), cls.directory_for(root, key))

    @classmethod
    def _open_or_create(cls, root: Path, teacher: nn.Module, dataset: Sequence[Sample], key: str,
                        ingredients: dict[str, str], *, features: Sequence[str], batch_size: int,
                        progress: bool, device: str | torch.device, dtype: str,
                        built_by: str | None = None) -> TeacherCache:
        meta: dict[str, Any] = {}

        def write(tmp: Path, feats: list[str], files: dict[str, str], n: int) -> dict[str, list[int]]:
            before = torch.get_rng_state()
            loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)  # type: ignore
            shapes = _run_teacher(tmp, teacher, loader, n, feats, files, progress=progress,
                                  device=torch.device(device), dtype=dtype)
            if built_by is not None:
                meta.update(built_by=built_by, rng=_rng_step(before, torch.get_rng_state()))
            return shapes

        def ids() -> list[str]:
            return _check_build(teacher, dataset, features, batch_size, torch.device(device), dtype)[2]

        cache = cls._create(root, key, ingredients, ids, features, write, batch_size=batch_size, dtype=dtype,
                            meta=meta)
        if built_by is not None and cache.meta.get("built_by") == built_by:
            # A cache found by the stage that built it replays the build's draw; one built just now
            # left the generator past the recorded start, so the replay leaves it alone.
            _replay_rng_step(cache.meta.get("rng"))
        return cache

    @classmethod
    def _create(cls, root: Path, key: str, ingredients: dict[str, str], row_ids: Callable[[], list[str]],
                features: Sequence[str], write: Callable[..., dict[str, list[int]]], *, batch_size: int,
                dtype: str, meta: dict[str, Any] | None = None) -> TeacherCache:
        """Open the cache with ``key``, else check ``row_ids()`` and the options, ``write(tmp, features,
        files, rows)`` into a temporary directory and rename it into place."""
        existing = cls.open(root, key)
        if existing is not None:
            log.info("teacher cache hit: %s (%d rows)", existing.directory, len(existing))
            return existing
        ids = _check_ids(row_ids())
        feats, files = _check_options(features, batch_size, dtype)
        final = cls.directory_for(root, key)
        log.info("teacher cache miss: building %s", final)
        theirs = write_into_place(root, key, final, ingredients, ids, feats, files, write, dtype,
                                  concurrent=lambda: cls.open(root, key), meta=meta)
        if theirs is not None:
            return theirs
        log.info("teacher cache written: %s (%d rows, %s)", final, len(ids), dtype)
        return cls.open(root, key)  # type: ignore[return-value]  # just written, so not None

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, sample_id: object) -> bool:
        """Whether the cache holds ``sample_id`` (O(1))."""
        return str(sample_id) in self._row

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
