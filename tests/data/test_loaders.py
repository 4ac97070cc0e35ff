"""SampleDataset / make_loader: batching, seeded per-epoch shuffling, distributed fallback."""

from __future__ import annotations

import logging

import pytest
import torch

from mmdistill.data.loaders import SampleDataset, make_loader, set_loader_epoch


def _ds(n: int = 10) -> SampleDataset:
    return SampleDataset(
        [{"id": str(i), "label": i, "text": torch.tensor([i + 1] * (1 + i % 3))} for i in range(n)]
    )


def _order(loader) -> list[int]:
    return [int(x) for b in loader for x in b["label"]]


def test_unshuffled_batches_in_order() -> None:
    loader = make_loader(_ds(), 4, shuffle=False, seed=0)
    batches = list(loader)
    assert [len(b["id"]) for b in batches] == [4, 4, 2]
    assert _order(loader) == list(range(10))
    assert batches[0]["text"].shape == (4, 3)  # collate pads within the batch
    assert len(list(make_loader(_ds(), 4, shuffle=False, seed=0, drop_last=True))) == 2


def test_shuffle_depends_only_on_seed_and_epoch() -> None:
    a = make_loader(_ds(), 3, shuffle=True, seed=7)
    b = make_loader(_ds(), 3, shuffle=True, seed=7)
    first = _order(a)
    assert sorted(first) == list(range(10)) and first != list(range(10))
    assert _order(a) == first  # same epoch → same order
    set_loader_epoch(a, 1)
    second = _order(a)
    assert second != first and sorted(second) == list(range(10))
    set_loader_epoch(b, 1)  # a fresh loader (e.g. after resume) replays epoch 1 exactly
    assert _order(b) == second
    assert _order(make_loader(_ds(), 3, shuffle=True, seed=8)) != first


def test_distributed_without_process_group_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        loader = make_loader(_ds(), 5, shuffle=False, seed=0, distributed=True)
    assert "not initialized" in caplog.text
    assert _order(loader) == list(range(10))
    set_loader_epoch(loader, 3)  # no-op for unshuffled loaders
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(_ds(), 0, shuffle=False, seed=0)


def test_distributed_sampler_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed as dist
    from torch.utils.data import DistributedSampler

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 1)
    loader = make_loader(_ds(), 2, shuffle=True, seed=3, distributed=True)
    assert isinstance(loader.sampler, DistributedSampler)
    set_loader_epoch(loader, 4)
    assert loader.sampler.epoch == 4
    assert len(_order(loader)) == 5  # rank 1 of 2 sees half the samples
