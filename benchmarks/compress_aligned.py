"""Block-aligned pruning (issue 4): does pruning pay on ONNX Runtime once widths are multiples of 16?

Per seed, in the run folder of ``benchmarks/compress.py`` (which must have run there first), the
compress and export stages run again for each text-CNN student (``kd-cnn``, ``kd-cnn-wide``) with
the same pruning ratio (30%) but ``compress.prune.round_to=16``: every pruned width is a multiple
of 16, the channel block of ONNX Runtime's AVX-512 convolutions (the bit sweep is off: it does not
depend on pruning). Each student is pruned once per recovery:

- ``kd4``: the recovery of ``compress.py`` (4 epochs of kd_ce, alpha 0.5, T 4, teacher cached);
- ``fm24`` (small ``kd-cnn`` only): 24 epochs of function matching
  (``compress.prune.recover.mixup=1.0``, alpha 0.9, T 4: multimodal input mixup with the teacher
  online, Beyer et al. 2022), twice the 12 epochs the unpruned student was distilled for;
- ``fm48`` (small ``kd-cnn`` only, whose 32-wide layers halve to 16): the same for 48 epochs;
- ``kd4@r0.2`` (``kd-cnn-wide`` only): ``kd4`` after pruning 20% of the channels instead of 30%.
  With ``round_to=16`` that removes exactly half of the wide student's MACs (30% removes 3.02x),
  the pruning the latency target names;
- ``fm24@r0.2`` (``kd-cnn-wide`` only): the same 2x pruning recovered by ``fm24``, to see whether a
  longer recovery brings it within the target's 0.3 points.

Printed as mean ± sd (95% t-interval) over seeds, per student and recovery:

- MACs and parameters of the pruned student against the unpruned one;
- pruned over unpruned latency on each runtime (eager, ORT fp32, ORT static int8) at batch 1 and 64
  (target at 2x fewer MACs: >= 1.6x lower latency) and test points lost after recovery (<= 0.3);
- the deployed student (pruned + ORT static int8), the pruned student with ORT dynamic int8
  (int8 MatMul/Gemm/Gather, convolutions left in float32) and the shipped artifact
  (``export.ship``, the fastest within 0.5 points on the validation split) against the fp32 eager
  teacher at batch 1 (target >= 30x, within 0.5 points of the fp32 student).

Usage:
    .venv/bin/python benchmarks/compress_aligned.py --seeds 0 1 2 --workdir DIR_OF_COMPRESS_PY
    .venv/bin/python benchmarks/compress_aligned.py --merge a.json b.json   # seeds run apart
    .venv/bin/python benchmarks/compress_aligned.py --reprint benchmarks/results/compress_aligned.json
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from compress import CONFIG, _cli, _collect, _fmt, _lat, add_pruning, run_args
from foundation import saved_results, seeded_parser, write_results

ROUND_TO = 16
PASS = [
    "stages=[compress, export, evaluate]",
    f"compress.prune.round_to={ROUND_TO}",
    "compress.sweep.enabled=false",
]
FM = ["compress.prune.recover.mixup=1.0", "compress.prune.recover.alpha=0.9"]
RECOVERIES: dict[str, list[str]] = {
    "kd4": [],  # compress.yaml's own recovery
    "fm24": ["compress.prune.recover.epochs=24", *FM],
    "fm48": ["compress.prune.recover.epochs=48", *FM],
    "kd4@r0.2": ["compress.prune.ratio=0.2"],
    "fm24@r0.2": ["compress.prune.ratio=0.2", "compress.prune.recover.epochs=24", *FM],
}
COLUMNS = [("kd-cnn", "kd4"), ("kd-cnn", "fm24"), ("kd-cnn", "fm48"), ("kd-cnn-wide", "kd4"),
           ("kd-cnn-wide", "kd4@r0.2"), ("kd-cnn-wide", "fm24@r0.2")]


def _columns(runs: list[dict]) -> list[tuple[str, str]]:
    """The (student, recovery) columns every run holds (results written before fm48 lack it)."""
    return [c for c in COLUMNS if all(c[1] in r["sources"].get(c[0], {}) for r in runs)]


def run_seed(seed: int, workdir: Path, overrides: list[str]) -> dict:
    run, common = run_args(seed, workdir, overrides)
    if not (run / "students" / "kd-cnn" / "model.json").exists():
        raise SystemExit(
            f"{run} holds no kd-cnn student: run benchmarks/compress.py with --workdir {workdir} first"
        )
    t0 = time.perf_counter()
    per_source: dict[str, dict] = {}
    for source, recovery in COLUMNS:
        _cli(["run", *common, *PASS, *RECOVERIES[recovery], f"compress.source={source}"])
        got = _collect(run, source, sweep=False)  # the sweep is off in this pass
        evals = {p.stem: json.loads(p.read_text()) for p in (run / "eval").glob(f"student-{source}*.json")}
        got["eager_accuracy"] = {
            n: evals[n]["accuracy"] for n in (f"student-{source}", f"student-{source}-pruned")
        }
        got["channels"] = json.loads((run / "compress" / "summary.json").read_text())["variants"][
            f"{source}-pruned"
        ]["pruning"]["channels"]
        got["recovery_overrides"] = RECOVERIES[recovery]
        per_source.setdefault(source, {})[recovery] = got
    return {"seed": seed, "wall_s": time.perf_counter() - t0, "sources": per_source}


def summarize(runs: list[dict]) -> dict:
    out: dict = {}
    for src, rec in _columns(runs):
        per: dict[str, list[float]] = {}
        for r in runs:
            got = r["sources"][src][rec]
            arts, p, acc = got["artifacts"], got["pruning"], got["eager_accuracy"]
            s = f"student-{src}"

            def add(key: str, value: float, per: dict = per) -> None:
                per.setdefault(key, []).append(value)

            add_pruning(add, "", p, arts, s, acc[s] - acc[f"{s}-pruned"])
            teacher_b1 = _lat(arts["teacher"], 1)
            deployed = arts[f"{s}-pruned.int8"]
            add("deployed_vs_teacher_b1", teacher_b1 / _lat(deployed, 1))
            add("deployed_points_vs_fp32_student", 100 * (deployed["accuracy"] - acc[s]))
            add("deployed_b1_ms", _lat(deployed, 1))
            dyn8 = arts[f"{s}-pruned.dyn8"]
            add("pruned_dyn8_vs_teacher_b1", teacher_b1 / _lat(dyn8, 1))
            add("pruned_dyn8_points_vs_fp32_student", 100 * (dyn8["accuracy"] - acc[s]))
            add("pruned_ort_fp32_b1_ms", _lat(arts[f"{s}-pruned.onnx"], 1))
            add("pruned_fp32_vs_teacher_b1", teacher_b1 / _lat(arts[f"{s}-pruned.onnx"], 1))
            shipped = arts[got["ship"]["name"]]
            add("shipped_vs_teacher_b1", teacher_b1 / _lat(shipped, 1))
            add("shipped_points_vs_fp32_student", 100 * (shipped["accuracy"] - acc[s]))
            add("shipped_is_pruned", float(got["ship"]["name"].startswith(f"student-{src}-pruned")))
        out[f"{src}/{rec}"] = per
    return out


LABELS = {
    "macs_ratio": ("pruning: x fewer MACs", 2),
    "params_ratio": ("pruning: x fewer parameters", 2),
    "latency_ratio_eager_b1": ("pruning: x lower latency, eager b1", 2),
    "latency_ratio_eager_b64": ("pruning: x lower latency, eager b64", 2),
    "latency_ratio_ort_fp32_b1": ("pruning: x lower latency, ORT fp32 b1", 2),
    "latency_ratio_ort_fp32_b64": ("pruning: x lower latency, ORT fp32 b64", 2),
    "latency_ratio_ort_int8_b1": ("pruning: x lower latency, ORT int8 b1", 2),
    "latency_ratio_ort_int8_b64": ("pruning: x lower latency, ORT int8 b64", 2),
    "points_lost_after_recovery": ("pruning: test points lost after recovery (eager)", 2),
    "deployed_vs_teacher_b1": (
        "deployed (pruned + ORT static int8) vs fp32 eager teacher, x faster at b1", 1),
    "deployed_points_vs_fp32_student": ("deployed test acc minus fp32 eager student (points)", 2),
    "deployed_b1_ms": ("deployed student b1 median (ms)", 3),
    "pruned_dyn8_vs_teacher_b1": (
        "pruned + ORT dynamic int8 (convs fp32) vs fp32 eager teacher, x faster at b1", 1),
    "pruned_dyn8_points_vs_fp32_student": (
        "pruned + ORT dynamic int8 test acc minus fp32 eager student (points)", 2),
    "pruned_ort_fp32_b1_ms": ("pruned student, ORT fp32 b1 median (ms)", 3),
    "pruned_fp32_vs_teacher_b1": ("pruned student, ORT fp32 vs fp32 eager teacher, x faster at b1", 1),
    "shipped_vs_teacher_b1": ("shipped artifact (export.ship) vs fp32 eager teacher, x faster at b1", 1),
    "shipped_points_vs_fp32_student": ("shipped artifact test acc minus fp32 eager student (points)", 2),
    "shipped_is_pruned": ("shipped artifact is a pruned one (share of seeds)", 2),
}


def report(s: dict, runs: list[dict], out: Path) -> None:
    columns = _columns(runs)
    print(
        f"| measure, round_to={ROUND_TO} (over {len(runs)} seeds) | "
        + " | ".join(f"student-{src}, {rec}" for src, rec in columns)
        + " |"
    )
    print("|---|" + "---|" * len(columns))
    for key, (label, digits) in LABELS.items():
        cells = [_fmt(s[f"{src}/{rec}"][key], digits) for src, rec in columns]
        print(f"| {label} | " + " | ".join(cells) + " |")
    shown: dict[str, dict] = {}
    for src, rec in columns:  # the pruned widths, once per student and pruning ratio
        got = runs[0]["sources"][src][rec]
        widths = {k: v for per in got["channels"].values() for k, v in per.items()}
        if shown.get(src) == widths:
            continue
        shown[src] = widths
        print(
            f"\n{src}, {rec} widths (before -> after): "
            + ", ".join(f"{k.split('.', 1)[1]} {a}->{b}" for k, (a, b) in widths.items())
        )
    walls = ", ".join(f"{r['wall_s']:.0f}" for r in runs)
    print(f"\nwall time per seed (s): {walls}; raw results: {out}")


def main() -> None:
    ap = seeded_parser(__doc__, seeds=[0, 1, 2], out="benchmarks/results/compress_aligned.json")
    ap.add_argument("--merge", type=Path, nargs="+", default=None,
                    help="combine the runs of several results JSONs into --out, recomputing the summary")
    args = ap.parse_args()
    if saved_results(args, summarize, report):
        return
    if args.workdir is None:
        raise SystemExit("--workdir: the folder benchmarks/compress.py ran in (its run folders are reused)")
    runs = [run_seed(seed, args.workdir, args.overrides) for seed in args.seeds]
    write_results(args, "compress_aligned", runs, summarize, report, config=str(CONFIG), round_to=ROUND_TO,
                  recoveries=RECOVERIES)

if __name__ == "__main__":
    main()
