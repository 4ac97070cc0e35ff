"""Latency per runtime, each in its own process, interleaved round by round.

Why a process per variant: a live ONNX Runtime session in the same process made PyTorch batch-1
latency 75x worse (ENVIRONMENT.md). Why interleaving: the VM is noisy (the same pass ranged
16.6-31 ms between runs), so every worker stays alive and, round by round and batch size by batch
size, each is asked in turn to time ``repeats`` calls; load drift then hits every variant alike.
The first worker of each round rotates so that no variant always runs first.

The children are :mod:`mmdistill.evaluation.latency_worker`; batches reach them as flat
safetensors files (the shared ONNX input names, see :func:`mmdistill.export.flat.save_flat_batch`).
This module imports neither torch nor onnxruntime. The comparisons of a compressed variant with
its parent (``flag_not_faster``, ``pick_faster``) live in :mod:`mmdistill.evaluation.latency_flags`
and are re-exported here.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from tqdm.auto import tqdm

from mmdistill.errors import DataError, MMDistillError
from mmdistill.evaluation.latency_flags import flag_not_faster, pick_faster

log = logging.getLogger(__name__)

RUNTIMES: tuple[str, ...] = ("torch", "onnxruntime")
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class LatencyWorkerError(MMDistillError):
    """A latency child process failed, crashed or timed out; names the variant and its stderr tail."""


@dataclass(frozen=True)
class LatencyVariant:
    """One model on one runtime.

    Attributes:
        name: label in the results (unique per runtime).
        runtime: ``"torch"`` (eager PyTorch) or ``"onnxruntime"`` (CPU execution provider).
        path: ``torch``: a checkpoint directory (``model.json`` + ``model.safetensors``);
            ``onnxruntime``: an ``.onnx`` file.
    """

    name: str
    runtime: str
    path: Path


def _worker_command() -> list[str]:
    """The child's command line (a function so tests can substitute a misbehaving child)."""
    return [sys.executable, "-m", "mmdistill.evaluation.latency_worker"]


