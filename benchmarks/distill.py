"""Distillation benchmark (issue 3): what distillation recovers on the built-in dataset.

Runs ``mmdistill run benchmarks/configs/distill.yaml seed=S`` once per seed (each in its own
process) and prints, as mean ± sd and a 95% t-interval over seeds:

- test accuracy of the teacher, the scratch student and every distilled student;
- gap recovered = (acc_kd - acc_scratch) / (acc_teacher - acc_scratch), per seed, then averaged;
- student accuracy as a share of the teacher's, and the parameter ratio;
- cross-modal: the audio-only student distilled from the 3-modality teacher minus the same student
  trained on labels only (paired per seed);
- missing modality: points lost when each single modality is removed at test time, for the robust
  distilled student and a plain late-fusion student;
- teacher cost: median epoch seconds of the distilled student over the scratch student's (the
  teacher's outputs come from the cache; the one-time cache build is reported apart).

Usage:
    .venv/bin/python benchmarks/distill.py --seeds 0 1 2 3 4 [--out benchmarks/results/distill.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from foundation import (  # same statistics, machine description, children
    _cpu_model,
    mean_ci,
    run_child,
    saved_results,
)

CONFIG = Path(__file__).parent / "configs" / "distill.yaml"
MODALITIES = ("image", "text", "audio")


def run_seed(seed: int, workdir: Path, overrides: list[str]) -> dict:
    name = f"distill-seed{seed}"
    cmd = [sys.executable, "-m", "mmdistill.cli.main", "run", str(CONFIG), f"seed={seed}",
           "--output-dir", str(workdir), "--name", name, "--quiet", *overrides]
    t0 = time.perf_counter()
    run_child(cmd)
    return collect(workdir / name, seed, time.perf_counter() - t0)


def collect(run: Path, seed: int, wall_s: float) -> dict:
    """Per-model evaluation JSON and per-stage epoch seconds of one finished run directory."""
    evals = {p.stem: json.loads(p.read_text()) for p in (run / "eval").glob("*.json") if p.stem != "summary"}
    epochs: dict[str, list[float]] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "seconds" in rec and "val/accuracy" in rec:
            epochs.setdefault(rec["stage"], []).append(rec["seconds"])
    return {"seed": seed, "wall_s": wall_s, "evals": evals, "epoch_seconds": epochs}


def _fmt(values: list[float], scale: float = 100.0, unit: str = "") -> str:
    """``mean ± sd (95% CI ± half-width)`` over the finite values; says how many were undefined."""
    finite = [scale * v for v in values if v == v]  # NaN: gap undefined (teacher not above scratch)
    if not finite:
        return "undefined"
    m, sd, ci = mean_ci(finite)
    note = f" [{len(values) - len(finite)} seed(s) undefined]" if len(finite) < len(values) else ""
    return f"{m:.2f}{unit} ± {sd:.2f} (95% CI ± {ci:.2f}){note}"


def summarize(runs: list[dict]) -> dict:
    acc = {name: [r["evals"][name]["accuracy"] for r in runs] for name in runs[0]["evals"]}
    params = {name: runs[0]["evals"][name]["parameters"] for name in runs[0]["evals"]}
    teacher, scratch = acc["teacher"], acc["student-scratch"]
    distilled = [n for n in acc if n.startswith("student-") and n != "student-scratch"
                 and runs[0]["evals"][n]["modalities"] == list(MODALITIES)]
    gap = {n: [(a - s) / (t - s) if t > s else float("nan")
               for a, s, t in zip(acc[n], scratch, teacher, strict=True)] for n in distilled}
    share = {n: [a / t for a, t in zip(acc[n], teacher, strict=True)]
             for n in ["student-scratch", *distilled]}
    cross = [a - b for a, b in zip(acc["student-audio-kd"], acc["student-audio-ce"], strict=True)]
    # The labels-only control with the kd schedule (absent from runs made before it existed).
    control = ([a - b for a, b in zip(acc["student-kd"], acc["student-ce-long"], strict=True)]
               if "student-ce-long" in acc else None)
    drop = {n: {m: [r["evals"][n]["drop_one_loss"][m] for r in runs] for m in MODALITIES}
            for n in ("student-robust", "student-plain", "student-scratch", "teacher")}
    ratio = [statistics.median(r["epoch_seconds"]["student-kd"])
             / statistics.median(r["epoch_seconds"]["student-scratch"]) for r in runs]
    return {"accuracy": acc, "parameters": params, "gap_recovered": gap, "share_of_teacher": share,
            "crossmodal_audio_gain": cross, "kd_minus_ce_long": control, "drop_one_loss": drop,
            "kd_over_scratch_epoch_time": ratio}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/distill.json"))
    ap.add_argument("--workdir", type=Path, default=None, help="where runs go (default: a temp dir)")
    ap.add_argument("--reprint", type=Path, default=None,
                    help="print the tables again from an earlier results JSON (recomputing its summary)")
    ap.add_argument("--merge", type=Path, nargs="+", default=None,
                    help="combine the runs of several results JSONs (e.g. seeds run in parallel processes) "
                         "into --out, recomputing the summary")
    ap.add_argument("--from-runs", type=Path, nargs="+", default=None,
                    help="build a results JSON (--out) from finished run folders distill-seed<S> of an "
                         "interrupted benchmark (their wall time is unknown: NaN)")
    ap.add_argument("overrides", nargs="*", help="config overrides for every run (key=value)")
    args = ap.parse_args()
    if args.from_runs is not None:
        runs = [collect(d, int(d.name.removeprefix("distill-seed")), float("nan")) for d in args.from_runs]
        result = {"benchmark": "distill", "date": dt.date.today().isoformat(), "config": str(CONFIG),
                  "machine": {"processor": _cpu_model(), "python": sys.version.split()[0]},
                  "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
                  "seeds": [r["seed"] for r in runs], "overrides": args.overrides,
                  "summary": summarize(runs), "runs": runs}
        args.out.write_text(json.dumps(result, indent=2))
        report(result["summary"], runs, args.out)
        return
    if saved_results(args, summarize, report, rewrite=True):
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mmdistill-distill-"))
    runs = [run_seed(s, workdir, args.overrides) for s in args.seeds]
    s = summarize(runs)
    result = {"benchmark": "distill", "date": dt.date.today().isoformat(), "config": str(CONFIG),
              "machine": {"processor": _cpu_model(), "python": sys.version.split()[0]},
              "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "seeds": args.seeds,
              "overrides": args.overrides,
              "summary": s, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    report(s, runs, args.out)


def report(s: dict, runs: list[dict], out: Path) -> None:
    """Print the markdown tables of docs/benchmarks.md from a summary."""
    n = len(runs)
    t_params = s["parameters"]["teacher"]
    print(f"| model | params | x smaller | test acc % over {n} seeds | gap recovered % "
          "| share of teacher % |")
    print("|---|---|---|---|---|---|")
    fixed = ["teacher", "student-scratch"]
    order = fixed + sorted(n for n in s["accuracy"] if n not in fixed)
    for name in order:
        accs = s["accuracy"][name]
        p = s["parameters"][name]
        gap = _fmt(s["gap_recovered"][name]) if name in s["gap_recovered"] else "-"
        share = _fmt(s["share_of_teacher"][name]) if name in s["share_of_teacher"] else "-"
        print(f"| {name} | {p:,} | {t_params / p:.1f} | {_fmt(accs)} | {gap} | {share} |")
    print(f"\ncross-modal, audio-only student: distilled minus labels-only = "
          f"{_fmt(s['crossmodal_audio_gain'], unit=' pts')}")
    if s.get("kd_minus_ce_long") is not None:
        print(f"kd minus the labels-only control with the same schedule (ce-long) = "
              f"{_fmt(s['kd_minus_ce_long'], unit=' pts')}")
    print("\npoints lost when one modality is removed at test time:")
    print("| model | " + " | ".join(f"without {m}" for m in MODALITIES) + " |")
    print("|---|" + "---|" * len(MODALITIES))
    for name, per in s["drop_one_loss"].items():
        print(f"| {name} | " + " | ".join(_fmt(per[m]) for m in MODALITIES) + " |")
    ratio = s["kd_over_scratch_epoch_time"]
    print(f"\ndistilled / scratch student epoch time (median epoch, per seed): "
          f"{', '.join(f'{r:.2f}' for r in ratio)}; mean {statistics.fmean(ratio):.2f}")
    walls = ", ".join(f"{r['wall_s']:.0f}" for r in runs)
    print(f"wall time per run (s): {walls}; raw results: {out}")


if __name__ == "__main__":
    main()
