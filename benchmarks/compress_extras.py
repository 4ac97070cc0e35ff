"""Compression extras (issue 4): QAT versus PTQ, unstructured sparsity, in-PyTorch int8.

Per seed, in the run folder of ``benchmarks/compress.py`` (its first pass is run here when the folder
does not hold it yet), the compress and export stages run once more for the small student ``kd``
with pruning off, unstructured sparsity on, QAT on (its bit width chosen from the validation sweep:
the widest at which post-training quantization of the whole model loses more than 1 point) and
torch.ao dynamic int8 measured for comparison. Printed as mean ± sd (95% t-interval) over seeds:

- QAT versus PTQ at the chosen bit width (test accuracy, and minus the fp32 student);
- measured sparsity and the latency of the sparse student versus the dense one on each runtime
  (sparsity buys no speed on dense kernels: the flag says so);
- torch.ao dynamic int8 accuracy minus the fp32 eager student (not deployable, not timed).

Usage:
    .venv/bin/python benchmarks/compress_extras.py --seeds 0 1 2 --workdir DIR_OF_COMPRESS_PY
    .venv/bin/python benchmarks/compress_extras.py --reprint benchmarks/results/compress_extras.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from compress import CONFIG, _cli, _lat, run_args
from foundation import _cpu_model, mean_ci, saved_results

PASS = [
    "stages=[compress, export, evaluate]",
    "compress.source=kd",
    "compress.prune.enabled=false",
    "compress.sparsity.enabled=true",
    "compress.sparsity.sparsity=0.5",
    "compress.qat.enabled=true",
    "compress.qat.max_ptq_drop=1.0",
    "export.variants=[kd, kd-sparse]",
    "export.quantize.dynamic=false",
    "export.quantize.torch_dynamic=true",
]


def run_seed(seed: int, workdir: Path, overrides: list[str]) -> dict:
    run, common = run_args(seed, workdir, overrides)
    t0 = time.perf_counter()
    if not (run / "students" / "kd" / "model.json").exists():
        _cli(["run", *common])
    _cli(["run", *common, *PASS])
    for rel in ("compress/summary.json", "compress/bit_sweep.json", "export/results.json"):
        shutil.copy(run / rel, (run / rel).with_name(f"{Path(rel).stem}-extras.json"))
    comp = json.loads((run / "compress" / "summary.json").read_text())
    sweep = json.loads((run / "compress" / "bit_sweep.json").read_text())["rows"]
    res = json.loads((run / "export" / "results.json").read_text())
    evals = {p.stem: json.loads(p.read_text()) for p in (run / "eval").glob("student-kd*.json")}
    qat = next((n for n in comp["variants"] if "-qat" in n), None)
    bits = comp["variants"][qat]["qat"]["default"] if qat else None
    ptq = next(
        (r["accuracy"] for r in sweep if r["split"] == "test" and r["branch"] == "all" and r["bits"] == bits),
        None,
    )
    return {
        "seed": seed,
        "wall_s": time.perf_counter() - t0,
        "qat_variant": qat,
        "qat_bits": bits,
        "qat_test_accuracy": evals[f"student-{qat}"]["accuracy"] if qat else None,
        "ptq_test_accuracy": ptq,
        "fp32_test_accuracy": evals["student-kd"]["accuracy"],
        "sparsity": comp["variants"]["kd-sparse"]["sparsity"]["overall"],
        "sparse_test_accuracy": evals["student-kd-sparse"]["accuracy"],
        "artifacts": {
            n: {k: a.get(k) for k in ("runtime", "bytes", "accuracy", "latency")}
            for n, a in res["artifacts"].items()
        },
        "flags": res.get("flags", []),
    }


def summarize(runs: list[dict]) -> dict:
    per: dict[str, list[float]] = {}

    def add(key: str, value: float | None) -> None:
        if value is not None:
            per.setdefault(key, []).append(value)

    for r in runs:
        fp32 = r["fp32_test_accuracy"]
        add("qat_bits", r["qat_bits"])
        if r["qat_bits"] is not None:
            add("qat_points_vs_fp32", 100 * (r["qat_test_accuracy"] - fp32))
            add("ptq_points_vs_fp32", 100 * (r["ptq_test_accuracy"] - fp32))
            add("qat_minus_ptq_points", 100 * (r["qat_test_accuracy"] - r["ptq_test_accuracy"]))
        add("sparsity", 100 * r["sparsity"])
        add("sparse_points_vs_fp32", 100 * (r["sparse_test_accuracy"] - fp32))
        a = r["artifacts"]
        for suffix, label in (("", "eager"), (".onnx", "ort_fp32"), (".int8", "ort_int8")):
            for b in (1, 64):
                add(
                    f"sparse_speedup_{label}_b{b}",
                    _lat(a[f"student-kd{suffix}"], b) / _lat(a[f"student-kd-sparse{suffix}"], b),
                )
        add("sparse_flagged_not_faster", sum(f["not_faster"] for f in r["flags"] if "sparse" in f["name"]))
        add("sparse_pairs_compared", sum(1 for f in r["flags"] if "sparse" in f["name"]))
        dyn = a.get("student-kd.torch-dyn8", {}).get("accuracy")
        add("torch_dyn8_points_vs_fp32", None if dyn is None else 100 * (dyn - fp32))
    return per


LABELS = {
    "qat_bits": "bit width chosen for QAT (widest where PTQ loses > 1 point on val)",
    "ptq_points_vs_fp32": "PTQ (whole model) test points vs fp32 student",
    "qat_points_vs_fp32": "QAT test points vs fp32 student",
    "qat_minus_ptq_points": "QAT minus PTQ, test points",
    "sparsity": "unstructured sparsity measured (% of weights zero)",
    "sparse_points_vs_fp32": "sparse student test points vs dense",
    "sparse_speedup_eager_b1": "sparse vs dense, x faster, eager b1",
    "sparse_speedup_eager_b64": "sparse vs dense, x faster, eager b64",
    "sparse_speedup_ort_fp32_b1": "sparse vs dense, x faster, ORT fp32 b1",
    "sparse_speedup_ort_fp32_b64": "sparse vs dense, x faster, ORT fp32 b64",
    "sparse_speedup_ort_int8_b1": "sparse vs dense, x faster, ORT int8 b1",
    "sparse_speedup_ort_int8_b64": "sparse vs dense, x faster, ORT int8 b64",
    "sparse_flagged_not_faster": "sparse artifacts flagged not faster than their dense parent (count)",
    "sparse_pairs_compared": "sparse (artifact, parent) pairs compared (count)",
    "torch_dyn8_points_vs_fp32": "torch.ao dynamic int8 (in PyTorch, not deployable) test points vs fp32",
}


def report(per: dict, runs: list[dict], out: Path) -> None:
    print(f"| measure, student-kd (over {len(runs)} seeds) | mean ± sd (95% CI) |")
    print("|---|---|")
    for key, label in LABELS.items():
        if key in per:
            m, sd, ci = mean_ci(per[key])
            print(f"| {label} | {m:.2f} ± {sd:.2f} (± {ci:.2f}) |")
    print(
        "\nper seed: "
        + "; ".join(
            f"seed {r['seed']}: QAT {r['qat_variant']} {r['qat_test_accuracy']}, PTQ {r['ptq_test_accuracy']}"
            for r in runs
        )
    )
    walls = ", ".join(f"{r['wall_s']:.0f}" for r in runs)
    print(f"wall time per seed (s): {walls}; raw results: {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/compress_extras.json"))
    ap.add_argument(
        "--workdir", type=Path, default=None, help="compress.py's run folders (default: a temp dir)"
    )
    ap.add_argument("--reprint", type=Path, default=None, help="print the table again from a results JSON")
    ap.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        help="combine the runs of several results JSONs (seeds run in parallel) into --out",
    )
    ap.add_argument("overrides", nargs="*", help="config overrides for every run (key=value)")
    args = ap.parse_args()
    if saved_results(args, summarize, report):
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mmdistill-compress-"))
    runs = [run_seed(s, workdir, args.overrides) for s in args.seeds]
    per = summarize(runs)
    result = {
        "benchmark": "compress_extras",
        "date": dt.date.today().isoformat(),
        "config": str(CONFIG),
        "pass_overrides": PASS,
        "machine": {"processor": _cpu_model(), "python": sys.version.split()[0]},
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "seeds": args.seeds,
        "overrides": args.overrides,
        "summary": per,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    report(per, runs, args.out)


if __name__ == "__main__":
    main()
