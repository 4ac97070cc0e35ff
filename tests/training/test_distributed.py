"""Distributed helpers: no-op behaviour in one process, and a real 2-process torchrun run."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from mmdistill.errors import ConfigError
from mmdistill.training import distributed as D

WORKER = Path(__file__).with_name("ddp_worker.py")


def test_single_process_helpers_are_noops(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = D.init_distributed()
    assert info == D.DistInfo(rank=0, world_size=1, local_rank=0, backend="none", enabled=False)
    assert D.is_main() and D.rank() == 0 and D.world_size() == 1 and not D.is_distributed()
    t = torch.tensor([1.0, 2.0])
    assert D.all_reduce_mean(t) is t
    assert D.all_reduce_mean(3.5) == 3.5
    assert D.all_reduce_sum(2.0) == 2.0
    assert D.all_gather_object({"a": 1}) == [{"a": 1}]
    assert D.broadcast_object("x") == "x"
    D.barrier()
    model = nn.Linear(2, 2)
    assert D.wrap_ddp(model) is model
    assert D.unwrap(model) is model
    D.cleanup()  # safe without a process group


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_init_from_torchrun_environment_one_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port())}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    info = D.init_distributed(backend="gloo")
    try:
        assert info == D.DistInfo(rank=0, world_size=1, local_rank=0, backend="gloo", enabled=True)
        assert D.get_dist_info() == info
        assert D.init_distributed() == info  # idempotent
        # A world of one is not "distributed": collectives stay no-ops and nothing is wrapped.
        assert not D.is_distributed()
        model = nn.Linear(2, 2)
        assert D.wrap_ddp(model) is model
    finally:
        D.cleanup()
    assert D.get_dist_info().enabled is False


def test_bad_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "zero")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ConfigError, match="RANK must be an integer, got 'zero'"):
        D.init_distributed()


# What gloo prints when a rank aborts in its C++ teardown (a std::thread destroyed while joinable).
GLOO_TEARDOWN_ABORT = "terminate called without an active exception"


def _run(cmd: list[str], out: Path, *, ranks: int = 1) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd + ["--out", str(out)], env=env, capture_output=True, text=True, timeout=120)
    finished = all((out / f"result_rank{r}.json").is_file() for r in range(ranks))
    if proc.returncode != 0 and ranks > 1 and finished and GLOO_TEARDOWN_ABORT in proc.stderr:
        # Known and rare (0 of 40 runs beside one other job; seen with the suite beside two): every
        # rank wrote its results, then one aborted in gloo's teardown (cleanup() or interpreter
        # exit). Not what this test checks (the numbers below are), so the run is repeated once
        # from scratch; a second abort fails.
        shutil.rmtree(out)
        proc = subprocess.run(cmd + ["--out", str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return time.perf_counter() - t0


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process(tmp_path: Path) -> None:
    torchrun = Path(sys.executable).parent / "torchrun"
    _run([str(torchrun), "--standalone", "--nproc_per_node=2", str(WORKER)], tmp_path / "ddp", ranks=2)
    _run([sys.executable, str(WORKER)], tmp_path / "single")
    r0 = json.loads((tmp_path / "ddp" / "result_rank0.json").read_text())
    r1 = json.loads((tmp_path / "ddp" / "result_rank1.json").read_text())
    single = json.loads((tmp_path / "single" / "result_rank0.json").read_text())
    assert (r0["world_size"], r0["backend"], single["world_size"]) == (2, "gloo", 1)

    # It trains: loss falls and accuracy is far above chance (4 classes: 25%).
    assert r0["train_loss"][-1] < 0.6 * r0["train_loss"][0]
    assert r0["best_val_accuracy"] > 0.6

    # Every rank took the same early-stopping decision and restored the same best weights.
    for key in ("best_epoch", "epochs_run", "stopped_early", "val_accuracy", "param_checksum", "preds"):
        assert r0[key] == r1[key], key

    # With DistributedSampler(shuffle=False) and per-rank batch = global batch / 2, the two ranks'
    # batches at step t together are exactly the single process's batch t; DDP averages the two
    # half-batch mean gradients = the full-batch mean gradient (no BatchNorm: nothing depends on
    # the per-rank batch). So the runs differ only by float summation order (~1e-7 relative).
    assert r0["epochs_run"] == single["epochs_run"]
    assert r0["best_epoch"] == single["best_epoch"]
    assert r0["train_loss"] == pytest.approx(single["train_loss"], rel=1e-4)
    assert r0["val_loss"] == pytest.approx(single["val_loss"], rel=1e-4)
    assert abs(r0["best_val_accuracy"] - single["best_val_accuracy"]) <= 0.02
    assert r0["param_checksum"] == pytest.approx(single["param_checksum"], rel=1e-4)

    # predict() gathered all 201 validation rows once each (the sampler's padding duplicate
    # dropped), in the single process's order.
    assert r0["pred_ids"] == single["pred_ids"] == [f"v{i}" for i in range(201)]

    # Only rank 0 wrote metrics.jsonl: one record per epoch, no duplicates.
    records = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, r0["epochs_run"] + 1))
    assert all(r["stage"] == "toy" for r in records)


def test_cleanup_waits_for_the_other_ranks_unless_failing(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(D.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(D.dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(D.dist, "destroy_process_group", lambda: calls.append("destroy"))
    D.cleanup()
    assert calls == ["barrier", "destroy"]
    calls.clear()
    with pytest.raises(RuntimeError, match="rank failed"):
        try:
            raise RuntimeError("rank failed")
        finally:
            D.cleanup()  # a failing rank must not wait for the others
    assert calls == ["destroy"]
