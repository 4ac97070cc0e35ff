"""Embedding stores of a streamed train split (``data.stream``): one chunked pass, joined with val/test."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_frozen_encoders import fake_plan

from _helpers import write_manifest
from mmdistill.data.shard_stream import ShardStream
from mmdistill.data.shards import read_split
from mmdistill.distill.cache import CacheMissError
from mmdistill.teachers import embedding_store
from mmdistill.teachers.frozen import TeacherSampleTransform
from mmdistill.teachers.stores import (
    SplitStore,
    embed_rows,
    open_streamed_embedding_store,
    streamed_embedding_store,
)

pytest.importorskip("pyarrow")
from mmdistill.data.shards_pack import pack_manifest  # noqa: E402


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 classes × 6 rows: 8 train, 2 val, 2 test; 3 rows/shard, 2 rows/group."""
    root = tmp_path_factory.mktemp("streamed-stores")
    manifest = write_manifest(root / "ds")
    pack_manifest(manifest, root / "out", rows_per_shard=3, row_group_rows=2, progress=False)
    return root / "out"


def test_streamed_store_embeds_each_train_row_once_and_joins_the_val_test_store(
    tmp_path: Path, packed: Path
) -> None:
    plan = fake_plan()
    enc = plan.encoders["text"]
    stream = ShardStream(packed, "train", transform=lambda r: {"id": r.id}, seed=1)  # transform: ignored
    train = read_split(packed, "train")
    assert open_streamed_embedding_store(tmp_path, enc, stream) is None  # never built
    chunked = streamed_embedding_store(tmp_path, enc, stream, batch_size=3, progress=False)
    assert len(chunked) == 8 and enc.calls == 8 and chunked.meta["logits"] is False
    again = open_streamed_embedding_store(tmp_path, enc, stream)
    assert again is not None and again.key == chunked.key and enc.calls == 8  # opened, not recomputed

    held_records = read_split(packed, "val") + read_split(packed, "test")
    held = embedding_store(tmp_path, enc, held_records, batch_size=3, progress=False)
    joined = SplitStore([held, chunked])
    assert len(joined) == 12 and train[0].id in joined and held_records[0].id in joined
    mixed = [held_records[1], train[5], held_records[0], train[0]]
    torch.testing.assert_close(joined.lookup([r.id for r in mixed])["text.embedding"], embed_rows(enc, mixed))
    with pytest.raises(CacheMissError, match="none of the embedding stores"):
        joined.lookup(["nope"])

    # The head's streamed samples read the stored embedding by id: the encoder is not run again.
    calls = enc.calls
    sample = TeacherSampleTransform(plan, {"text": joined})(train[3])
    assert enc.calls == calls and sample["id"] == train[3].id and "image" in sample
    torch.testing.assert_close(sample["text"], embed_rows(enc, [train[3]])[0])
