"""Teacher-output cache of a **streamed** train split: written in chunks, resumable, keyed by sample id.

The in-memory cache (:class:`~mmdistill.distill.cache.TeacherCache`) fingerprints and indexes a
map-style dataset. A streamed split (``data.stream``, a :class:`~mmdistill.data.shard_stream.ShardStream`)
is never in memory, so this cache is built differently:

- **Fixed order.** Rows are read in packing order (never the shuffled training order), in
  ``ceil(R / chunk_rows)`` contiguous chunks of at most ``chunk_rows`` rows; chunk ``k`` is slice
  ``k`` of the split cut like one DDP rank's share (:func:`~mmdistill.data.shard_stream.plan_epoch`), so
  it reads only its own row groups.
- **Bounded memory.** One chunk of outputs (``chunk_rows × (K + feature widths)`` floats) plus the
  stream's row group is held at a time.
- **Layout.** ``<root>/teacher-<key[:16]>/chunk-00000/`` … each with ``logits.npy``,
  ``features-<name>.npy``, ``ids.json`` and ``chunk.json`` (rows, sha256 of every file). A chunk is
  written under ``.tmp-chunk-...`` and renamed when complete. ``meta.json`` (key, ingredients,
  shapes, every chunk's checksums) is written last: a directory without it is a build in progress.
- **Resumable.** A build that finds chunks of an interrupted build keeps those whose checksums
  verify and continues at the first missing (or damaged: it and those after it are rewritten).
- **Keyed.** The key hashes the teacher's weights, the train shards' sha256s, the preprocessing
  (``extra``: image/audio/text settings and the tokenizer's sha256) and the feature names.
- **Shared.** Under torchrun rank 0 builds while the others wait, then every rank memory-maps the
  same files (:func:`~mmdistill.distill.cache_write.on_rank0_then_all`); lookups go by
  ``batch["id"]``, so the ranks' shuffled order does not matter. The id → row map (the ids only, not
  the outputs) is held in memory.
- **Any teacher.** :meth:`ChunkedTeacherCache.get_or_build` runs an ``nn.Module`` on collated batches;
  :meth:`ChunkedTeacherCache.get_or_build_from` runs a function on lists of the stream's items (raw
  records: ``Teacher.forward_raw``, or a frozen encoder's embeddings with ``logits=False``).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mmdistill import __version__
from mmdistill.data.shard_stream import ShardStream
from mmdistill.distill.cache_chunk_io import (
    ChunkRunner,
    chunk_name,
    chunk_ok,
    chunk_stream,
    run_chunk,
    run_chunk_from,
    write_chunk,
)
from mmdistill.distill.cache_write import (
    cache_directory,
    cache_key,
    feature_filename,
    on_rank0_then_all,
)
from mmdistill.distill.fingerprint import canonical_json, model_fingerprint
from mmdistill.errors import CheckpointError, ConfigError
from mmdistill.io_atomic import atomic_write_json, file_sha256
from mmdistill.training import distributed as dist_utils

log = logging.getLogger(__name__)

CHUNKED_FORMAT = "mmdistill-teacher-cache-chunked/1"
DEFAULT_CHUNK_ROWS = 4096
META_FILE = "meta.json"


def stream_fingerprint(stream: ShardStream, *, extra: dict[str, Any] | None = None) -> str:
    """sha256 of the streamed split's shards (their index sha256s and rows), its tasks and ``extra``.

    The shards are content-addressed by the index, so this costs no pass over the data; ``extra``
    must describe the preprocessing (including the tokenizer), which the shard bytes do not show.
    """
    shards = [[e["file"], int(e["rows"]), e["sha256"]] for e in stream.index.splits[stream.split]]
    body = {"format": CHUNKED_FORMAT, "split": stream.split, "shards": shards,
            "tasks": list(stream.decode.tasks), "sample_rate": stream.decode.rate, "extra": extra or {}}
    return hashlib.sha256(canonical_json(body, "stream_fingerprint extra")).hexdigest()


def _names(meta: dict[str, Any]) -> list[str]:
    """The arrays a cache holds: ``logits`` (unless built with ``logits=False``) and its features."""
    return (["logits"] if meta.get("logits", True) else []) + list(meta["features"])


def chunked_key(teacher_fp: str, stream: ShardStream, features: Sequence[str], *,
                extra: dict[str, Any] | None = None, logits: bool = True) -> str:
    """The key of the chunked cache of (``teacher_fp``, ``stream``'s split + ``extra``, features):
    what :meth:`ChunkedTeacherCache.open` takes to find a cache without building it."""
    feats = sorted(dict.fromkeys(features))
    return cache_key(teacher_fp, stream_fingerprint(stream, extra=extra), feats, logits=logits) + "-chunked"


class ChunkedTeacherCache:
    """Read-only, memory-mapped teacher outputs of a streamed split, looked up by sample id.

    Attributes:
        directory: ``<root>/teacher-<key[:16]>``; key: the full key; meta: parsed ``meta.json``;
        features: cached feature names, sorted.
    """

    def __init__(self, directory: Path, meta: dict[str, Any], chunks: list[tuple[list[str], dict[str, Any]]]):
        self.directory, self.meta = directory, meta
        self.key: str = meta["key"]
        self.features: list[str] = list(meta["features"])
        self._arrays = [arrays for _, arrays in chunks]
        self._row: dict[str, tuple[int, int]] = {}
        for c, (ids, _) in enumerate(chunks):
            for r, sid in enumerate(ids):
                if sid in self._row:
                    raise CheckpointError(f"teacher cache {directory}: sample id {sid!r} appears twice; "
                                          "ids must be unique (re-pack the data)")
                self._row[sid] = (c, r)

    @staticmethod
    def directory_for(root: Path, key: str) -> Path:
        return cache_directory(root, key)

    @classmethod
    def open(cls, root: Path, key: str, *, verify: bool = True) -> ChunkedTeacherCache | None:
        """The complete cache with ``key`` under ``root``; None when absent or still being built.

        Raises:
            CheckpointError: it is complete but of another key/format, or a file fails its sha256.
        """
        directory = cls.directory_for(root, key)
        if not (directory / META_FILE).is_file():
            return None
        try:
            meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"teacher cache {directory}: unreadable {META_FILE} ({e}); delete the "
                                  "directory to rebuild it") from e
        if not isinstance(meta, dict) or meta.get("format") != CHUNKED_FORMAT or meta.get("key") != key:
            raise CheckpointError(f"teacher cache {directory} is not a chunked cache of key {key[:16]}...; "
                                  "delete the directory to rebuild it")
        chunks = []
        for k, info in enumerate(meta["chunks"]):
            path = directory / chunk_name(k)
            for f, sha in info["files"].items():
                if verify and (not (path / f).is_file() or file_sha256(path / f) != sha):
                    raise CheckpointError(f"teacher cache {directory}: {chunk_name(k)}/{f} is missing or "
                                          "fails its sha256 check; delete the directory to rebuild it")
            ids = json.loads((path / "ids.json").read_text(encoding="utf-8"))
            arrays = {n: np.load(path / ("logits.npy" if n == "logits" else meta["feature_files"][n]),
                                 mmap_mode="r", allow_pickle=False)
                      for n in _names(meta)}
            chunks.append((ids, arrays))
        return cls(directory, meta, chunks)

    @classmethod
    def get_or_build(cls, root: Path, teacher: nn.Module, stream: ShardStream, *,
                     features: Sequence[str] = (), extra: dict[str, Any] | None = None, batch_size: int = 256,
                     chunk_rows: int = DEFAULT_CHUNK_ROWS, progress: bool = True,
                     device: str | torch.device = "cpu") -> ChunkedTeacherCache:
        """Open the cache for (teacher, ``stream``'s split + ``extra``, features), building (or
        finishing) it when absent. Every rank calls it; rank 0 builds (see the module docstring).

        Raises:
            ConfigError: bad ``batch_size``/``chunk_rows``, unknown feature, ranks with other keys.
            CheckpointError: a complete cache with this key is damaged.
        """
        feats = sorted(dict.fromkeys(features))
        files = {f: feature_filename(f) for f in feats}
        dev = torch.device(device)

        def run(rows: ShardStream) -> tuple[list[str], dict[str, np.ndarray]]:
            return run_chunk(teacher, rows, feats, files, batch_size, dev)

        was_training = teacher.training
        teacher.eval()
        try:
            return cls._get_or_build(root, run, stream, teacher_fp=model_fingerprint(teacher), features=feats,
                                     extra=extra, batch_size=batch_size, chunk_rows=chunk_rows,
                                     progress=progress)
        finally:
            teacher.train(was_training)

    @classmethod
    def get_or_build_from(cls, root: Path, fn: Callable[[list[Any]], Any], stream: ShardStream, *,
                          teacher_fp: str, features: Sequence[str] = (), extra: dict[str, Any] | None = None,
                          logits: bool = True, batch_size: int = 256, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                          progress: bool = True) -> ChunkedTeacherCache:
        """:meth:`get_or_build` for a teacher that is not an ``nn.Module`` over collated batches.

        The streamed twin of :meth:`TeacherCache.get_or_build_from
        <mmdistill.distill.cache.TeacherCache.get_or_build_from>`: ``fn`` gets lists of at most
        ``batch_size`` of ``stream``'s items (raw records when the stream has no transform: a
        teacher with its own preprocessing, ``Teacher.forward_raw``) and returns ModelOutput, logits
        or a mapping of ``[B, D]`` tensors; ``teacher_fp`` fingerprints what ``fn`` computes (weights
        and preprocessing). ``logits=False`` stores ``features`` alone (a frozen encoder's embedding
        store). Same chunks, order, layout, resume and rank behaviour.
        """
        feats = sorted(dict.fromkeys(features))
        if not logits and not feats:
            raise ConfigError("a cache without logits needs at least one feature name to store")

        def run(rows: ShardStream) -> tuple[list[str], dict[str, np.ndarray]]:
            return run_chunk_from(fn, rows, feats, batch_size, logits)

        return cls._get_or_build(root, run, stream, teacher_fp=teacher_fp, features=feats, extra=extra,
                                 batch_size=batch_size, chunk_rows=chunk_rows, progress=progress,
                                 logits=logits)

    @classmethod
    def _get_or_build(cls, root: Path, run: ChunkRunner, stream: ShardStream, *, teacher_fp: str,
                      features: list[str], extra: dict[str, Any] | None, batch_size: int, chunk_rows: int,
                      progress: bool, logits: bool = True) -> ChunkedTeacherCache:
        if batch_size < 1 or chunk_rows < 1:
            raise ConfigError(f"batch_size and chunk_rows must be >= 1, got {batch_size} and {chunk_rows}")
        root = Path(root)
        data_fp = stream_fingerprint(stream, extra=extra)
        key = chunked_key(teacher_fp, stream, features, extra=extra, logits=logits)
        final = cls.directory_for(root, key)

        def create(key: str) -> ChunkedTeacherCache:
            found = cls.open(root, key)
            if found is not None:
                return found
            cls._build(final, key, run, stream, features, {"teacher": teacher_fp, "data": data_fp},
                       chunk_rows=chunk_rows, progress=progress, logits=logits)
            return cls.open(root, key)  # type: ignore[return-value]  # just written

        return on_rank0_then_all(key, create, lambda: cls.open(root, key), final)

    @classmethod
    def _build(cls, directory: Path, key: str, run: ChunkRunner, stream: ShardStream, feats: list[str],
               ingredients: dict[str, str], *, chunk_rows: int, progress: bool, logits: bool = True) -> None:
        total = stream.index.rows(stream.split)
        n_chunks = max(1, math.ceil(total / chunk_rows))
        files = {f: feature_filename(f) for f in feats}
        directory.mkdir(parents=True, exist_ok=True)
        plan = directory / "plan.json"  # a resumed build must cut the same chunks
        want = {"key": key, "chunks": n_chunks, "rows": total}
        if not plan.is_file() or json.loads(plan.read_text(encoding="utf-8")) != want:
            for old in directory.glob("chunk-*"):
                shutil.rmtree(old, ignore_errors=True)
            atomic_write_json(plan, want)
        infos: list[dict[str, Any]] = []
        for k in range(n_chunks):  # keep the verified prefix of an interrupted build
            info = chunk_ok(directory, k)
            if info is None:
                break
            infos.append(info)
        if infos:
            log.info("teacher cache %s: resuming at chunk %d of %d (%d verified)", directory, len(infos),
                     n_chunks, len(infos))
        # Iterating a chunk's DataLoader draws from torch's global RNG. The build runs on a fork of it,
        # so that building, finishing an interrupted build or finding the cache leave the caller's
        # random stream (e.g. the student's modality dropout) in the same state: a resumed run trains
        # on the stream an uninterrupted one did.
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            bar = tqdm(range(len(infos), n_chunks), desc="teacher cache (chunks)", leave=False,
                       disable=not (progress and dist_utils.is_main()))
            for k in bar:
                ids, arrays = run(chunk_stream(stream, k, n_chunks))
                infos.append(write_chunk(directory, k, ids, arrays, files))
        shapes = {n: [sum(i["shapes"][n][0] for i in infos), w] for n, (_, w) in infos[0]["shapes"].items()}
        meta = {
            "format": CHUNKED_FORMAT, "key": key, "ingredients": {**ingredients, "features": feats},
            "features": feats, "feature_files": files, "dtype": "float32", "rows": total, "shapes": shapes,
            "logits": logits,
            "chunk_rows": chunk_rows, "chunks": infos,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "mmdistill_version": __version__, "torch_version": torch.__version__,
        }
        # last: its presence marks the cache complete
        atomic_write_json(directory / META_FILE, meta, ensure_ascii=False)

    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, sample_id: object) -> bool:
        """Whether the cache holds ``sample_id`` (O(1))."""
        return str(sample_id) in self._row

    @property
    def dims(self) -> dict[str, int]:
        """Width of each stored array: ``{"logits": K, "<feature>": D, ...}``."""
        return {name: int(shape[1]) for name, shape in self.meta["shapes"].items()}

    def lookup(self, ids: Sequence[str]) -> dict[str, torch.Tensor]:
        """Teacher outputs for ``ids``, in the order given.

        Raises:
            CacheMissError: an id is not in the cache.

        Shapes:
            returns ``{"logits": [B, K], "<feature>": [B, D], ...}``, float32 on CPU (B = len(ids)).
        """
        from mmdistill.distill.cache import CacheMissError

        try:
            where = [self._row[str(i)] for i in ids]
        except KeyError as exc:
            raise CacheMissError(f"sample id {exc.args[0]!r} is not in teacher cache {self.directory} "
                                 f"({len(self)} rows); the data changed since the cache was built") from None
        chunk = np.fromiter((c for c, _ in where), dtype=np.int64, count=len(where))
        row = np.fromiter((r for _, r in where), dtype=np.int64, count=len(where))
        groups = [(c, chunk == c) for c in np.unique(chunk)]  # one fancy index per chunk, as TeacherCache
        out: dict[str, torch.Tensor] = {}
        for n in _names(self.meta):
            buf = np.empty((len(where), int(self.meta["shapes"][n][1])), dtype=np.float32)
            for c, sel in groups:
                buf[sel] = self._arrays[c][n][row[sel]]
            out[n] = torch.from_numpy(buf)
        return out

    def describe(self) -> dict[str, Any]:
        """A JSON-serializable summary for logs and reports."""
        return {"directory": str(self.directory), "key": self.key, "rows": len(self),
                "features": list(self.features), "dims": self.dims, "dtype": "float32",
                "chunks": len(self.meta["chunks"]), "created": self.meta.get("created")}

    def __repr__(self) -> str:
        return f"ChunkedTeacherCache({self.directory}, rows={len(self)}, chunks={len(self.meta['chunks'])})"
