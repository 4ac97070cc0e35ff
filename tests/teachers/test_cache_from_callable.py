"""TeacherCache.get_or_build_from: the cache format built from any callable over raw records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmdistill.data.records import RawSample
from mmdistill.distill.cache import TeacherCache, cache_key
from mmdistill.errors import ConfigError, DataError


def outputs(chunk: list[RawSample]) -> dict[str, torch.Tensor]:
    """A deterministic 'teacher' of raw records: logits from the label, a feature from the text."""
    label = torch.tensor([r.label for r in chunk])
    feat = torch.tensor([[len(r.text or ""), r.label * 2.0] for r in chunk])
    return {"logits": torch.nn.functional.one_hot(label, 4).float(), "fused": feat}


def build(root: Path, records: list[RawSample], calls: list[int], **kw) -> TeacherCache:
    def fn(chunk: list[RawSample]) -> dict[str, torch.Tensor]:
        calls.append(len(chunk))
        return outputs(chunk)

    args = {"ids": [r.id for r in records], "teacher_fp": "t1", "data_fp": "d1", "features": ["fused"],
            "batch_size": 5, "progress": False, **kw}
    return TeacherCache.get_or_build_from(root, fn, records, **args)


def test_lookup_returns_what_the_callable_computed_and_a_rebuild_is_a_hit(
        tmp_path: Path, records: list[RawSample]) -> None:
    calls: list[int] = []
    cache = build(tmp_path, records, calls)
    assert calls == [5, 5, 2]  # consecutive chunks of batch_size
    ids = ["r007", "r000", "r011"]
    got = cache.lookup(ids)
    want = outputs([next(r for r in records if r.id == i) for i in ids])
    assert torch.equal(got["logits"], want["logits"]) and torch.equal(got["fused"], want["fused"])
    again = build(tmp_path, records, calls)
    assert calls == [5, 5, 2] and again.directory == cache.directory
    other = build(tmp_path, records, calls, teacher_fp="t2")  # another teacher: another directory
    assert other.directory != cache.directory and len(calls) == 6


def test_features_only_store_has_no_logits_and_reopens(tmp_path: Path, records: list[RawSample]) -> None:
    def fn(chunk: list[RawSample]) -> dict[str, torch.Tensor]:
        return {"text.embedding": outputs(chunk)["fused"]}

    store = TeacherCache.get_or_build_from(tmp_path, fn, records, ids=[r.id for r in records], teacher_fp="e",
                                           data_fp="d", features=["text.embedding"], logits=False,
                                           progress=False)
    assert not (store.directory / "logits.npy").exists()
    assert set(store.lookup(["r001"])) == {"text.embedding"} and store.dims == {"text.embedding": 2}
    assert json.loads((store.directory / "meta.json").read_text())["logits"] is False
    reopened = TeacherCache.open(tmp_path, store.key)
    assert reopened is not None and torch.equal(reopened.lookup(["r004"])["text.embedding"],
                                                 store.lookup(["r004"])["text.embedding"])
    assert cache_key("e", "d", ["text.embedding"]) != store.key  # logits=False is part of the key
    assert cache_key("e", "d", ["text.embedding"], logits=False) == store.key


def test_caches_written_before_logits_was_optional_still_open(
        tmp_path: Path, records: list[RawSample]) -> None:
    cache = build(tmp_path, records, [])
    meta_path = cache.directory / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["logits"]  # the meta.json of an older mmdistill
    meta_path.write_text(json.dumps(meta))
    old = TeacherCache.open(tmp_path, cache.key)
    assert old is not None and set(old.dims) == {"logits", "fused"}


def test_bad_calls_are_clear_errors(tmp_path: Path, records: list[RawSample]) -> None:
    with pytest.raises(DataError, match="11 ids for 12 items"):
        build(tmp_path, records, [], ids=[r.id for r in records[:-1]])
    with pytest.raises(ConfigError, match="at least one feature"):
        build(tmp_path, records, [], features=[], logits=False)
    with pytest.raises(ConfigError, match="not produced by the teacher.*did you mean 'fused'"):
        build(tmp_path, records, [], features=["fusd"])
    dup = [*records[:2], records[0]]
    with pytest.raises(DataError, match="'r000' appears more than once"):
        build(tmp_path, dup, [])

    def short(chunk: list[RawSample]) -> dict[str, torch.Tensor]:
        return {k: v[:-1] for k, v in outputs(chunk).items()}

    with pytest.raises(ConfigError, match="returned 9 rows for 12 samples"):
        TeacherCache.get_or_build_from(tmp_path, short, records, ids=[r.id for r in records], teacher_fp="x",
                                       data_fp="y", batch_size=4, progress=False)
    assert not list(tmp_path.glob(".tmp-*"))  # failed builds leave no temporary directory behind
