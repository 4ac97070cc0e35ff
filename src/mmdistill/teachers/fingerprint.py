"""Fingerprints of raw records, files and settings: the keys of teacher caches and embedding stores.

A pretrained teacher reads :class:`~mmdistill.data.records.RawSample` records through its own
preprocessing, so its cache key hashes the raw records (not the student's tensors) and the
teacher's weights *and* preprocessing settings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmdistill import MODALITIES
from mmdistill.data.records import RawSample
from mmdistill.distill.fingerprint import canonical_json
from mmdistill.errors import DataError


def settings_fingerprint(kind: str, settings: dict[str, Any]) -> str:
    """sha256 over ``kind`` and the canonical JSON of ``settings``."""
    return hashlib.sha256(kind.encode() + b"\n" + canonical_json(settings, f"{kind} settings")).hexdigest()


def files_fingerprint(paths: Iterable[str | Path]) -> str:
    """sha256 over each file's name and bytes (in sorted order): the weights of a pretrained model.

    Raises:
        DataError: a file is missing.
    """
    h = hashlib.sha256()
    for p in sorted(Path(p) for p in paths):
        if not p.is_file():
            raise DataError("file not found; reinstall the package or restore the model folder", path=str(p))
        h.update(f"{p.name}|{p.stat().st_size}\n".encode())
        with p.open("rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()


def combine(*parts: str) -> str:
    """One sha256 over several fingerprints (order matters)."""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _array_bytes(x: np.ndarray) -> bytes:
    a = np.ascontiguousarray(x)
    return f"{a.dtype.str}:{list(a.shape)}:".encode() + a.tobytes()


def raw_fingerprint(records: Sequence[RawSample], *, modalities: Sequence[str] = MODALITIES,
                    labels: bool = True, extra: dict[str, Any] | None = None) -> str:
    """sha256 over every record (in order): id, label and task labels, the raw data of ``modalities``.

    Image pixels and audio samples are hashed with dtype and shape, text as UTF-8, audio with its
    sample rate; an absent modality is marked. Restricting ``modalities`` (and ``labels=False``)
    lets an encoder's embedding store survive changes to the other modalities and to the labels.

    Raises:
        DataError: a record is not a RawSample.
    """
    h = hashlib.sha256()
    h.update(b"extra=" + canonical_json(extra or {}, "raw_fingerprint extra") + b"\n")
    mods = [m for m in MODALITIES if m in modalities]
    for i, r in enumerate(records):
        if not isinstance(r, RawSample):
            raise DataError(f"record {i} is a {type(r).__name__}, not a RawSample; pass the records the "
                            "dataset reader returned (before preprocessing)")
        sid = r.id.encode()
        h.update(b"%d:%s|%d|" % (len(sid), sid, int(r.label) if labels else 0))
        if r.tasks and labels:
            h.update(canonical_json(r.tasks, f"tasks of record {r.id!r}"))
        for m in mods:
            value = getattr(r, m)
            if value is None:
                h.update(f"|{m}:-".encode())
            elif m == "text":
                text = value.encode("utf-8")
                h.update(b"|text:%d:%s" % (len(text), text))
            elif m == "audio":
                h.update(f"|audio@{int(r.sample_rate)}:".encode() + _array_bytes(value))
            else:
                h.update(b"|image:" + _array_bytes(value))
        h.update(b"\n")
    return h.hexdigest()
