"""Two processes under torchrun agree with one process within the noise of a seed (issue 7).

The pipeline of ``benchmarks/configs/ddp_agreement.yaml`` (teacher training, scratch student,
logit distillation, structured pruning with recovery fine-tuning through the distill recipe, evaluate)
runs once as a plain process and once under ``torchrun --standalone --nproc_per_node=2`` (gloo),
both with seed 0 and 1 thread per process. The runs cannot be identical (the DistributedSampler
orders rows differently from the one-process loader, dropout draws differ per rank), so their test
accuracies are compared against the noise of a seed, measured by ``benchmarks/ddp_agreement.py``
over 5 seeds (``benchmarks/results/ddp_agreement.json``, docs/benchmarks.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from _helpers import launcher_env, torchrun

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).resolve().parents[2] / "benchmarks" / "configs" / "ddp_agreement.yaml"

# 2 x the standard deviation over seeds 0-4 of the one-process test accuracy, per model, rounded up
# to the next half point (benchmarks/results/ddp_agreement.json, "tolerance_2sd", measured 2026-12-01:
# 4.60 / 4.08 / 7.45 / 6.80 points; the largest paired |2 - 1| over those seeds was 3.24 / 2.35 / 2.21
# / 4.05 points, seed 0's 0.15 / 1.03 / 2.06 / 1.25).
TOLERANCE = {"teacher": 0.050, "student-scratch": 0.045, "student-kd": 0.075, "student-kd-pruned": 0.070}


def _run(prefix: list[str], out: Path, name: str) -> Path:
    cmd = [*prefix, "-m", "mmdistill.cli.main", "run", str(CONFIG), "seed=0", "--output-dir", str(out),
           "--name", name, "--quiet"]
    proc = subprocess.run(cmd, cwd=out, env=launcher_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return out / name


def _summary(run: Path) -> list[dict]:
    return json.loads((run / "eval" / "summary.json").read_text())


def _column(run: Path, key: str) -> dict:
    """``{model: row[key]}`` of a run's eval/summary.json."""
    return {r["model"]: r[key] for r in _summary(run)}


def _epochs(run: Path) -> dict[str, list[dict]]:
    """Per model, the end-of-epoch records of metrics.jsonl in order."""
    out: dict[str, list[dict]] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "val/accuracy" in rec:
            out.setdefault(rec["stage"], []).append(rec)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("ddp-agreement")
    one = _run([sys.executable], out, "one")
    ddp = _run(torchrun("--standalone", "--nproc_per_node=2"), out, "ddp")
    return one, ddp


def test_two_processes_match_one_process_within_seed_noise(runs: tuple[Path, Path]) -> None:
    one, ddp = runs
    assert json.loads((one / "versions.json").read_text())["world_size"] == 1
    assert json.loads((ddp / "versions.json").read_text())["world_size"] == 2
    acc = {"one": _column(one, "accuracy"), "ddp": _column(ddp, "accuracy")}
    assert set(acc["one"]) == set(acc["ddp"]) == set(TOLERANCE)
    for model, tol in TOLERANCE.items():
        diff = abs(acc["ddp"][model] - acc["one"][model])
        assert diff <= tol, f"{model}: 2 processes {acc['ddp'][model]:.4f}, 1 process {acc['one'][model]:.4f}"
    # Far above chance (10 classes) in both: agreement is not two failed runs agreeing.
    assert min(acc["ddp"].values()) > 0.5 and min(acc["one"].values()) > 0.5


def test_two_processes_run_the_same_schedule(runs: tuple[Path, Path]) -> None:
    """The global batch is split between the ranks: the same optimizer steps per epoch, the same
    epochs for every model (teacher, scratch, distilled, pruning recovery), logged once (by rank 0)."""
    one, ddp = (_epochs(r) for r in runs)
    assert set(one) == set(ddp) == {"teacher", "student-scratch", "student-kd", "student-kd-pruned"}
    for model in one:
        assert [r["epoch"] for r in ddp[model]] == [r["epoch"] for r in one[model]], model
        assert [r["step"] for r in ddp[model]] == [r["step"] for r in one[model]], model
    # Validation loss at the last epoch: within 25% (seed 0; the per-seed values are in the benchmark JSON).
    for model in one:
        assert ddp[model][-1]["val/loss"] == pytest.approx(one[model][-1]["val/loss"], rel=0.25), model


def test_two_processes_prune_to_the_same_architecture(runs: tuple[Path, Path]) -> None:
    """Every rank prunes its (identical, DDP-synchronised) copy the same way; rank 0 saves it, and it
    reloads from safetensors + model.json."""
    from mmdistill.recipes.train import load_trained

    one, ddp = runs
    params = {"one": _column(one, "parameters"), "ddp": _column(ddp, "parameters")}
    assert params["ddp"] == params["one"]
    assert params["ddp"]["student-kd-pruned"] < params["ddp"]["student-kd"]
    model = load_trained(ddp / "students" / "kd-pruned").model
    assert sum(p.numel() for p in model.parameters()) == params["ddp"]["student-kd-pruned"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_through_c10d_rendezvous(tmp_path: Path) -> None:
    """``--nnodes=2``: two torchrun agents (one per "node", one process each) meet at a c10d
    rendezvous endpoint, as on two machines sharing a file system; here both run on this machine.
    Each process has LOCAL_RANK 0, so what must be done once is keyed on the global rank: one
    teacher cache, metrics written once, both ranks' work in one run."""
    endpoint = f"127.0.0.1:{_free_port()}"
    cmd = [*torchrun("--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}",
                     "--rdzv_id=mmdistill-test"), "-m", "mmdistill.cli.main", "run", "smoke",
           "stages=[teacher,student,distill,evaluate]", "--output-dir", str(tmp_path), "--name", "nodes",
           "-q"]
    nodes = [subprocess.Popen([*cmd[:1], f"--node_rank={i}", *cmd[1:]], cwd=tmp_path, env=launcher_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in nodes]
    for i, (p, (_, err)) in enumerate(zip(nodes, outs, strict=True)):
        assert p.returncode == 0, f"node {i} failed:\n{err[-3000:]}"
    run = tmp_path / "nodes"
    assert json.loads((run / "versions.json").read_text())["world_size"] == 2
    assert len(list((run / "cache").glob("teacher-*/logits.npy"))) == 1
    epochs = _epochs(run)
    assert [r["epoch"] for r in epochs["teacher"]] == [1, 2]  # smoke: 2 teacher epochs, logged once
    assert [r["epoch"] for r in epochs["student-kd"]] == [1]
    summary = {r["model"] for r in _summary(run)}
    assert summary == {"teacher", "student-scratch", "student-kd"}
