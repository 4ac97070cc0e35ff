"""Parquet shards: packing, lossless round trip, streaming split across ranks × workers, checksums."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from torch.utils.data import DataLoader

from _helpers import write_manifest
from mmdistill.data.datasets.manifest import read_manifest
from mmdistill.data.loaders import make_stream_loader, set_loader_epoch
from mmdistill.data.shard_stream import ShardStream, plan_epoch
from mmdistill.data.shards import INDEX_FILE, iter_split, read_index, read_split
from mmdistill.errors import DataError
from mmdistill.io_atomic import file_sha256

pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

from mmdistill.data.shards_pack import pack_manifest  # noqa: E402


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 3-class manifest (10 rows per class: 24 train, 3 val, 3 test) packed 5 rows/shard, 2 rows/group."""
    root = tmp_path_factory.mktemp("shards")
    manifest = write_manifest(root / "ds", classes=("a", "b", "c"), n_per_class=10)
    pack_manifest(manifest, root / "out", rows_per_shard=5, row_group_rows=2, progress=False)
    return manifest, root / "out"


def test_pack_writes_a_valid_index_with_matching_checksums(packed: tuple[Path, Path]) -> None:
    manifest, out = packed
    index = read_index(out)
    raw = json.loads((out / INDEX_FILE).read_text())
    assert raw["format"] == "mmdistill-shards" and raw["version"] == 1
    assert raw["source"]["sha256"] == file_sha256(manifest) and raw["source"]["rows_read"] == 30
    assert index.classes == ["a", "b", "c"]
    assert {s: index.rows(s) for s in ("train", "val", "test")} == {"train": 24, "val": 3, "test": 3}
    train = index.splits["train"]
    assert [e["file"] for e in train] == [f"train-{i:05d}.parquet" for i in range(5)]  # 5+5+5+5+4
    for entry in [e for es in index.splits.values() for e in es]:
        assert file_sha256(out / entry["file"]) == entry["sha256"]
        pf = pq.ParquetFile(out / entry["file"])
        assert [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)] == entry["row_groups"]
        assert sum(entry["row_groups"]) == entry["rows"] <= 5
    assert not list(out.glob(".tmp-*"))  # every temporary name was renamed


def test_round_trip_gives_back_every_row_identical(packed: tuple[Path, Path]) -> None:
    manifest, out = packed
    rows = {r["id"]: r for f in sorted(out.glob("*.parquet")) for r in pq.read_table(f).to_pylist()}
    source = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert set(rows) == {r["id"] for r in source}
    for s in source:
        r = rows[s["id"]]
        assert (r["text"], r["label"], r["split"]) == (s["text"], s["label"], s["split"])
        assert r["image"] == (manifest.parent / s["image"]).read_bytes()  # the file's bytes, not pixels
        if "audio" in s:
            assert r["audio"] == (manifest.parent / s["audio"]).read_bytes()
        else:
            assert r["audio"] is None
    # Decoded, the records equal the manifest reader's, in the same order per split.
    md = read_manifest(manifest, progress=False)
    for split in ("train", "val", "test"):
        want = [r for r in md.records if r.split == split]
        got = read_split(out, split)
        assert [r.id for r in got] == [r.id for r in want]
        for g, w in zip(got, want, strict=True):
            assert (g.label, g.text, g.sample_rate) == (w.label, w.text, w.sample_rate)
            np.testing.assert_array_equal(g.image, w.image)
            assert (g.audio is None) == (w.audio is None)
            if w.audio is not None:
                np.testing.assert_array_equal(g.audio, w.audio)


