"""Parameter counts, sizes on disk and latency measurement (with a fake clock: no timing asserts)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from mmdistill.evaluation import efficiency
from mmdistill.evaluation.efficiency import bytes_on_disk, count_parameters, measure_latency, model_latency
from mmdistill.models.outputs import ModelOutput


def test_count_parameters() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    assert count_parameters(net) == 3 * 4 + 4 + 4 * 2 + 2
    net[0].requires_grad_(False)
    assert count_parameters(net, trainable_only=True) == 10
    shared = nn.Linear(2, 2)
    assert count_parameters(nn.Sequential(shared, shared)) == 6  # shared weights counted once


def test_bytes_on_disk_file_and_directory(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"x" * 10)
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "deeper" / "b.bin").write_bytes(b"y" * 7)
    assert bytes_on_disk(tmp_path / "a.bin") == 10
    assert bytes_on_disk(tmp_path) == 17
    with pytest.raises(FileNotFoundError, match="missing"):
        bytes_on_disk(tmp_path / "missing")


def test_measure_latency_excludes_warmup(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = {"ns": 0, "calls": 0}
    monkeypatch.setattr(efficiency.time, "perf_counter_ns", lambda: clock["ns"])

    def fn() -> None:  # call k (1-based) takes k ms on the fake clock
        clock["calls"] += 1
        clock["ns"] += clock["calls"] * 1_000_000

    stats = measure_latency(fn, warmup=3, repeats=5, rounds=2)
    assert clock["calls"] == 13
    # Timed calls are 4..13 ms: median 8.5, mean 8.5, p95 (linear) = 12.55, min 4.
    assert stats["n"] == 10 and stats["rounds"] == 2
    assert stats["median_ms"] == pytest.approx(8.5) and stats["mean_ms"] == pytest.approx(8.5)
    assert stats["p95_ms"] == pytest.approx(12.55) and stats["min_ms"] == pytest.approx(4.0)
    assert stats["round_median_ms"] == pytest.approx([6.0, 11.0])
    with pytest.raises(ValueError, match="repeats >= 1"):
        measure_latency(fn, repeats=0)


class Probe(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)
        self.seen: list[tuple[int, bool, bool, int]] = []

    def forward(self, batch: dict) -> ModelOutput:
        self.seen.append((batch["image"].shape[0], self.training, torch.is_inference_mode_enabled(),
                          torch.get_num_threads()))
        return ModelOutput(logits=self.lin(batch["image"]))


def test_model_latency_fixes_threads_mode_and_restores_them() -> None:
    model = Probe().train()
    old_threads = torch.get_num_threads()
    made: list[int] = []

    def example(bs: int) -> dict:
        made.append(bs)
        return {"image": torch.randn(bs, 4), "label": torch.zeros(bs, dtype=torch.long)}

    res = model_latency(model, example, batch_sizes=(1, 3), threads=1, warmup=2, repeats=4)
    assert list(res) == ["b1", "b3"] and made == [1, 3]  # one batch per size, built before timing
    assert res["b3"]["batch_size"] == 3 and res["b3"]["threads"] == 1 and res["b3"]["n"] == 4
    assert res["b1"]["samples_per_s"] == pytest.approx(1e3 / res["b1"]["median_ms"])
    assert len(model.seen) == 2 * (2 + 4)
    assert all(not training and inference and threads == 1 for _, training, inference, threads in model.seen)
    assert model.training and torch.get_num_threads() == old_threads
