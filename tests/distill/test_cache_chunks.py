"""Chunked teacher cache of a streamed split: equals the teacher's outputs, resumes after an interruption."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from _helpers import write_manifest
from mmdistill.data.collate import collate
from mmdistill.data.preprocess import Preprocessor
from mmdistill.data.shard_stream import ShardStream
from mmdistill.data.shards import read_split
from mmdistill.data.transforms.image import ImageTransform
from mmdistill.distill import cache_chunks as CC
from mmdistill.distill.cache import CacheMissError
from mmdistill.distill.cache_chunks import ChunkedTeacherCache
from mmdistill.models.builders import build_model, model_spec
from mmdistill.models.multimodal import MultimodalModel

pytest.importorskip("pyarrow")
from mmdistill.data.shards_pack import pack_manifest  # noqa: E402

PRE = Preprocessor(image=ImageTransform(size=12, channels=1), modalities=["image"])


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 classes × 9 rows: 14 train rows, 4 rows/shard, 2 rows/group."""
    root = tmp_path_factory.mktemp("chunks")
    manifest = write_manifest(root / "ds", n_per_class=9)
    pack_manifest(manifest, root / "out", rows_per_shard=4, row_group_rows=2, progress=False)
    return root / "out"


def _teacher() -> MultimodalModel:
    torch.manual_seed(0)
    return build_model(model_spec("tiny", modalities=["image"], num_classes=2, vocab_size=1)).eval()


def _build(root: Path, packed: Path, teacher: MultimodalModel, **kw: object) -> ChunkedTeacherCache:
    stream = ShardStream(packed, "train", transform=PRE, seed=0)  # shuffled: the cache must not care
    return ChunkedTeacherCache.get_or_build(root, teacher, stream, features=["fused"], batch_size=3,
                                            chunk_rows=4, progress=False, **kw)  # type: ignore[arg-type]


def test_lookup_by_id_equals_the_teacher_on_every_row(tmp_path: Path, packed: Path) -> None:
    teacher = _teacher()
    cache = _build(tmp_path, packed, teacher)
    samples = [PRE(r) for r in read_split(packed, "train")]
    assert len(cache) == 14 and len(cache.meta["chunks"]) == 4  # ceil(14 / 4), each <= 4 rows
    assert [c["rows"] for c in cache.meta["chunks"]] == [3, 4, 3, 4]
    ids = [s["id"] for s in samples][::-1]  # any order: lookups go by id
    with torch.no_grad():
        out = teacher(collate(samples[::-1]))
    got = cache.lookup(ids)
    torch.testing.assert_close(got["logits"], out.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["fused"], out.features["fused"], rtol=1e-5, atol=1e-5)
    with pytest.raises(CacheMissError, match="not in teacher cache"):
        cache.lookup(["nope"])
    again = _build(tmp_path, packed, teacher)  # complete: opened, not rebuilt
    assert again.key == cache.key and again.meta["created"] == cache.meta["created"]


def _content(cache: ChunkedTeacherCache) -> dict[str, np.ndarray]:
    ids = sorted(cache._row)
    return {"ids": np.array(ids), **{k: v.numpy() for k, v in cache.lookup(ids).items()},
            "chunks": np.array(json.dumps(cache.meta["chunks"], sort_keys=True))}


