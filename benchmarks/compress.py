"""Compression benchmark (issue 4): is the compressed student really smaller and really faster?

Per seed, in one run folder: ``mmdistill run benchmarks/configs/compress.yaml seed=S`` trains the
teacher and four distilled students (``kd``, the demo's; ``kd-wide``, 1.6 MB of fp32 weights; and
both with a text CNN instead of the text LSTM: ``kd-cnn``, ``kd-cnn-wide``), compresses ``kd``
(structured pruning + recovery, bit sweep), exports it (ONNX fp32, ORT static and dynamic int8) and
times every artifact, each runtime in its own process; then the compress and export stages run
again with ``compress.source`` set to each other student. Printed as mean ± sd (95% t-interval)
over seeds:

- deployed student (pruned + ORT static int8) batch-1 latency versus the fp32 eager teacher, and
  its test accuracy minus the fp32 eager student's (target: >= 30x faster, within 0.5 points);
  the same for the artifact the pipeline ships (``export/results.json`` ``ship``: the fastest at
  batch 1 within 0.5 points of the eager student);
- ORT int8 versus ORT fp32 of the same student at batch 1 and 64: speed-up, points lost, size
  ratio (target for students with >= 1 MB of fp32 weights: >= 3x faster, <= 0.3 lost, >= 3.8x
  smaller);
- structured pruning: MAC ratio, measured latency ratio (eager and ORT fp32) and points lost after
  recovery (target at 2x fewer MACs: >= 1.6x lower latency, <= 0.3 points lost);
- test accuracy versus weight bits (2-8) per branch.

Usage:
    .venv/bin/python benchmarks/compress.py --seeds 0 1 2 [--out benchmarks/results/compress.json]
    .venv/bin/python benchmarks/compress.py --seeds 0 --out a.json   # seeds in parallel, then
    .venv/bin/python benchmarks/compress.py --merge a.json b.json c.json
    .venv/bin/python benchmarks/compress.py --reprint benchmarks/results/compress.json
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from foundation import machine_info, mean_ci, run_child, saved_results, seeded_parser, write_results

CONFIG = Path(__file__).parent / "configs" / "compress.yaml"
SOURCES = ("kd", "kd-wide", "kd-cnn", "kd-cnn-wide")


def _cli(args: list[str]) -> None:
    run_child([sys.executable, "-m", "mmdistill.cli.main", *args])


def run_args(seed: int, workdir: Path, overrides: list[str]) -> tuple[Path, list[str]]:
    """The run folder of ``seed`` and the ``mmdistill run`` arguments every pass of it shares."""
    name = f"compress-seed{seed}"
    common = [
        str(CONFIG),
        f"seed={seed}",
        "--output-dir",
        str(workdir),
        "--name",
        name,
        "--quiet",
        *overrides,
    ]
    return workdir / name, common


def run_seed(seed: int, workdir: Path, overrides: list[str]) -> dict:
    run, common = run_args(seed, workdir, overrides)
    t0 = time.perf_counter()
    _cli(["run", *common])
    per_source = {"kd": _collect(run, "kd")}
    _stash(run, "kd")
    for source in SOURCES[1:]:
        _cli(["run", *common, "stages=[compress, export, evaluate]", f"compress.source={source}"])
        per_source[source] = _collect(run, source)
        _stash(run, source)
    evals = {p.stem: json.loads(p.read_text()) for p in (run / "eval").glob("*.json") if p.stem != "summary"}
    acc = {n: e["accuracy"] for n, e in evals.items()}
    macs = {n: e.get("macs") for n, e in evals.items()}
    params = {n: e["parameters"] for n, e in evals.items()}
    return {
        "seed": seed,
        "wall_s": time.perf_counter() - t0,
        "eager_accuracy": acc,
        "macs": macs,
        "parameters": params,
        "sources": per_source,
    }


def _stash(run: Path, source: str) -> None:
    """Keep each source's stage outputs: the second pass overwrites compress/ and export/results.json."""
    for rel in ("compress/summary.json", "compress/bit_sweep.json", "export/results.json"):
        src = run / rel
        if src.exists():
            shutil.copy(src, src.with_name(f"{src.stem}-{source}.json"))


def _collect(run: Path, source: str, *, sweep: bool = True) -> dict:
    """One pass's export results, pruning summary and (``sweep``) test rows of the bit sweep."""
    res = json.loads((run / "export" / "results.json").read_text())
    comp = json.loads((run / "compress" / "summary.json").read_text())
    rows = json.loads((run / "compress" / "bit_sweep.json").read_text())["rows"] if sweep else []
    arts = {
        n: {k: a.get(k) for k in ("runtime", "bytes", "accuracy", "val_accuracy", "latency")}
        for n, a in res["artifacts"].items()
    }
    pruned = comp["variants"].get(f"{source}-pruned", {}).get("pruning", {})
    return {
        "artifacts": arts,
        "flags": res.get("flags", []),
        "ship": res.get("ship"),
        "pruning": {
            k: pruned.get(k)
            for k in (
                "params_before",
                "params_after",
                "macs_before",
                "macs_after",
                "val_accuracy_before_recovery",
            )
        },
        "sweep": [r for r in rows if r["split"] == "test"],
    }


