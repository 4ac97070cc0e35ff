"""One process versus two (`torchrun --nproc_per_node=2`): do they agree within the noise of a seed?

For every seed, the pipeline of ``benchmarks/configs/ddp_agreement.yaml`` (teacher training, a
scratch student, logit distillation, structured pruning with recovery fine-tuning, evaluation) runs
twice, each in its own process tree: once as one process and once under
``torchrun --standalone --nproc_per_node=2`` (gloo, 1 thread per process). Per model it reports
the test accuracy of both, the paired difference (2 processes minus 1), and the seed noise it is
judged against: the standard deviation of the one-process accuracy over the seeds, and the mean
absolute difference between one-process runs of different seeds.

The two runs of a seed cannot be identical: the DistributedSampler orders rows differently from
the one-process loader and dropout draws differ per rank; the global batch (``data.batch_size``,
split between the ranks) and the optimisation schedule are the same. So "agree" means: the paired
difference is of the size of a seed change, not larger. ``tests/integration/test_ddp_agreement.py``
runs seed 0 with the tolerance printed here.

    .venv/bin/python benchmarks/ddp_agreement.py --seeds 0 1 2 3 4 --workdir /tmp/ddpbench
    .venv/bin/python benchmarks/ddp_agreement.py --reprint benchmarks/results/ddp_agreement.json
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from foundation import machine_info, mean_ci, run_child, seeded_parser

CONFIG = Path(__file__).resolve().parent / "configs" / "ddp_agreement.yaml"
MODES = ("one", "ddp")


def command(mode: str, seed: int, workdir: Path, overrides: list[str]) -> list[str]:
    """The command line of one run (``one``: a plain process; ``ddp``: torchrun, 2 processes)."""
    name = f"{mode}-seed{seed}"
    tail = ["-m", "mmdistill.cli.main", "run", str(CONFIG), f"seed={seed}", "--output-dir", str(workdir),
            "--name", name, "--quiet", *overrides]
    if mode == "one":
        return [sys.executable, *tail]
    torchrun = str(Path(sys.executable).parent / "torchrun")
    return [torchrun, "--standalone", "--nproc_per_node=2", *tail]


def collect(run: Path) -> dict:
    """Test accuracy per model, the last epoch's validation numbers and the world size of a run folder."""
    summary = json.loads((run / "eval" / "summary.json").read_text())
    last: dict[str, dict] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "val/accuracy" in rec:
            model = rec.get("model") or rec["stage"]
            last[model] = {"epoch": rec["epoch"], "val_accuracy": rec["val/accuracy"],
                           "val_loss": rec["val/loss"], "train_samples_per_s": rec.get("train/samples_per_s")}
    return {
        "world_size": json.loads((run / "versions.json").read_text())["world_size"],
        "test_accuracy": {r["model"]: r["accuracy"] for r in summary},
        "parameters": {r["model"]: r["parameters"] for r in summary},
        "last_epoch": last,
    }


def run_seed(seed: int, workdir: Path, overrides: list[str]) -> dict:
    """Both runs of one seed, one after the other (never at the same time: they share 2 cores)."""
    env_keep = os.environ.copy()
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        os.environ.pop(var, None)
    os.environ["OMP_NUM_THREADS"] = "1"
    out: dict = {"seed": seed}
    try:
        for mode in MODES:
            t0 = time.perf_counter()
            run_child(command(mode, seed, workdir, overrides))
            out[mode] = collect(workdir / f"{mode}-seed{seed}") | {"wall_s": time.perf_counter() - t0}
    finally:
        os.environ.clear()
        os.environ.update(env_keep)
    return out


def summarize(runs: list[dict]) -> dict:
    """Per model: accuracy of each mode, paired difference, seed noise and the tolerance it implies."""
    models = sorted(runs[0]["one"]["test_accuracy"])
    table = {}
    for model in models:
        one = [r["one"]["test_accuracy"][model] for r in runs]
        ddp = [r["ddp"]["test_accuracy"][model] for r in runs]
        diff = [d - o for o, d in zip(one, ddp, strict=True)]
        cross = [abs(a - b) for a, b in itertools.combinations(one, 2)]
        sd_one = statistics.stdev(one) if len(one) > 1 else float("nan")
        table[model] = {
            "one": mean_ci(one), "ddp": mean_ci(ddp), "ddp_minus_one": mean_ci(diff),
            "max_abs_ddp_minus_one": max(abs(d) for d in diff),
            "mean_abs_ddp_minus_one": statistics.fmean(abs(d) for d in diff),
            "seed_sd_one": sd_one,
            "mean_abs_seed_to_seed_one": statistics.fmean(cross) if cross else float("nan"),
            "tolerance_2sd": 2 * sd_one,
        }
    walls = {m: mean_ci([r[m]["wall_s"] for r in runs]) for m in MODES}
    return {"models": table, "wall_s": walls}


def _pts(x: float) -> str:
    return f"{100 * x:.2f}"


def report(result: dict) -> None:
    """Print the table (points of test accuracy)."""
    s = result["summary"]
    n = len(result["runs"])
    print(f"\nOne process vs torchrun --nproc_per_node=2, {n} seeds {result['seeds']}; test accuracy %, "
          "mean ± sd (95% CI)")
    print("| model | 1 process | 2 processes | 2 minus 1 (paired) | max abs(2 - 1) | seed sd (1 process) "
          "| mean abs seed-to-seed (1 process) | test tolerance (2 x seed sd) |")
    print("|---|---|---|---|---|---|---|---|")
    for model, t in s["models"].items():
        one, ddp, d = t["one"], t["ddp"], t["ddp_minus_one"]
        print(f"| {model} | {_pts(one[0])} ± {_pts(one[1])} | {_pts(ddp[0])} ± {_pts(ddp[1])} "
              f"| {_pts(d[0])} ± {_pts(d[1])} (± {_pts(d[2])}) | {_pts(t['max_abs_ddp_minus_one'])} "
              f"| {_pts(t['seed_sd_one'])} | {_pts(t['mean_abs_seed_to_seed_one'])} "
              f"| {_pts(t['tolerance_2sd'])} |")
    w = s["wall_s"]
    print(f"\nwall time per run (s): 1 process {w['one'][0]:.1f} ± {w['one'][1]:.1f}, "
          f"2 processes {w['ddp'][0]:.1f} ± {w['ddp'][1]:.1f}")
    print(f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores")


def main() -> None:
    ap = seeded_parser(__doc__, seeds=[0, 1, 2, 3, 4], out="benchmarks/results/ddp_agreement.json")
    args = ap.parse_args()
    if args.reprint is not None:
        report(json.loads(args.reprint.read_text()))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mmdistill-ddp-"))
    runs = []
    for seed in args.seeds:
        runs.append(run_seed(seed, workdir, args.overrides))
        print(f"seed {seed}: " + json.dumps({m: runs[-1][m]["test_accuracy"] for m in MODES}), flush=True)
    result = {
        "benchmark": "ddp_agreement",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "config": str(CONFIG.relative_to(CONFIG.parents[2])),
        "overrides": args.overrides,
        "seeds": args.seeds,
        "machine": machine_info(),
        "runs": runs,
        "summary": summarize(runs),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    report(result)
    print(f"raw results: {args.out}")


if __name__ == "__main__":
    main()