def test_an_interrupted_build_resumes_at_the_next_chunk(tmp_path: Path, packed: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    teacher = _teacher()
    reference = _content(_build(tmp_path / "straight", packed, teacher))

    real, written = CC.write_chunk, []

    def crash_after_two(*args: object, **kw: object) -> object:
        if len(written) == 2:
            raise KeyboardInterrupt("killed while writing chunk 2")
        written.append(args[1])
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(CC, "write_chunk", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        _build(tmp_path / "resumed", packed, teacher)
    (directory,) = (tmp_path / "resumed").iterdir()
    assert not (directory / CC.META_FILE).exists()  # not complete: never opened as a cache

    monkeypatch.setattr(CC, "write_chunk", lambda *a, **k: written.append(a[1]) or real(*a, **k))
    resumed = _build(tmp_path / "resumed", packed, teacher)
    assert written == [0, 1, 2, 3]  # chunks 0 and 1 were kept, writing went on at chunk 2
    got = _content(resumed)
    assert got.keys() == reference.keys()
    for k in reference:
        np.testing.assert_array_equal(got[k], reference[k])


def test_building_finishing_or_finding_the_cache_leaves_torchs_global_rng_as_it_was(
    tmp_path: Path, packed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each chunk's DataLoader draws from torch's global RNG; the build must not show it to the
    caller, or a resumed run (cache found, or finished part-way) trains on another random stream
    than the uninterrupted run (which built it)."""
    teacher = _teacher()

    def unchanged(build: Callable[[], object]) -> bool:
        torch.manual_seed(123)
        before = torch.get_rng_state()
        build()
        return torch.equal(torch.get_rng_state(), before)

    assert unchanged(lambda: _build(tmp_path / "a", packed, teacher))  # built
    assert unchanged(lambda: _build(tmp_path / "a", packed, teacher))  # found
    real = CC.write_chunk
    monkeypatch.setattr(CC, "write_chunk", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt())
                        if a[1] == 2 else real(*a, **k))
    with pytest.raises(KeyboardInterrupt):
        _build(tmp_path / "b", packed, teacher)
    monkeypatch.setattr(CC, "write_chunk", real)
    assert unchanged(lambda: _build(tmp_path / "b", packed, teacher))  # finished from chunk 2


def test_a_damaged_chunk_of_an_interrupted_build_is_rewritten(tmp_path: Path, packed: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    teacher = _teacher()
    real, written = CC.write_chunk, []
    monkeypatch.setattr(CC, "write_chunk", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full"))
                        if len(written) == 3 else (written.append(a[1]) or real(*a, **k)))
    with pytest.raises(OSError):
        _build(tmp_path, packed, teacher)
    (directory,) = tmp_path.iterdir()
    with (directory / "chunk-00001" / "logits.npy").open("r+b") as f:
        f.seek(-4, 2)
        f.write(b"\0\0\0\1")
    written.clear()
    monkeypatch.setattr(CC, "write_chunk", lambda *a, **k: written.append(a[1]) or real(*a, **k))
    cache = _build(tmp_path, packed, teacher)
    assert written == [1, 2, 3]  # chunk 0 verified and kept; 1 failed its sha256: rewritten with the rest
    assert len(cache) == 14


def _raw_teacher(records: list) -> dict[str, torch.Tensor]:
    """A stand-in for ``Teacher.forward_raw``: outputs from the raw records themselves (no nn.Module)."""
    mean = torch.tensor([float(np.asarray(r.image, dtype=np.float32).mean()) for r in records])
    size = torch.tensor([[len(r.text or "")] for r in records], dtype=torch.float32)
    return {"logits": torch.stack([mean, -mean], 1), "size": size}


def _build_from(root: Path, fn: Callable[[list], Any], stream: ShardStream, fp: str) -> ChunkedTeacherCache:
    return ChunkedTeacherCache.get_or_build_from(root, fn, stream, teacher_fp=fp, features=["size"],
                                                 batch_size=3, chunk_rows=4, progress=False)


def test_a_function_over_raw_records_is_cached_in_chunks_by_id(tmp_path: Path, packed: Path) -> None:
    stream = ShardStream(packed, "train", seed=0)  # no transform: raw records, as forward_raw reads them
    calls: list[int] = []

    def fn(records: list) -> dict[str, torch.Tensor]:
        calls.append(len(records))
        return _raw_teacher(records)

    cache = _build_from(tmp_path, fn, stream, "raw-v1")
    records = read_split(packed, "train")
    assert len(cache) == 14 and max(calls) <= 3 and sum(calls) == 14
    got = cache.lookup([r.id for r in records][::-1])
    want = _raw_teacher(records[::-1])
    torch.testing.assert_close(got["logits"], want["logits"])
    torch.testing.assert_close(got["size"], want["size"])
    again = _build_from(tmp_path, fn, stream, "raw-v1")
    assert again.key == cache.key and sum(calls) == 14  # opened, not recomputed
    other = _build_from(tmp_path, fn, stream, "raw-v2")
    assert other.key != cache.key  # another teacher fingerprint: another cache
    with pytest.raises(CC.ConfigError, match="rows of 'logits'"):
        ChunkedTeacherCache.get_or_build_from(tmp_path / "bad", lambda rs: torch.zeros(1, 2), stream,
                                              teacher_fp="bad", batch_size=3, chunk_rows=4, progress=False)
