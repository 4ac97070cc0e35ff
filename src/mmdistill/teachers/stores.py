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
  by sample id exactly like the cache of an mmdistill teacher.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from mmdistill.distill.cache import TeacherCache
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