class _Worker:
    """One child process: JSON lines in, JSON lines out, stderr to a temporary file."""

    def __init__(self, variant: LatencyVariant, threads: int) -> None:
        self.variant = variant
        env = {**os.environ, **{k: str(threads) for k in _THREAD_ENV}}
        src = str(Path(__file__).resolve().parents[2])  # the child imports the same mmdistill
        env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
        self.stderr: IO[bytes] = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            _worker_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
            env=env, text=True, bufsize=1,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def stderr_tail(self, lines: int = 20) -> str:
        self.stderr.seek(0)
        text = self.stderr.read().decode("utf-8", "replace").rstrip()
        return "\n".join(text.splitlines()[-lines:]) or "(empty)"

    def fail(self, what: str) -> LatencyWorkerError:
        v = self.variant
        if self.proc.poll() is None:  # hung or half-dead: no graceful quit
            self.proc.kill()
            self.proc.wait()
        return LatencyWorkerError(
            f"latency worker for variant '{v.name}' (runtime {v.runtime}, path {v.path}, "
            f"pid {self.proc.pid}) {what}\n--- child stderr, last lines ---\n{self.stderr_tail()}"
        )

    def ask(self, msg: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send ``msg`` and wait up to ``timeout_s`` for the reply."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the child is gone; the reader reports end of output below
        try:
            line = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            raise self.fail(f"timed out after {timeout_s:g} s waiting for a reply to {msg['cmd']!r}; "
                            "raise timeout_s for big models or fewer repeats") from None
        if line is None:
            try:
                code = self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
            raise self.fail(f"exited (code {code}) before replying to {msg['cmd']!r}")
        try:
            reply = json.loads(line)
        except json.JSONDecodeError:
            raise self.fail(f"wrote a line that is not protocol JSON: {line[:200]!r}") from None
        if not reply.get("ok"):
            raise self.fail(f"failed: {reply.get('error')}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=5)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def _check_args(variants: Sequence[LatencyVariant], batch_files: Mapping[int, Path], threads: int,
                warmup: int, repeats: int, rounds: int) -> None:
    if not variants:
        raise ValueError("measure_runtimes needs at least one LatencyVariant")
    keys = [(v.name, v.runtime) for v in variants]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ValueError(f"variant (name, runtime) pairs must be unique, got {dupes} more than once")
    bad = [v.name for v in variants if v.runtime not in RUNTIMES]
    if bad:
        raise ValueError(f"variants {bad}: runtime must be one of {list(RUNTIMES)}, got "
                         f"{[v.runtime for v in variants if v.runtime not in RUNTIMES]}")
    if not batch_files:
        raise ValueError("batch_files is empty: pass {batch_size: path written by save_flat_batch}")
    for bs, path in batch_files.items():
        if not Path(path).is_file():
            raise DataError(f"batch file for batch size {bs} not found; write it with save_flat_batch",
                            path=str(path))
    if threads < 1 or warmup < 0 or repeats < 1 or rounds < 1:
        raise ValueError(f"need threads >= 1, warmup >= 0, repeats >= 1, rounds >= 1; got {threads}, "
                         f"{warmup}, {repeats}, {rounds}")


def measure_runtimes(
    variants: list[LatencyVariant],
    batch_files: dict[int, Path],
    *,
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 50,
    rounds: int = 3,
    timeout_s: float = 300.0,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Time every variant at every batch size, each variant in its own, long-lived child process.

    All children start and warm up (``warmup`` untimed calls per batch size) before any timing.
    Then, for each of ``rounds`` rounds and each batch size, each child in turn (starting one later
    every round) makes one untimed call and times ``repeats`` calls. Threads are fixed in every
    child (``OMP/MKL/OPENBLAS_NUM_THREADS``; torch ``set_num_threads``, 1 inter-op thread; ORT
    ``intra_op_num_threads``, ``inter_op_num_threads = 1``, spinning off).

    Args:
        variants: the models to time.
        batch_files: batch size → flat safetensors batch (:func:`write_batch_files`).
        threads: intra-op threads per child.
        warmup: untimed calls per batch size at start-up.
        repeats: timed calls per round and batch size.
        rounds: interleaved rounds.
        timeout_s: longest wait for any one reply (start-up included) before the child is killed.
        progress: show a tqdm bar with one step per child start-up and per timed (round, batch
            size, variant) call. Without it, one INFO log line per finished round (hidden at the
            CLI's ``--quiet``, which logs warnings only).

    Returns:
        One row per variant and batch size (variant order, then batch size): ``name``, ``runtime``,
        ``path``, ``batch_size``, ``median_ms`` and ``p95_ms`` over all ``n = rounds * repeats``
        timed calls, ``min_ms``, ``mean_ms``, ``round_median_ms``, ``samples_per_s``, ``threads``
        (as the child reports them), ``thread_settings``, ``pid``, ``versions``, ``torch_imported``
        (False for ONNX Runtime children: no PyTorch in that process), ``output_checksum``
        (sum of the logits: equal models agree across runtimes), ``warmup``, ``repeats``, ``rounds``.

    Raises:
        LatencyWorkerError: a child failed (bad path, load error), crashed or timed out; the message
            names the variant and ends with the child's stderr.
        DataError: a batch file is missing.
        ValueError: bad arguments (unknown runtime, duplicate variant, counts < 1).
    """
    _check_args(variants, batch_files, threads, warmup, repeats, rounds)
    sizes = sorted(int(bs) for bs in batch_files)
    init = {"cmd": "init", "threads": threads, "warmup": warmup,
            "batch_files": {str(bs): str(Path(p).resolve()) for bs, p in batch_files.items()}}
    workers: list[_Worker] = []
    try:
        for v in variants:
            workers.append(_Worker(v, threads))
        total = len(workers) * (1 + rounds * len(sizes))
        with tqdm(total=total, desc="latency", unit="call", leave=False, dynamic_ncols=True,
                  disable=not progress) as bar:
            ready = []
            for w in workers:
                bar.set_postfix_str(f"start {w.variant.name} ({w.variant.runtime})")
                ready.append(w.ask({**init, "name": w.variant.name, "runtime": w.variant.runtime,
                                    "path": str(Path(w.variant.path).resolve())}, timeout_s))
                bar.update()
            times = _interleave(workers, sizes, repeats, rounds, timeout_s, bar)
    finally:
        for w in workers:
            w.close()
    rows = []
    for i, (v, info) in enumerate(zip(variants, ready, strict=True)):
        for bs in sizes:
            per_round = [np.asarray(t, dtype=np.float64) / 1e6 for t in times[(i, bs)]]
            ms = np.concatenate(per_round)
            median = float(np.median(ms))
            rows.append({
                "name": v.name, "runtime": v.runtime, "path": str(v.path), "batch_size": bs,
                "median_ms": median, "p95_ms": float(np.percentile(ms, 95)), "min_ms": float(ms.min()),
                "mean_ms": float(ms.mean()), "n": int(ms.size),
                "round_median_ms": [float(np.median(t)) for t in per_round],
                "samples_per_s": bs / (median / 1e3), "threads": int(info["threads"]),
                "thread_settings": {k: info[k] for k in ("interop_threads", "allow_spinning", "env_threads")
                                    if k in info},
                "pid": int(info["pid"]), "versions": dict(info["versions"]),
                "torch_imported": bool(info["torch_imported"]),
                "output_checksum": info["checksums"][str(bs)],
                "warmup": warmup, "repeats": repeats, "rounds": rounds,
            })
    return rows


def _interleave(workers: list[_Worker], sizes: list[int], repeats: int, rounds: int, timeout_s: float,
                bar: tqdm) -> dict[tuple[int, int], list[list[int]]]:
    """Timed calls, round by round and batch size by batch size; ``(worker, B) → times per round``."""
    times: dict[tuple[int, int], list[list[int]]] = {(i, bs): [] for i in range(len(workers)) for bs in sizes}
    for r in range(rounds):
        t0 = time.perf_counter()
        order = [(r + k) % len(workers) for k in range(len(workers))]
        for bs in sizes:
            for i in order:
                bar.set_postfix_str(f"round {r + 1}/{rounds} b{bs} {workers[i].variant.name}")
                reply = workers[i].ask({"cmd": "time", "batch_size": bs, "repeats": repeats}, timeout_s)
                times[(i, bs)].append(reply["times_ns"])
                bar.update()
        if bar.disable:
            log.info("latency: round %d/%d of %d variant(s) x %d batch size(s) done in %.1f s",
                     r + 1, rounds, len(workers), len(sizes), time.perf_counter() - t0)
    return times


def write_batch_files(batches: Mapping[int, Any], directory: Path) -> dict[int, Path]:
    """Save ``batch size → batch`` as ``directory/batch-<B>.safetensors``; returns the paths."""
    from mmdistill.export.flat import save_flat_batch

    directory = Path(directory)
    return {
        int(bs): save_flat_batch(b, directory / f"batch-{int(bs)}.safetensors") for bs, b in batches.items()
    }


__all__ = [
    "RUNTIMES",
    "LatencyVariant",
    "LatencyWorkerError",
    "flag_not_faster",
    "measure_runtimes",
    "pick_faster",
    "write_batch_files",
]