@pytest.mark.parametrize("rows", [1, 7, 24, 100])
def test_plan_covers_every_row_once_for_any_reader_count(rows: int) -> None:
    groups = [(g // 3, g % 3, n) for g, n in enumerate(np.random.default_rng(rows).integers(1, 6, rows))]
    total = sum(n for _, _, n in groups)
    for world, workers in ((1, 1), (2, 2), (3, 2), (4, 3)):
        seen: list[tuple[int, int, int]] = []
        sizes = []
        for rank in range(world):
            rank_rows = 0
            for w in range(workers):
                for s, g, a, b in plan_epoch(groups, seed=1, epoch=2, shuffle=True, rank=rank,
                                             world_size=world, worker=w, num_workers=workers):
                    seen += [(s, g, i) for i in range(a, b)]
                    rank_rows += b - a
            sizes.append(rank_rows)
        assert len(seen) == len(set(seen)) == total  # no duplicates, no gaps
        assert max(sizes) - min(sizes) <= 1  # ranks get equal shares, to one row


def _ids(batch: list) -> list[str]:
    return [r.id for r in batch]


def _epoch_ids(out: Path, seed: int, epoch: int) -> list[list[str]]:
    """Per rank of a 2-rank world, the ids its 2 DataLoader workers stream in ``epoch``."""
    per_rank = []
    for rank in range(2):
        ds = ShardStream(out, "train", seed=seed, buffer_size=4, rank=rank, world_size=2)
        ds.set_epoch(epoch)
        loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=_ids)
        per_rank.append([i for batch in loader for i in batch])
    return per_rank


def test_stream_over_two_ranks_and_two_workers_reads_each_row_once(packed: tuple[Path, Path]) -> None:
    manifest, out = packed
    train = {r.id for r in read_split(out, "train")}
    e0 = _epoch_ids(out, seed=0, epoch=0)
    for per_rank in (e0, _epoch_ids(out, seed=0, epoch=1)):
        ids = per_rank[0] + per_rank[1]
        assert len(ids) == len(set(ids)) == len(train) and set(ids) == train
        assert len(per_rank[0]) == len(per_rank[1]) == 12
    assert [len(ShardStream(out, "train", rank=r, world_size=5)) for r in range(5)] == [4, 5, 5, 5, 5]
    assert _epoch_ids(out, seed=0, epoch=0) == e0  # same seed and epoch: same order
    assert _epoch_ids(out, seed=0, epoch=1) != e0  # another epoch reshuffles
    assert _epoch_ids(out, seed=5, epoch=0) != e0  # another seed too


def test_stream_loader_collates_and_follows_the_epoch(packed: tuple[Path, Path]) -> None:
    from mmdistill.data.preprocess import Preprocessor
    from mmdistill.data.transforms.image import ImageTransform

    _, out = packed
    pre = Preprocessor(image=ImageTransform(size=8))
    ds = ShardStream(out, "train", transform=pre, seed=0, buffer_size=4)
    loader = make_stream_loader(ds, 5, num_workers=2)
    orders = []
    for epoch in (0, 1):
        set_loader_epoch(loader, epoch)
        batches = list(loader)
        assert batches[0]["image"].shape[1:] == (1, 8, 8)
        orders.append([i for b in batches for i in b["id"]])
    assert sorted(orders[0]) == sorted(orders[1]) and len(orders[0]) == 24 and orders[0] != orders[1]


def test_stream_memory_is_bounded_by_the_buffer_and_one_row_group(packed: tuple[Path, Path]) -> None:
    _, out = packed
    ds = ShardStream(out, "train", seed=0, buffer_size=3)
    ids = [r.id for r in ds]
    assert len(ids) == len(set(ids)) == 24
    assert ds.peak_buffer == 3  # the buffer filled up, and never beyond its capacity
    assert ds.peak_held <= 3 + 2 - 1  # plus at most the rest of one 2-row group
    plain = ShardStream(out, "train", shuffle=False)
    assert [r.id for r in plain] == [r.id for r in read_split(out, "train")]  # packing order
    assert plain.peak_buffer == 0


def test_head_is_the_first_rows_in_packing_order_whatever_epoch_rank_or_shuffle(
    packed: tuple[Path, Path], tmp_path: Path
) -> None:
    manifest, out = packed
    first = [r.id for r in read_split(out, "train")]
    assert [r.id for r in iter_split(out, "train")] == first
    for rank in (0, 1):
        ds = ShardStream(out, "train", seed=3, rank=rank, world_size=2, transform=lambda r: r.id)
        ds.set_epoch(5)
        assert ds.head(7) == first[:7]  # transformed, not shuffled, not this rank's slice
    assert [r.id for r in ShardStream(out, "train").head(100)] == first  # the whole split when shorter
    assert ShardStream(out, "train").head(0) == []
    with pytest.raises(ValueError, match="n must be >= 0"):
        ShardStream(out, "train").head(-1)
    # Only the shards holding the first rows are read (and checked): a damaged second shard is not reached.
    copy = tmp_path / "out"
    pack_manifest(manifest, copy, rows_per_shard=5, row_group_rows=2, progress=False)
    shard = copy / "train-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:-8] + b"damaged!")
    assert [r.id for r in ShardStream(copy, "train").head(5)] == first[:5]
    with pytest.raises(DataError, match="checksum mismatch"):
        ShardStream(copy, "train").head(6)


def test_a_damaged_shard_is_refused_naming_it_and_the_fix(packed: tuple[Path, Path], tmp_path: Path) -> None:
    manifest, _ = packed
    out = tmp_path / "out"
    pack_manifest(manifest, out, rows_per_shard=5, row_group_rows=2, progress=False)
    shard = out / "train-00001.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    for read in (lambda: read_split(out, "train"), lambda: list(ShardStream(out, "train", shuffle=False))):
        with pytest.raises(DataError, match="checksum mismatch") as err:
            read()
        assert "train-00001.parquet" in str(err.value) and "mmdistill data pack" in str(err.value)
    assert len(read_split(out, "val")) == 3  # the other splits are unharmed


def test_pack_refuses_a_used_folder_and_bad_rows(packed: tuple[Path, Path], tmp_path: Path) -> None:
    manifest, out = packed
    with pytest.raises(DataError, match="--overwrite"):
        pack_manifest(manifest, out, progress=False)
    bad = manifest.parent / "bad.jsonl"
    lines = manifest.read_text().splitlines()
    bad.write_text("\n".join([*lines, json.dumps({"id": "x", "image": "nope.png", "label": "a",
                                                  "split": "train"})]) + "\n")
    with pytest.raises(DataError, match="nope.png") as err:
        pack_manifest(bad, tmp_path / "o1", progress=False)
    assert "row 31" in str(err.value)
    index = pack_manifest(bad, tmp_path / "o2", on_error="skip", progress=False)
    assert [s["row"] for s in index.skipped] == [31] and index.rows("train") == 24


def test_an_unfinished_pack_is_refused(tmp_path: Path) -> None:
    (tmp_path / "train-00000.parquet").write_bytes(b"x")
    with pytest.raises(DataError, match="index.json"):
        read_index(tmp_path)


def test_overwrite_replaces_an_earlier_pack(packed: tuple[Path, Path], tmp_path: Path) -> None:
    manifest, _ = packed
    out = tmp_path / "out"
    pack_manifest(manifest, out, rows_per_shard=5, progress=False)
    pack_manifest(manifest, out, rows_per_shard=100, overwrite=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [INDEX_FILE, "test-00000.parquet", "train-00000.parquet",
                                                     "val-00000.parquet"]
    assert read_index(out).rows("train") == 24


def test_missing_pyarrow_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from mmdistill.data.shards import pyarrow_parquet
    from mmdistill.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(MissingDependencyError, match=r"mmdistill\[shards\]"):
        pyarrow_parquet()


def test_derive_keeps_every_option_but_the_changed_ones(packed: tuple[Path, Path]) -> None:
    _, out = packed
    base = ShardStream(out, "train", seed=3, buffer_size=4, rank=1, world_size=2, tasks=(),
                       target_sample_rate=8000, verify=False, transform=lambda r: r.id)
    chunk = base.derive(shuffle=False, rank=0, world_size=3)
    assert chunk.index is base.index and chunk.split == "train" and chunk.transform is base.transform
    assert (chunk.seed, chunk.buffer_size, chunk.verify, chunk.decode.rate) == (3, 4, False, 8000)
    assert (chunk.shuffle, chunk.rank, chunk.world_size) == (False, 0, 3)
    assert (base.shuffle, base.rank, base.world_size) == (True, 1, 2)  # the original is unchanged
    # The derived stream reads exactly the slice such a stream would read.
    fresh = ShardStream(out, "train", shuffle=False, rank=0, world_size=3, transform=lambda r: r.id)
    assert list(chunk) == list(fresh)
