"""One chunk of a :class:`~mmdistill.distill.cache_chunks.ChunkedTeacherCache`: compute, check, write.

A chunk is a contiguous slice of a streamed split in packing order (:func:`chunk_stream`), its
teacher outputs computed in memory (:func:`run_chunk` for an ``nn.Module`` over collated batches,
:func:`run_chunk_from` for a function over lists of items such as raw records), and written as
``chunk-<k>/`` with ``logits.npy``, one ``.npy`` per feature, ``ids.json`` and ``chunk.json``
(rows, shapes, sha256 of every file) under a temporary name, fsynced and renamed into place
(:func:`write_chunk`); :func:`chunk_ok` accepts a chunk only when every checksum matches.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmdistill.data.batch import move_batch
from mmdistill.data.loaders import make_stream_loader
from mmdistill.data.shard_stream import ShardStream
from mmdistill.distill.cache_write import _outputs
from mmdistill.errors import ConfigError
from mmdistill.io_atomic import atomic_write_json, file_sha256, fsync_file

CHUNK_FILE = "chunk.json"


def chunk_name(k: int) -> str:
    """The folder name of chunk ``k`` (``chunk-00000``)."""
    return f"chunk-{k:05d}"


def chunk_ok(directory: Path, k: int) -> dict[str, Any] | None:
    """Chunk ``k``'s ``chunk.json`` if the chunk is complete and every file matches its sha256."""
    path = directory / chunk_name(k)
    try:
        info = json.loads((path / CHUNK_FILE).read_text(encoding="utf-8"))
        if all(file_sha256(path / f) == sha for f, sha in info["files"].items()):
            return info
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def chunk_stream(stream: ShardStream, k: int, n_chunks: int) -> ShardStream:
    """Chunk ``k`` of ``n_chunks`` of ``stream``'s split: packing order cut into contiguous slices
    exactly like DDP ranks' shares (slice k is chunk k), unshuffled."""
    return stream.derive(shuffle=False, rank=k, world_size=n_chunks)


ChunkRunner = Callable[[ShardStream], tuple[list[str], dict[str, np.ndarray]]]
"""Computes one chunk's outputs: its rows' ids and ``{"logits": [n, K], "<feature>": [n, D]}``."""


def add_outputs(out: Any, features: list[str], parts: dict[str, list[np.ndarray]], rows: int, *,
                 logits: bool = True) -> None:
    """Check one batch's teacher result (``rows`` rows, see ``_outputs``); append its arrays to ``parts``.

    ``logits=False``: only ``features`` are kept (an embedding store), the logits may be absent.
    """
    got, produced = _outputs(out)
    if logits and got is None:
        raise ConfigError("the teacher returned no logits; return ModelOutput or a mapping with 'logits'")
    unknown = [f for f in features if f not in produced]
    if unknown:
        raise ConfigError(f"teacher feature(s) {unknown} not produced by the teacher; available: "
                          f"{', '.join(sorted(produced)) or '(none)'}")
    kept = ({"logits": got} if logits else {}) | {f: produced[f] for f in features}
    for name, t in kept.items():
        if t.ndim != 2:
            raise ConfigError(f"teacher output '{name}' has shape {list(t.shape)}; only [B, D] outputs "
                              "can be cached")
        if t.shape[0] != rows:
            raise ConfigError(f"the teacher returned {t.shape[0]} rows of '{name}' for a batch of {rows}; "
                              "return one row per input")
        parts.setdefault(name, []).append(t.detach().float().cpu().numpy())


def run_chunk(teacher: nn.Module, rows: ShardStream, features: list[str], files: dict[str, str],
               batch_size: int, device: torch.device) -> tuple[list[str], dict[str, np.ndarray]]:
    """The teacher's outputs over one chunk, in memory (``chunk_rows`` rows at most)."""
    ids: list[str] = []
    parts: dict[str, list[np.ndarray]] = {}
    for batch in make_stream_loader(rows, batch_size):
        add_outputs(teacher(move_batch(batch, device)), features, parts, len(batch["id"]))
        ids.extend(str(i) for i in batch["id"])
    return ids, {n: np.concatenate(p) for n, p in parts.items()}


def run_chunk_from(fn: Callable[[list[Any]], Any], rows: ShardStream, features: list[str],
                    batch_size: int, logits: bool = True) -> tuple[list[str], dict[str, np.ndarray]]:
    """``fn``'s outputs over one chunk of items (e.g. raw records: a stream without transform), in memory."""
    ids: list[str] = []
    parts: dict[str, list[np.ndarray]] = {}
    items = iter(rows)
    while chunk := list(islice(items, batch_size)):
        add_outputs(fn(chunk), features, parts, len(chunk), logits=logits)
        ids.extend(str(r.id if hasattr(r, "id") else r["id"]) for r in chunk)  # RawSample or sample dict
    return ids, {n: np.concatenate(p) for n, p in parts.items()}


def write_chunk(directory: Path, k: int, ids: list[str], arrays: dict[str, np.ndarray],
                 files: dict[str, str]) -> dict[str, Any]:
    """Write chunk ``k`` under a temporary name, checksum and fsync it, rename it into place."""
    final = directory / chunk_name(k)
    tmp = directory / f".tmp-{chunk_name(k)}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(final, ignore_errors=True)  # a damaged chunk being rewritten
    tmp.mkdir()
    names = {}
    for name, a in arrays.items():
        fname = "logits.npy" if name == "logits" else files[name]
        np.save(tmp / fname, a, allow_pickle=False)
        names[fname] = name
    (tmp / "ids.json").write_text(json.dumps(ids, ensure_ascii=False), encoding="utf-8")
    shas = {}
    for f in [*names, "ids.json"]:
        fsync_file(tmp / f)
        shas[f] = file_sha256(tmp / f)
    info = {"rows": len(ids), "files": shas, "shapes": {n: list(a.shape) for n, a in arrays.items()}}
    atomic_write_json(tmp / CHUNK_FILE, info)
    os.replace(tmp, final)
    return info
