"""What pretrained teachers store once per sample: frozen embeddings and teacher outputs.

Both are :class:`~mmdistill.distill.cache.TeacherCache` directories (one format, memory-mapped
``.npy`` + ``ids.json`` + checksummed ``meta.json``), built with
:meth:`~mmdistill.distill.cache.TeacherCache.get_or_build_from` over raw records:

* an **embedding store** (:func:`embedding_store`) holds one frozen encoder's ``"<m>.embedding"``
  ``[N, D]`` (no logits), keyed by the encoder's fingerprint (weights files + preprocessing
  settings) and the records' ids and raw data *of that modality only*, so changing the images or
  the labels does not recompute the text embeddings. Rows without the modality hold zeros.
* a **teacher cache** (:func:`teacher_cache`) holds a raw-record teacher's logits and features,
  keyed by :meth:`Teacher.fingerprint` and the raw records it reads; the distill strategy reads it
  by sample id exactly like the cache of an mmdistill teacher. A streamed train split
  (``data.stream``) gets the chunked twin, :func:`streamed_teacher_cache`.

With ``data.stream`` the train split's embeddings go to a chunked store
(:func:`streamed_embedding_store`) and val/test's to an ordinary one, joined by :class:`SplitStore`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mmdistill.data.shard_stream import ShardStream
from mmdistill.distill.cache import TeacherCache
from mmdistill.distill.cache_chunks import ChunkedTeacherCache, chunked_key
from mmdistill.teachers.base import PretrainedEncoder, RawBatch, Teacher, present_rows
from mmdistill.teachers.fingerprint import raw_fingerprint

EMBEDDINGS_DIR = "embeddings"
"""Embedding stores live in ``<run_dir>/cache/embeddings/``, next to the teacher caches."""


def embedding_feature(modality: str) -> str:
    """The stored feature name of a modality's embedding: ``"<m>.embedding"``."""
    return f"{modality}.embedding"


def embed_rows(encoder: PretrainedEncoder, records: RawBatch) -> torch.Tensor:
    """``encoder.embed`` over the records that hold its modality; zeros for the others.

    Shapes:
        returns ``[len(records), encoder.out_dim]`` float32.
    """
    rows = present_rows(records, encoder.modality)
    out = torch.zeros(len(records), int(encoder.out_dim))
    if rows:
        emb = encoder.embed([records[i] for i in rows]).float()
        if tuple(emb.shape) != (len(rows), int(encoder.out_dim)):
            raise ValueError(f"{type(encoder).__name__}.embed returned {list(emb.shape)} for {len(rows)} "
                             f"records; "
                             f"expected [{len(rows)}, {encoder.out_dim}]")
        out[rows] = emb
    return out


def embedding_store(root: str | Path, encoder: PretrainedEncoder, records: RawBatch, *, batch_size: int = 64,
                    progress: bool = True, dtype: str = "float32") -> TeacherCache:
    """Open or build the frozen embeddings of ``encoder`` over ``records`` (all splits at once is best).

    Args:
        root: the store root, normally ``<run_dir>/cache/embeddings``.
        encoder: a frozen pretrained encoder.
        records: raw records with unique ids.
        batch_size: records per ``embed`` call; progress: show a bar; dtype: ``float32``/``float16``.

    Returns:
        a cache whose ``lookup(ids)`` gives ``{"<m>.embedding": [B, D]}``.
    """
    m = encoder.modality
    feature = embedding_feature(m)
    return TeacherCache.get_or_build_from(
        Path(root), lambda chunk: {feature: embed_rows(encoder, chunk)}, records,
        ids=[r.id for r in records], teacher_fp=encoder.fingerprint(),
        data_fp=raw_fingerprint(records, modalities=[m], labels=False), features=[feature], logits=False,
        batch_size=batch_size, progress=progress, dtype=dtype,
    )


def open_embedding_store(root: str | Path, encoder: PretrainedEncoder, records: RawBatch, *,
                         dtype: str = "float32") -> TeacherCache | None:
    """The embedding store :func:`embedding_store` would open for these arguments, or None when it
    was never built. Local only (no collective call, nothing computed): for one process of a
    distributed run, e.g. the evaluate stage on rank 0."""
    from mmdistill.distill.cache import cache_key

    feature = embedding_feature(encoder.modality)
    key = cache_key(encoder.fingerprint(), raw_fingerprint(records, modalities=[encoder.modality],
                                                           labels=False),
                    [feature], dtype=dtype, logits=False)
    return TeacherCache.open(Path(root), key)


def _raw_stream(stream: ShardStream) -> ShardStream:
    """``stream``'s split as raw records in packing order (no transform, no shuffle): what a raw-record
    teacher or a frozen encoder reads in its one pass over a streamed split."""
    return stream.derive(transform=None, shuffle=False)


def _embedding_extra(modality: str) -> dict[str, Any]:
    return {"embedding_store": modality}


