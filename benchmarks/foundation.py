"""Foundation benchmark: teacher, unimodal baselines and scratch student on the built-in data.

Runs ``mmdistill run`` with the packaged default config once per seed (each in its own process),
then prints mean, standard deviation and a 95% t-interval of test accuracy per model, with
parameter counts and batch-1/batch-64 eager CPU latency (median over the run's repetitions).

Usage:
    .venv/bin/python benchmarks/foundation.py --seeds 0 1 2 [--out benchmarks/results/foundation.json]

Raw per-seed results go to the JSON file; the printed markdown table is what docs/benchmarks.md
shows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Two-sided 95% Student-t quantiles for n-1 degrees of freedom (n = number of seeds).
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def _cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (platform.processor() is empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine_info() -> dict[str, object]:
    """The ``machine`` record of a seeded benchmark's results: CPU model, cores, platform, Python, torch."""
    import os
    from importlib import metadata

    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": metadata.version("torch")}


def run_child(cmd: list[str]) -> None:
    """Run one benchmark child process and stop it when this script is stopped.

    ``subprocess.run`` alone leaves the child running after a SIGTERM to the script: a killed
    benchmark's ``mmdistill run`` then keeps writing into a run folder that the next benchmark
    reuses. Here SIGTERM becomes SystemExit, and any exit terminates the child first.
    """
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    proc = subprocess.Popen(cmd)
    try:
        code = proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        signal.signal(signal.SIGTERM, previous)
    if code != 0:
        raise subprocess.CalledProcessError(code, cmd)


def merge_results(paths: list[Path], summarize: Callable[[list[dict]], Any]) -> dict:
    """One results JSON from several (seeds run in parallel): runs sorted by seed, summary redone."""
    parts = [json.loads(p.read_text()) for p in paths]
    runs = sorted((r for part in parts for r in part["runs"]), key=lambda r: r["seed"])
    return {**parts[0], "seeds": [r["seed"] for r in runs], "runs": runs, "summary": summarize(runs),
            "merged_from": [str(p) for p in paths], "command": " ; ".join(p["command"] for p in parts)}


def saved_results(args: argparse.Namespace, summarize: Callable[[list[dict]], Any],
                  report: Callable[[Any, list[dict], Path], None], *, rewrite: bool = False) -> bool:
    """Serve ``--merge`` (results of seeds run in parallel, into ``--out``) and ``--reprint``.

    Both recompute the summary from the stored runs and print it with ``report(summary, runs, path)``;
    ``rewrite`` (or ``--reprint FILE --rewrite``) also stores the recomputed summary back into the
    reprinted file, for a summarizer that gained a measure its stored runs already hold. Returns True when
    one of the two was asked for (the benchmark then runs nothing).
    """
    if getattr(args, "merge", None) is not None:
        merged = merge_results(args.merge, summarize)
        args.out.write_text(json.dumps(merged, indent=2))
        report(merged["summary"], merged["runs"], args.out)
        return True
    if args.reprint is not None:
        old = json.loads(args.reprint.read_text())
        old["summary"] = summarize(old["runs"])
        if rewrite or getattr(args, "rewrite", False):
            args.reprint.write_text(json.dumps(old, indent=2))
        report(old["summary"], old["runs"], args.reprint)
        return True
    return False


def write_results(args: argparse.Namespace, benchmark: str, runs: list[dict],
                  summarize: Callable[[list[dict]], Any], report: Callable[[Any, list[dict], Path], None],
                  **fields: Any) -> dict:
    """Write a seeded benchmark's results JSON to ``args.out`` and print its tables.

    The record: ``benchmark``, ``date``, ``machine``, ``command``, ``seeds``, ``overrides`` (when
    the parser takes them), ``fields``, then ``summary`` (recomputed from ``runs``) and ``runs``.
    """
    result: dict[str, Any] = {
        "benchmark": benchmark,
        "date": dt.date.today().isoformat(),
        "machine": machine_info(),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "seeds": [r["seed"] for r in runs],
    }
    if getattr(args, "overrides", None) is not None:
        result["overrides"] = args.overrides
    result |= fields
    result["summary"] = summarize(runs)
    result["runs"] = runs
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    report(result["summary"], runs, args.out)
    return result


