"""Child process of :func:`mmdistill.evaluation.latency.measure_runtimes`: one model, one runtime.

Run as ``python -m mmdistill.evaluation.latency_worker``. The parent sets ``OMP_NUM_THREADS`` /
``MKL_NUM_THREADS`` in the environment before start-up, then speaks a line-based JSON protocol
over stdin/stdout (one object per line; every reply has ``"ok"``):

``{"cmd": "init", "name", "runtime", "path", "threads", "warmup", "batch_files": {"<B>": path}}``
    Load the model (``torch``: checkpoint directory via ``load_model``; ``onnxruntime``: the
    ``.onnx`` file), load every batch file, run ``warmup`` untimed calls per batch size. Reply
    ``{"ok": true, "pid", "threads", "versions", "torch_imported", "checksums": {"<B>": sum of logits}}``.
``{"cmd": "time", "batch_size": B, "repeats": n}``
    One untimed call (caches went cold while the other workers measured), then ``n`` calls timed
    with ``perf_counter_ns``. Reply ``{"ok": true, "times_ns": [...]}``.
``{"cmd": "quit"}``
    Exit 0.

On any error the worker prints the traceback to stderr, replies ``{"ok": false, "error": ...}``
and exits 1. The ONNX Runtime worker never imports torch: it reads the flat safetensors batch
with ``safetensors.numpy`` and feeds it to the session by name (the shared ONNX I/O contract), so
nothing of PyTorch runs or spins in that process.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np


def _torch_runner(path: Path, threads: int, files: dict[int, Path]) -> tuple[dict[int, Callable[[], Any]],
                                                                            dict[str, Any]]:
    """Load a checkpoint directory; ``batch size → call`` (returns logits as numpy) and run info."""
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    from mmdistill.export.flat import load_flat_batch
    from mmdistill.models.checkpoint import load_model

    model, _ = load_model(path)
    model.eval()
    calls: dict[int, Callable[[], Any]] = {}
    for bs, file in files.items():
        batch = load_flat_batch(file)

        def call(batch: dict[str, Any] = batch) -> Any:
            with torch.inference_mode():
                return model(batch).logits

        calls[bs] = call
    info = {
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "versions": {"torch": torch.__version__},
    }
    return calls, info


def _ort_runner(path: Path, threads: int, files: dict[int, Path]) -> tuple[dict[int, Callable[[], Any]],
                                                                          dict[str, Any]]:
    """Open an ONNX Runtime session with fixed, non-spinning threads; calls per batch size."""
    import onnxruntime as ort
    from safetensors.numpy import load_file

    from mmdistill.export.flat import complete_feeds  # numpy only: this process never imports torch

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file; pass the .onnx written by export_onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # An idle worker must not burn a core while another variant is being timed.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    calls: dict[int, Callable[[], Any]] = {}
    for bs, file in files.items():
        # Only the session's inputs; one the batch lacks gets the contract's filler.
        feeds = complete_feeds(load_file(str(file)), session.get_inputs(), source=str(file))

        def call(feeds: dict[str, np.ndarray] = feeds) -> Any:
            return session.run(None, feeds)[0]

        calls[bs] = call
    info = {
        "threads": threads,
        "interop_threads": 1,
        "allow_spinning": False,
        "providers": session.get_providers(),
        "versions": {"onnxruntime": ort.__version__},
    }
    return calls, info


_RUNNERS = {"torch": _torch_runner, "onnxruntime": _ort_runner}


def _init(msg: dict[str, Any]) -> tuple[dict[int, Callable[[], Any]], dict[str, Any]]:
    runtime = msg["runtime"]
    if runtime not in _RUNNERS:
        raise ValueError(f"unknown runtime {runtime!r}; use one of {sorted(_RUNNERS)}")
    files = {int(bs): Path(p) for bs, p in msg["batch_files"].items()}
    calls, info = _RUNNERS[runtime](Path(msg["path"]), int(msg["threads"]), files)
    checksums = {}
    for bs, call in calls.items():
        out = None
        for _ in range(max(1, int(msg["warmup"]))):
            out = call()
        checksums[str(bs)] = float(np.asarray(out, dtype=np.float64).sum())
    from mmdistill import __version__

    info["versions"].update(python=platform.python_version(), numpy=np.__version__, mmdistill=__version__)
    info.update(pid=os.getpid(), checksums=checksums, torch_imported="torch" in sys.modules, env_threads={
        k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    return calls, info


def _time(call: Callable[[], Any], repeats: int) -> list[int]:
    call()  # re-warm after idling while the other workers measured
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - t0)
    return times


def serve(inp: TextIO, out: TextIO) -> int:
    """Answer protocol lines from ``inp`` on ``out`` until ``quit`` or end of input; the exit code."""
    calls: dict[int, Callable[[], Any]] = {}

    def reply(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    for line in inp:
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
            cmd = msg.get("cmd")
            if cmd == "quit":
                return 0
            if cmd == "init":
                calls, info = _init(msg)
                reply({"ok": True, **info})
            elif cmd == "time":
                bs = int(msg["batch_size"])
                if bs not in calls:
                    raise ValueError(f"no batch of size {bs} was loaded; loaded: {sorted(calls)}")
                reply({"ok": True, "times_ns": _time(calls[bs], int(msg["repeats"]))})
            else:
                raise ValueError(f"unknown command {cmd!r}; expected init, time or quit")
        except Exception as exc:  # reported to the parent, which raises with our stderr tail
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
            return 1
    return 0


def main() -> int:
    """Serve on the real stdin/stdout; anything else written to fd 1 (prints, C libraries) goes to stderr."""
    proto = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return serve(sys.stdin, proto)


if __name__ == "__main__":
    sys.exit(main())