def streamed_embedding_store(root: str | Path, encoder: PretrainedEncoder, stream: ShardStream, *,
                             batch_size: int = 64, progress: bool = True) -> ChunkedTeacherCache:
    """:func:`embedding_store` over a streamed split (``data.stream``): one chunked pass over its raw rows.

    A features-only :class:`ChunkedTeacherCache` of ``"<m>.embedding"`` (``logits=False``), keyed by
    the encoder's fingerprint and the shards' checksums (so, unlike the in-memory store, any change to
    the shards recomputes it). Memory: one chunk of embeddings and one row group.
    """
    m = encoder.modality
    feature = embedding_feature(m)
    return ChunkedTeacherCache.get_or_build_from(
        Path(root), lambda chunk: {feature: embed_rows(encoder, chunk)}, _raw_stream(stream),
        teacher_fp=encoder.fingerprint(), features=[feature], extra=_embedding_extra(m), logits=False,
        batch_size=batch_size, progress=progress,
    )


def open_streamed_embedding_store(root: str | Path, encoder: PretrainedEncoder,
                                  stream: ShardStream) -> ChunkedTeacherCache | None:
    """The store :func:`streamed_embedding_store` would open, or None when it was never built (local:
    no collective call, nothing computed)."""
    m = encoder.modality
    key = chunked_key(encoder.fingerprint(), _raw_stream(stream), [embedding_feature(m)],
                      extra=_embedding_extra(m), logits=False)
    return ChunkedTeacherCache.open(Path(root), key)


class SplitStore:
    """Several embedding stores of one encoder read as one, by id (each id in one of them).

    A streamed run (``data.stream``) keeps the val/test embeddings in an in-memory-built
    :class:`TeacherCache` and the train split's in a :class:`ChunkedTeacherCache`; this joins them
    so :func:`~mmdistill.teachers.frozen.teacher_samples` and ``forward_raw`` see one store.

    Attributes:
        parts: the stores (``sample_id in split_store`` asks each of them).
    """

    def __init__(self, parts: Sequence[TeacherCache | ChunkedTeacherCache]) -> None:
        if not parts:
            raise ValueError("SplitStore needs at least one store")
        self.parts = list(parts)
        self.directory = self.parts[-1].directory

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __contains__(self, sample_id: object) -> bool:
        return any(sample_id in p for p in self.parts)

    def lookup(self, ids: Sequence[str]) -> dict[str, torch.Tensor]:
        """Every store's outputs for ``ids``, in the order given (``[len(ids), D]`` per name).

        Raises:
            CacheMissError: an id is in none of the stores.
        """
        from mmdistill.distill.cache import CacheMissError

        groups: dict[int, list[int]] = {}
        for pos, sid in enumerate(ids):
            part = next((k for k, p in enumerate(self.parts) if sid in p), None)
            if part is None:
                raise CacheMissError(f"sample id {sid!r} is in none of the embedding stores "
                                     f"({', '.join(str(p.directory) for p in self.parts)})")
            groups.setdefault(part, []).append(pos)
        out: dict[str, torch.Tensor] = {}
        for part, positions in groups.items():
            got = self.parts[part].lookup([ids[i] for i in positions])
            for name, t in got.items():
                if name not in out:
                    out[name] = torch.empty(len(ids), *t.shape[1:], dtype=t.dtype)
                out[name][positions] = t
        return out


def streamed_teacher_cache(root: str | Path, teacher: Teacher, stream: ShardStream, *,
                           features: Sequence[str] = (), batch_size: int = 64,
                           progress: bool = True) -> ChunkedTeacherCache:
    """:func:`teacher_cache` over a streamed split (``data.stream``): one chunked pass over its raw rows.

    ``teacher.forward_raw`` reads the split's raw records in packing order (a copy of ``stream``
    without its transform: the teacher's own preprocessing), ``batch_size`` at a time, and the
    outputs are written chunk by chunk by :meth:`ChunkedTeacherCache.get_or_build_from`
    (checksummed, resumable, rank 0 builds). Memory: one chunk of outputs and one row group. Keyed by
    :meth:`Teacher.fingerprint` and the shards' checksums; looked up by sample id like the others.
    """
    return ChunkedTeacherCache.get_or_build_from(
        Path(root), teacher.forward_raw, _raw_stream(stream), teacher_fp=teacher.fingerprint(),
        features=features, extra={"raw_records": True, "modalities": list(teacher.modalities)},
        batch_size=batch_size, progress=progress,
    )


def teacher_cache(root: str | Path, teacher: Teacher, records: RawBatch, *, features: Sequence[str] = (),
                  batch_size: int = 64, progress: bool = True, dtype: str = "float32") -> TeacherCache:
    """Open or build ``teacher``'s logits and ``features`` over raw ``records`` (one forward per record).

    Use it where :meth:`TeacherCache.get_or_build` is used for mmdistill teachers (the distill
    recipe's ``attach_teacher_caches``), with the raw records of the same split: the strategy looks
    rows up by sample id, so the cache needs no knowledge of the student's preprocessing.
    """
    return TeacherCache.get_or_build_from(
        Path(root), teacher.forward_raw, records, ids=[r.id for r in records],
        teacher_fp=teacher.fingerprint(),
        data_fp=raw_fingerprint(records, modalities=teacher.modalities), features=features,
        batch_size=batch_size, progress=progress, dtype=dtype,
    )
