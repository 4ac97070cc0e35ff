"""Function-matching benchmark (issue 3): does multimodal mixup with the teacher online close the gap?

Runs ``mmdistill run benchmarks/configs/distill_fm.yaml seed=S`` once per seed (each in its own
process): teacher, scratch student, ``kd`` (the distillation benchmark's recipe, 30 epochs, cached
teacher), and on a 90-epoch schedule ``fm`` (kd + multimodal input mixup, teacher online on the
mixed batch: Beyer et al., CVPR 2022), ``kd-long`` (the same schedule without mixup) and ``ce-mix``
(mixup on the labels alone). Prints, as mean ± sd and a 95% t-interval over seeds:

- test accuracy, gap recovered ``(acc - acc_scratch) / (acc_teacher - acc_scratch)`` and share of
  the teacher's accuracy of every student;
- paired differences: fm minus kd, fm minus kd-long (is it the schedule?), fm minus ce-mix (is it
  mixup alone?);
- points lost when one modality is removed at test time;
- the cost: median epoch seconds of each student over the scratch student's.

Usage:
    .venv/bin/python benchmarks/distill_fm.py --seeds 0 1 2 3 4 [--out benchmarks/results/distill_fm.json]
    .venv/bin/python benchmarks/distill_fm.py --merge a.json b.json   # seeds run in parallel processes
    .venv/bin/python benchmarks/distill_fm.py --reprint benchmarks/results/distill_fm.json
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from foundation import machine_info, run_child, saved_results, seeded_parser

from distill import _fmt, collect

CONFIG = Path(__file__).parent / "configs" / "distill_fm.yaml"
MODALITIES = ("image", "text", "audio")
STUDENTS = ("student-kd", "student-kd-long", "student-fm", "student-ce-mix")
PAIRS = (("student-fm", "student-kd"), ("student-fm", "student-kd-long"), ("student-fm", "student-ce-mix"),
         ("student-kd-long", "student-kd"))


def run_seed(seed: int, workdir: Path, overrides: list[str]) -> dict:
    name = f"distill-fm-seed{seed}"
    cmd = [sys.executable, "-m", "mmdistill.cli.main", "run", str(CONFIG), f"seed={seed}",
           "--output-dir", str(workdir), "--name", name, "--quiet", *overrides]
    t0 = time.perf_counter()
    run_child(cmd)
    return collect(workdir / name, seed, time.perf_counter() - t0)


def summarize(runs: list[dict]) -> dict:
    acc = {n: [r["evals"][n]["accuracy"] for r in runs] for n in ("teacher", "student-scratch", *STUDENTS)}
    params = {n: runs[0]["evals"][n]["parameters"] for n in acc}
    teacher, scratch = acc["teacher"], acc["student-scratch"]
    gap = {n: [(a - s) / (t - s) if t > s else float("nan")
               for a, s, t in zip(acc[n], scratch, teacher, strict=True)] for n in STUDENTS}
    share = {n: [a / t for a, t in zip(acc[n], teacher, strict=True)] for n in ("student-scratch", *STUDENTS)}
    diffs = {f"{a} minus {b}": [x - y for x, y in zip(acc[a], acc[b], strict=True)] for a, b in PAIRS}
    drop = {n: {m: [r["evals"][n]["drop_one_loss"][m] for r in runs] for m in MODALITIES}
            for n in ("teacher", "student-kd", "student-fm")}
    epoch_ratio = {n: [statistics.median(r["epoch_seconds"][n])
                       / statistics.median(r["epoch_seconds"]["student-scratch"]) for r in runs]
                   for n in STUDENTS}
    return {"accuracy": acc, "parameters": params, "gap_recovered": gap, "share_of_teacher": share,
            "differences": diffs, "drop_one_loss": drop, "epoch_time_over_scratch": epoch_ratio}


def report(s: dict, runs: list[dict], out: Path) -> None:
    """Print the markdown tables of docs/benchmarks.md from a summary."""
    n, t_params = len(runs), s["parameters"]["teacher"]
    print(f"| model | params | x smaller | test acc % over {n} seeds | gap recovered % | share of teacher % "
          "| epoch time / scratch |")
    print("|---|---|---|---|---|---|---|")
    for name in ("teacher", "student-scratch", *STUDENTS):
        gap = _fmt(s["gap_recovered"][name]) if name in s["gap_recovered"] else "-"
        share = _fmt(s["share_of_teacher"][name]) if name in s["share_of_teacher"] else "-"
        ratio = s["epoch_time_over_scratch"].get(name)
        cost = f"{statistics.fmean(ratio):.2f} ({min(ratio):.2f}-{max(ratio):.2f})" if ratio else "-"
        p = s["parameters"][name]
        acc = _fmt(s["accuracy"][name])
        print(f"| {name} | {p:,} | {t_params / p:.1f} | {acc} | {gap} | {share} | {cost} |")
    print("\npaired differences of test accuracy (points):")
    for label, values in s["differences"].items():
        print(f"- {label}: {_fmt(values, unit=' pts')}")
    print("\npoints lost when one modality is removed at test time:")
    print("| model | " + " | ".join(f"without {m}" for m in MODALITIES) + " |")
    print("|---|" + "---|" * len(MODALITIES))
    for name, per in s["drop_one_loss"].items():
        print(f"| {name} | " + " | ".join(_fmt(per[m]) for m in MODALITIES) + " |")
    walls = ", ".join(f"{r['wall_s']:.0f}" for r in runs)
    print(f"\nwall time per run (s): {walls}; raw results: {out}")


def main() -> None:
    ap = seeded_parser(__doc__, seeds=[0, 1, 2, 3, 4], out="benchmarks/results/distill_fm.json")
    ap.add_argument("--merge", type=Path, nargs="+", default=None,
                    help="combine the runs of several results JSONs into --out, recomputing the summary")
    args = ap.parse_args()
    if saved_results(args, summarize, report):
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mmdistill-distill-fm-"))
    runs = [run_seed(s, workdir, args.overrides) for s in args.seeds]
    result = {"benchmark": "distill_fm", "date": dt.date.today().isoformat(), "config": str(CONFIG),
              "machine": machine_info(), "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
              "seeds": args.seeds, "overrides": args.overrides, "summary": summarize(runs), "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    report(result["summary"], runs, args.out)


if __name__ == "__main__":
    main()