def seeded_parser(doc: str | None, *, seeds: list[int], out: str) -> argparse.ArgumentParser:
    """The arguments every seeded benchmark takes: ``--seeds``, ``--out``, ``--workdir``,
    ``--reprint`` (print the tables again from a results JSON; ``--rewrite`` stores the recomputed
    summary back into it) and config ``overrides``."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=seeds)
    ap.add_argument("--out", type=Path, default=Path(out))
    ap.add_argument("--workdir", type=Path, default=None, help="where runs go (default: a temp dir)")
    ap.add_argument("--reprint", type=Path, default=None, help="print the table again from a results JSON")
    ap.add_argument("--rewrite", action="store_true",
                    help="with --reprint: store the recomputed summary back into the results JSON")
    ap.add_argument("overrides", nargs="*", help="config overrides for every run (key=value)")
    return ap


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean, sample standard deviation and 95% half-interval (t-distribution)."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, float("nan"), float("nan")
    sd = statistics.stdev(values)
    return m, sd, _T95.get(len(values) - 1, 1.96) * sd / math.sqrt(len(values))


def run_seed(seed: int, workdir: Path, overrides: list[str]) -> dict:
    name = f"foundation-seed{seed}"
    cmd = [sys.executable, "-m", "mmdistill.cli.main", "run", "default", f"seed={seed}",
           "--output-dir", str(workdir), "--name", name, "--quiet", *overrides]
    t0 = time.perf_counter()
    run_child(cmd)
    wall = time.perf_counter() - t0
    summary = json.loads((workdir / name / "eval" / "summary.json").read_text())
    return {"seed": seed, "wall_s": wall, "summary": summary}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/foundation.json"))
    ap.add_argument("--workdir", type=Path, default=None, help="where runs go (default: a temp dir)")
    ap.add_argument("overrides", nargs="*", help="config overrides passed to every run (key=value)")
    args = ap.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mmdistill-bench-"))
    runs = [run_seed(s, workdir, args.overrides) for s in args.seeds]

    models = [r["model"] for r in runs[0]["summary"]]
    table = []
    for model in models:
        rows = [next(r for r in run["summary"] if r["model"] == model) for run in runs]
        acc = mean_ci([r["accuracy"] for r in rows])
        b1 = statistics.median(r["latency_b1_ms"] for r in rows if r.get("latency_b1_ms") is not None)
        b64 = statistics.median(r["latency_b64_ms"] for r in rows if r.get("latency_b64_ms") is not None)
        table.append({
            "model": model, "modalities": rows[0]["modalities"], "parameters": rows[0]["parameters"],
            "accuracy_mean": acc[0], "accuracy_sd": acc[1], "accuracy_ci95": acc[2],
            "accuracies": [r["accuracy"] for r in rows], "latency_b1_ms_median": b1,
            "latency_b64_ms_median": b64,
        })
    result = {
        "benchmark": "foundation",
        "date": dt.date.today().isoformat(),
        "machine": {"platform": platform.platform(), "processor": _cpu_model(),
                    "cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "seeds": args.seeds,
        "runs": runs,
        "table": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))

    print(f"| model | modalities | params | test acc (mean ± sd, 95% CI) over {len(runs)} seeds "
          "| b1 ms | b64 ms |")
    print("|---|---|---|---|---|---|")
    for t in table:
        m, sd, ci = (100 * t[k] for k in ("accuracy_mean", "accuracy_sd", "accuracy_ci95"))
        acc = f"{m:.2f} ± {sd:.2f} (± {ci:.2f})"
        print(f"| {t['model']} | {t['modalities']} | {t['parameters']:,} | {acc} "
              f"| {t['latency_b1_ms_median']:.2f} | {t['latency_b64_ms_median']:.2f} |")
    walls = [r["wall_s"] for r in runs]
    print(f"\nwall time per run (s): {', '.join(f'{w:.0f}' for w in walls)}; raw results: {args.out}")


if __name__ == "__main__":
    main()