def _lat(art: dict, b: int) -> float:
    return art["latency"][f"b{b}"]["median_ms"]


def _sources(runs: list[dict]) -> list[str]:
    """The students every run measured (results written before kd-cnn* was added hold two)."""
    return [src for src in SOURCES if all(src in r["sources"] for r in runs)]


def add_pruning(add: Callable[[str, float], None], prefix: str, pruning: dict, arts: dict, s: str,
                acc_lost: float) -> None:
    """Pruned-vs-unpruned measures of student ``s``: MACs and parameter ratios, latency ratios per
    runtime and batch size, and ``acc_lost`` (a fraction) as points, each under ``prefix + name``."""
    add(f"{prefix}macs_ratio", pruning["macs_before"]["total"] / pruning["macs_after"]["total"])
    add(f"{prefix}params_ratio", pruning["params_before"] / pruning["params_after"])
    for rt, suffix in (("eager", ""), ("ort_fp32", ".onnx"), ("ort_int8", ".int8")):
        for b in (1, 64):
            ratio = _lat(arts[s + suffix], b) / _lat(arts[f"{s}-pruned{suffix}"], b)
            add(f"{prefix}latency_ratio_{rt}_b{b}", ratio)
    add(f"{prefix}points_lost_after_recovery", 100 * acc_lost)


def summarize(runs: list[dict]) -> dict:
    out: dict = {}
    for src in _sources(runs):
        per: dict[str, list[float]] = {}

        def add(key: str, value: float, per=per) -> None:
            per.setdefault(key, []).append(value)

        for r in runs:
            arts = r["sources"][src]["artifacts"]
            s = f"student-{src}"
            teacher = arts["teacher"]
            eager_acc = r["eager_accuracy"][s]
            add("fp32_weight_bytes", float(arts[s]["bytes"]))
            deployed = arts[f"{s}-pruned.int8"]
            add("deployed_vs_teacher_speedup_b1", _lat(teacher, 1) / _lat(deployed, 1))
            add("deployed_vs_teacher_speedup_b64", _lat(teacher, 64) / _lat(deployed, 64))
            add("deployed_points_vs_fp32_student", 100 * (deployed["accuracy"] - eager_acc))
            shipped = arts[r["sources"][src]["ship"]["name"]]
            add("shipped_vs_teacher_speedup_b1", _lat(teacher, 1) / _lat(shipped, 1))
            add("shipped_points_vs_fp32_student", 100 * (shipped["accuracy"] - eager_acc))
            for kind in ("int8", "dyn8"):
                q, f = arts[f"{s}.{kind}"], arts[f"{s}.onnx"]
                for b in (1, 64):
                    add(f"{kind}_vs_fp32_ort_speedup_b{b}", _lat(f, b) / _lat(q, b))
                add(f"{kind}_points_lost", 100 * (f["accuracy"] - q["accuracy"]))
                add(f"{kind}_size_ratio", f["bytes"] / q["bytes"])
            add_pruning(add, "pruned_", r["sources"][src]["pruning"], arts, s,
                        eager_acc - r["eager_accuracy"][f"{s}-pruned"])
            add(
                "pruned_points_lost_before_recovery_val",
                100 * (r["sources"][src]["pruning"]["val_accuracy_before_recovery"] or 0),
            )
            add("ort_fp32_vs_eager_speedup_b1", _lat(arts[s], 1) / _lat(arts[f"{s}.onnx"], 1))
            add("teacher_b1_ms", _lat(teacher, 1))
            add("deployed_b1_ms", _lat(deployed, 1))
        sweep: dict[str, dict[int, list[float]]] = {}
        for r in runs:
            for row in r["sources"][src]["sweep"]:
                sweep.setdefault(row["branch"], {}).setdefault(row["bits"], []).append(100 * row["accuracy"])
        out[src] = {"metrics": per, "sweep": sweep}
    return out


def _fmt(values: list[float], digits: int = 2) -> str:
    m, sd, ci = mean_ci(values)
    return f"{m:.{digits}f} ± {sd:.{digits}f} (95% CI ± {ci:.{digits}f})"


