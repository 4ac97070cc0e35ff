"""Size and speed: parameter counts, bytes on disk and wall-clock latency.

Latency is measured the way ENVIRONMENT.md asks for on a noisy VM: warm-up calls excluded,
``perf_counter_ns`` per call, median and p95 reported (never the mean alone). Every function takes
plain arguments and returns plain JSON-ready dicts, so a child process (one per runtime, as the
later per-runtime isolation needs) can call it and print the result.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmdistill.data.batch import Batch, move_batch


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def bytes_on_disk(path: Path) -> int:
    """Size of a file, or of every file below a directory (recursive), in bytes.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    raise FileNotFoundError(f"cannot measure the size of {path}: no such file or directory")


def _summary(times_ns: Sequence[int]) -> dict[str, float]:
    ms = np.asarray(times_ns, dtype=np.float64) / 1e6
    return {
        "median_ms": float(np.median(ms)),
        "p95_ms": float(np.percentile(ms, 95)),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
    }


def measure_latency(
    fn: Callable[[], Any], *, warmup: int = 10, repeats: int = 50, rounds: int = 1
) -> dict[str, Any]:
    """Time ``fn()``: ``warmup`` untimed calls, then ``rounds`` x ``repeats`` timed calls.

    Args:
        fn: the work to time; must block until done (synchronize CUDA inside it).
        warmup: untimed calls first (allocator, caches, lazy init).
        repeats: timed calls per round.
        rounds: rounds of ``repeats``; each round's median is reported too, to show drift.

    Returns:
        ``median_ms``, ``p95_ms``, ``mean_ms``, ``min_ms`` over all ``n = rounds * repeats`` timed
        calls, plus ``n``, ``rounds`` and ``round_median_ms``.
    """
    if repeats < 1 or rounds < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1, rounds >= 1, warmup >= 0; got {repeats}, {rounds}, {warmup}")
    for _ in range(warmup):
        fn()
    times: list[int] = []
    round_medians: list[float] = []
    for _ in range(rounds):
        this_round = []
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            fn()
            this_round.append(time.perf_counter_ns() - t0)
        round_medians.append(float(np.median(this_round)) / 1e6)
        times.extend(this_round)
    return {**_summary(times), "n": len(times), "rounds": rounds, "round_median_ms": round_medians}


def model_latency(
    model: nn.Module,
    example_batch_fn: Callable[[int], Batch],
    *,
    batch_sizes: Sequence[int] = (1, 64),
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 50,
) -> dict[str, dict[str, Any]]:
    """Latency of ``model(batch)`` per batch size, in eval mode under ``torch.inference_mode``.

    The torch thread count is fixed to ``threads`` during the measurement and restored afterwards,
    as is the model's train/eval mode. The batch is built (and moved to the model's device) before
    timing, so only the forward pass is measured.

    Args:
        model: any module taking a batch dict.
        example_batch_fn: ``batch_size -> batch`` (e.g. collate of test samples).
        batch_sizes: sizes to measure.
        threads: torch intra-op threads while timing.

    Returns:
        ``{"b1": {median_ms, p95_ms, mean_ms, min_ms, n, rounds, round_median_ms, batch_size,
        threads, samples_per_s}, "b64": {...}}``.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    old_threads, was_training = torch.get_num_threads(), model.training
    results: dict[str, dict[str, Any]] = {}
    torch.set_num_threads(threads)
    model.eval()
    try:
        with torch.inference_mode():
            for bs in batch_sizes:
                batch = move_batch(example_batch_fn(int(bs)), device)

                def run(batch: Batch = batch) -> None:
                    model(batch)
                    sync()

                stats = measure_latency(run, warmup=warmup, repeats=repeats)
                per_s = bs / (stats["median_ms"] / 1e3)
                stats.update(batch_size=int(bs), threads=threads, samples_per_s=per_s)
                results[f"b{bs}"] = stats
    finally:
        torch.set_num_threads(old_threads)
        model.train(was_training)
    return results
