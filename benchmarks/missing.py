"""Missing-modality benchmark (issue 3): does routing to specialists make a student robust?

Runs ``mmdistill run benchmarks/configs/missing.yaml seed=S`` once per seed (each in its own
process). One run trains the distillation benchmark's teacher, teacher-sized specialists of every
modality pair and every single modality (``baselines``), the scratch student, and three students
of the scratch student's size with modality dropout p = 0.4 and the same KD recipe:

- ``robust``: every row taught by the full teacher (as in ``benchmarks/distill.py``);
- ``routed-pairs``: rows missing one modality taught by the specialist of the other two;
- ``routed``: also rows left with one modality taught by that modality's baseline;

and two robust students that ask what limits the small one: ``robust-p6`` (modality dropout
p = 0.6) and ``robust-wide`` (the 398k-parameter student of ``benchmarks/configs/compress.yaml``,
4.6x smaller than the teacher, where the others are 29x smaller).

It prints, as mean ± sd and a 95% t-interval over seeds, each model's test accuracy and the
points it loses when one modality is removed at test time (``drop_one_loss`` of the evaluation),
every other student's loss minus the robust student's (paired per seed), the *ceiling*: the full
teacher's accuracy minus the pair specialist's, the least a model of the teacher's size loses
without that modality (what ``benchmarks/missing_ceiling.py`` measured in separate runs), and each
model's accuracy without a modality minus that specialist's (paired): how far it is from a model
of the teacher's size trained for that input alone.

    .venv/bin/python benchmarks/missing.py --seeds 0 1 2 --workdir /tmp/missing threads=1
    .venv/bin/python benchmarks/missing.py --merge a.json b.json --out benchmarks/results/missing.json
    .venv/bin/python benchmarks/missing.py --reprint benchmarks/results/missing.json
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from foundation import mean_ci, run_child, saved_results, seeded_parser, write_results

from distill import collect

CONFIG = Path(__file__).resolve().parent / "configs" / "missing.yaml"
MODALITIES = ("image", "text", "audio")
STUDENTS = ("student-robust", "student-routed-pairs", "student-routed", "student-robust-p6",
            "student-robust-wide")


def specialist(missing: str) -> str:
    """The run model trained on every modality but ``missing``: ``baseline-image+text`` for audio."""
    return "baseline-" + "+".join(m for m in MODALITIES if m != missing)


def run_seed(seed: int, workdir: Path, overrides: list[str]) -> dict:
    """One seed's run: every model's evaluation (the fields used here), epoch seconds and wall time."""
    name = f"missing-seed{seed}"
    cmd = [sys.executable, "-m", "mmdistill.cli.main", "run", str(CONFIG), f"seed={seed}",
           "--output-dir", str(workdir), "--name", name, "--quiet", *overrides]
    t0 = time.perf_counter()
    run_child(cmd)
    run = collect(workdir / name, seed, time.perf_counter() - t0)  # the distill benchmark's reader
    keep = ("accuracy", "parameters", "modalities", "drop_one_loss", "modality_subsets")
    run["evals"] = {n: {k: e[k] for k in keep if k in e} for n, e in run["evals"].items()}
    return {**run, "command": " ".join(cmd)}


def summarize(runs: list[dict]) -> dict:
    """Accuracy per model, points lost per removed modality, routed minus robust, and the ceiling."""
    models = list(runs[0]["evals"])

    def lost(r: dict, n: str, m: str) -> float:
        return r["evals"][n]["drop_one_loss"][m]

    acc = {n: mean_ci([r["evals"][n]["accuracy"] for r in runs]) for n in models}
    drop = {n: {m: mean_ci([lost(r, n, m) for r in runs]) for m in MODALITIES}
            for n in ("teacher", "student-scratch", *STUDENTS)}
    vs_robust = {n: {m: mean_ci([lost(r, n, m) - lost(r, "student-robust", m) for r in runs])
                     for m in MODALITIES} for n in STUDENTS[1:]}
    ceiling = {m: mean_ci([r["evals"]["teacher"]["accuracy"] - r["evals"][specialist(m)]["accuracy"]
                           for r in runs]) for m in MODALITIES}
    def acc_without(r: dict, n: str, m: str) -> float:
        return r["evals"][n]["accuracy"] - lost(r, n, m)

    removed = ("teacher", "student-scratch", *STUDENTS)
    without = {n: {m: mean_ci([acc_without(r, n, m) for r in runs]) for m in MODALITIES} for n in removed}
    # Accuracy with the modality removed minus the specialist trained without it (paired).
    vs_specialist = {n: {m: mean_ci([acc_without(r, n, m) - r["evals"][specialist(m)]["accuracy"]
                                     for r in runs]) for m in MODALITIES} for n in removed}
    ratio = [statistics.median(r["epoch_seconds"]["student-routed"])
             / statistics.median(r["epoch_seconds"]["student-robust"]) for r in runs]
    return {"accuracy": acc, "drop_one_loss": drop, "minus_robust": vs_robust, "ceiling": ceiling,
            "without": without, "minus_specialist": vs_specialist,
            "routed_over_robust_epoch_time": mean_ci(ratio)}


def _pts(v: list[float] | tuple[float, float, float]) -> str:
    m, sd, ci = (100 * x for x in v)
    return f"{m:.2f} ± {sd:.2f} (95% CI ± {ci:.2f})"


def _per_modality(title: str, rows: dict[str, dict]) -> None:
    """One markdown table: a row per model, a column per removed modality."""
    print(f"\n{title}")
    print("| model | " + " | ".join(f"without {m}" for m in MODALITIES) + " |")
    print("|---|" + "---|" * len(MODALITIES))
    for name, per in rows.items():
        print(f"| {name} | " + " | ".join(_pts(per[m]) for m in MODALITIES) + " |")


def report(s: dict, runs: list[dict], out: Path) -> None:
    """Print the markdown tables of docs/benchmarks.md."""
    n = len(runs)
    print(f"\nTest accuracy %, {n} seeds {[r['seed'] for r in runs]}, mean ± sd (95% CI)")
    print("| model | parameters | test accuracy |")
    print("|---|---|---|")
    first = ["teacher", *sorted(n for n in s["accuracy"] if n.startswith("baseline-")), "student-scratch"]
    for name in [*first, *(n for n in s["accuracy"] if n not in first)]:
        v = s["accuracy"][name]
        print(f"| {name} | {runs[0]['evals'][name]['parameters']:,} | {_pts(v)} |")
    ceiling = {"ceiling: full teacher minus the specialist without it": s["ceiling"]}
    _per_modality("Points lost when one modality is removed at test time", ceiling | s["drop_one_loss"])
    _per_modality("Points lost minus the robust student's (paired per seed; negative = loses less)",
                  s["minus_robust"])
    _per_modality("Test accuracy % with one modality removed at test time", s["without"])
    _per_modality("Accuracy without the modality minus the specialist trained without it (paired; points)",
                  s["minus_specialist"])
    m, sd, _ = s["routed_over_robust_epoch_time"]
    print(f"\nrouted / robust student epoch time (median epoch per seed): {m:.2f} ± {sd:.2f}")
    walls = ", ".join(f"{r['wall_s']:.0f}" for r in runs)
    print(f"wall time per run (s): {walls}; raw results: {out}")


def main() -> None:
    ap = seeded_parser(__doc__, seeds=[0, 1, 2], out="benchmarks/results/missing.json")
    ap.add_argument("--merge", type=Path, nargs="+", default=None,
                    help="combine the runs of several results JSONs (seeds run in parallel) into --out")
    args = ap.parse_args()
    if saved_results(args, summarize, report):
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mmdistill-missing-"))
    runs = []
    for seed in args.seeds:
        runs.append(run_seed(seed, workdir, args.overrides))
        # Partial results after every seed: an interrupted benchmark keeps what it measured.
        write_results(args, "missing", runs, summarize, report, config=str(CONFIG),
                      complete=len(runs) == len(args.seeds))


if __name__ == "__main__":
    main()