LABELS = {
    "fp32_weight_bytes": ("fp32 weights on disk (bytes)", 0),
    "deployed_vs_teacher_speedup_b1": (
        "deployed (pruned + ORT int8) vs fp32 eager teacher, x faster at b1",
        1,
    ),
    "deployed_vs_teacher_speedup_b64": ("deployed vs fp32 eager teacher, x faster at b64", 1),
    "deployed_points_vs_fp32_student": ("deployed test acc minus fp32 eager student (points)", 2),
    "shipped_vs_teacher_speedup_b1": (
        "shipped artifact (export.ship) vs fp32 eager teacher, x faster at b1",
        1,
    ),
    "shipped_points_vs_fp32_student": ("shipped artifact test acc minus fp32 eager student (points)", 2),
    "int8_vs_fp32_ort_speedup_b1": ("ORT static int8 vs ORT fp32, x faster at b1", 2),
    "int8_vs_fp32_ort_speedup_b64": ("ORT static int8 vs ORT fp32, x faster at b64", 2),
    "int8_points_lost": ("ORT static int8 points lost vs ORT fp32", 2),
    "int8_size_ratio": ("ORT static int8, x smaller file", 2),
    "dyn8_vs_fp32_ort_speedup_b1": ("ORT dynamic int8 vs ORT fp32, x faster at b1", 2),
    "dyn8_vs_fp32_ort_speedup_b64": ("ORT dynamic int8 vs ORT fp32, x faster at b64", 2),
    "dyn8_points_lost": ("ORT dynamic int8 points lost vs ORT fp32", 2),
    "dyn8_size_ratio": ("ORT dynamic int8, x smaller file", 2),
    "pruned_macs_ratio": ("pruning: x fewer MACs", 2),
    "pruned_params_ratio": ("pruning: x fewer parameters", 2),
    "pruned_latency_ratio_eager_b1": ("pruning: x lower latency, eager b1", 2),
    "pruned_latency_ratio_eager_b64": ("pruning: x lower latency, eager b64", 2),
    "pruned_latency_ratio_ort_fp32_b1": ("pruning: x lower latency, ORT fp32 b1", 2),
    "pruned_latency_ratio_ort_fp32_b64": ("pruning: x lower latency, ORT fp32 b64", 2),
    "pruned_latency_ratio_ort_int8_b1": ("pruning: x lower latency, ORT int8 b1", 2),
    "pruned_latency_ratio_ort_int8_b64": ("pruning: x lower latency, ORT int8 b64", 2),
    "pruned_points_lost_after_recovery": ("pruning: test points lost after recovery (eager)", 2),
    "pruned_points_lost_before_recovery_val": (
        "pruning: val accuracy % right after pruning, before recovery",
        2,
    ),
    "ort_fp32_vs_eager_speedup_b1": ("ORT fp32 vs eager, same student, x faster at b1", 2),
    "teacher_b1_ms": ("fp32 eager teacher b1 median (ms)", 3),
    "deployed_b1_ms": ("deployed student b1 median (ms)", 3),
}


def report(s: dict, runs: list[dict], out: Path) -> None:
    n, sources = len(runs), _sources(runs)
    print(f"| measure (over {n} seeds) | " + " | ".join(f"student-{src}" for src in sources) + " |")
    print("|---|" + "---|" * len(sources))
    for key, (label, digits) in LABELS.items():
        cells = [_fmt(s[src]["metrics"][key], digits) if key in s[src]["metrics"] else "-" for src in sources]
        print(f"| {label} | " + " | ".join(cells) + " |")
    for src in sources:
        sweep = s[src]["sweep"]
        bits = sorted({b for per in sweep.values() for b in per if b != 32})
        print(f"\ntest accuracy % versus weight bits, student-{src} (fp32: {_fmt(sweep['none'][32])}):")
        print("| branch | " + " | ".join(f"{b} bits" for b in bits) + " |")
        print("|---|" + "---|" * len(bits))
        for branch, per in sweep.items():
            if branch == "none":
                continue
            print(
                f"| {branch} | "
                + " | ".join(f"{mean_ci(per[b])[0]:.2f} ± {mean_ci(per[b])[1]:.2f}" for b in bits)
                + " |"
            )
    walls = ", ".join(f"{r['wall_s']:.0f}" for r in runs)
    print(f"\nwall time per seed (s): {walls}; raw results: {out}")


def main() -> None:
    ap = seeded_parser(__doc__, seeds=[0, 1, 2], out="benchmarks/results/compress.json")
    ap.add_argument("--merge", type=Path, nargs="+", default=None,
                    help="combine the runs of several results JSONs (seeds run in parallel) into --out")
    args = ap.parse_args()
    if saved_results(args, summarize, report):
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mmdistill-compress-"))
    runs = []
    for seed in args.seeds:
        runs.append(run_seed(seed, workdir, args.overrides))
        partial = {"benchmark": "compress", "date": dt.date.today().isoformat(), "machine": machine_info(),
                   "seeds": [r["seed"] for r in runs], "complete": False, "runs": runs}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(partial, indent=2))  # a crash keeps the finished seeds
    write_results(args, "compress", runs, summarize, report, config=str(CONFIG), complete=True)


if __name__ == "__main__":
    main()
