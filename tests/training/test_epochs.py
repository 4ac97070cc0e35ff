"""StreamBatches: equal batch counts per DDP rank, the ragged-tail rule, per-epoch order from seed + epoch."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from _helpers import write_manifest
from mmdistill.data.records import RawSample
from mmdistill.data.shard_stream import ShardStream
from mmdistill.data.shards import read_column, read_split
from mmdistill.training.epochs import StreamBatches

pytest.importorskip("pyarrow")
from mmdistill.data.shards_pack import pack_manifest  # noqa: E402


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes × 7 rows: 15 train rows (odd, so 2 ranks hold 7 and 8), 3 rows/shard, 2 rows/group."""
    root = tmp_path_factory.mktemp("epochs")
    manifest = write_manifest(root / "ds", classes=("a", "b", "c"), n_per_class=7)
    pack_manifest(manifest, root / "out", rows_per_shard=3, row_group_rows=2, progress=False)
    return root / "out"


def _sample(raw: RawSample) -> dict:  # the smallest preprocessed sample collate accepts
    return {"id": raw.id, "label": raw.label}


def _stream(folder: Path, **kw: object) -> ShardStream:
    return ShardStream(folder, "train", transform=_sample, **kw)  # type: ignore[arg-type]


def _ids(batches: StreamBatches) -> list[list[str]]:
    return [list(b["id"]) for b in batches]


@pytest.mark.parametrize(("world", "batch"), [(1, 4), (2, 2), (2, 7), (3, 5), (4, 3)])
def test_every_rank_runs_the_same_number_of_batches(packed: Path, world: int, batch: int) -> None:
    runs = [StreamBatches(_stream(packed, rank=r, world_size=world, seed=3), batch)
            for r in range(world)]
    for b in runs:
        b.set_epoch(2)
    got = [_ids(b) for b in runs]
    steps = math.ceil((15 // world) / batch)
    assert [len(g) for g in got] == [len(b) for b in runs] == [steps] * world  # DDP all-reduce never hangs
    assert all(len(x) <= batch for g in got for x in g)
    seen = [i for g in got for x in g for i in x]
    assert len(seen) == len(set(seen))  # no row twice
    # The tail rule: rows past steps * batch are dropped, at most one per rank, and only then.
    dropped = 15 - len(seen)
    held = [15 * (r + 1) // world - 15 * r // world for r in range(world)]
    assert dropped == sum(max(0, h - steps * batch) for h in held)
    assert dropped <= world and (world > 1 or dropped == 0)


def test_order_depends_only_on_seed_and_epoch(packed: Path) -> None:
    """What makes resume deterministic: epoch e's batches do not depend on the epochs iterated before."""
    a = StreamBatches(_stream(packed, seed=5), 4)
    a.set_epoch(1)
    first = _ids(a)
    a.set_epoch(2)
    second = _ids(a)
    fresh = StreamBatches(_stream(packed, seed=5), 4)
    fresh.set_epoch(2)  # a resumed run starts straight at epoch 2
    assert _ids(fresh) == second != first
    assert sorted(i for b in first for i in b) == sorted(i for b in second for i in b)


def test_workers_do_not_change_the_batch_count(packed: Path) -> None:
    one = StreamBatches(_stream(packed, seed=1), 4)
    two = StreamBatches(_stream(packed, seed=1), 4, num_workers=2)
    assert len(_ids(two)) == len(_ids(one)) == len(one) == 4
    assert sorted(i for b in _ids(two) for i in b) == sorted(i for b in _ids(one) for i in b)


def test_read_column_reads_the_text_of_the_split_in_packing_order(packed: Path) -> None:
    assert read_column(packed, "train", "text") == [r.text for r in read_split(packed, "train")]


def _fit(stream_dir: Path, resume_dir: Path, *, resume: bool,
         interrupt_at: int | None = None) -> tuple[dict, int]:
    from mmdistill.data.preprocess import Preprocessor
    from mmdistill.data.transforms.image import ImageTransform
    from mmdistill.models.builders import build_model, model_spec
    from mmdistill.training.logging import MetricsLogger
    from mmdistill.training.loop import fit
    from mmdistill.training.steps import supervised_step

    pre = Preprocessor(image=ImageTransform(size=12, channels=1), modalities=["image"])
    torch.manual_seed(0)
    model = build_model(model_spec("tiny", modalities=["image"], num_classes=3, vocab_size=1))
    base, calls = supervised_step(), [0]

    def step(m, batch):  # type: ignore[no-untyped-def]
        calls[0] += 1
        if calls[0] == interrupt_at:
            raise KeyboardInterrupt("killed mid-epoch")
        return base(m, batch)

    torch.manual_seed(1)
    fit(model, StreamBatches(ShardStream(stream_dir, "train", transform=pre, seed=4, buffer_size=3), 4), None,
        step, epochs=3, lr=1e-2, weight_decay=0.0, warmup_steps=0.2, patience=None,
        logger=MetricsLogger(None, quiet=True), stage="student-kd", progress=False, resume_dir=resume_dir,
        resume=resume)
    return {k: v.clone() for k, v in model.state_dict().items()}, calls[0]


def test_resuming_a_streamed_fit_gives_the_uninterrupted_weights(packed: Path, tmp_path: Path) -> None:
    """The stream's order depends only on seed + epoch, the rest on the RNG state that resume restores."""
    straight, steps = _fit(packed, tmp_path / "a", resume=False)
    assert steps == 3 * 4  # ceil(15 / 4) batches per epoch
    with pytest.raises(KeyboardInterrupt):
        _fit(packed, tmp_path / "b", resume=False, interrupt_at=4 + 2)  # epoch 2 (4 steps/epoch), step 2
    resumed, steps = _fit(packed, tmp_path / "b", resume=True)
    assert steps == 2 * 4  # epochs 2 and 3 only: it resumed after epoch 1
    assert straight.keys() == resumed.keys()
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], rtol=0, atol=0, msg=k)
