"""Scale benchmark (issue 7): streamed vs in-memory training, and 1 vs 2 processes, on a 10x train split.

Build (once, cached in ``--workdir/data``, reused while its stamp matches): the built-in ``mmdigits``
dataset written out as a manifest of real files (PNG images, 16 kHz WAV audio, text in the
manifest) whose train split holds ``--factor`` copies of every row: copy 0 is the row exactly as
``load_builtin`` gives it, copies 1..k-1 are new draws of the dataset's own degradations from the
stored clean asset (``degrade_image``: shift, noise and the row's heavy kind; plus a small rotation;
``degrade_audio``: speed, gain, time shift, additive noise at a random SNR and the row's heavy kind;
``typo``: one character edit with probability ``TEXT_TYPO_P``), seeded by ``--aug-seed``, the row
and the copy. Val and test rows are written once, unaugmented. Both the ``factor``-x manifest and
the 1x manifest (copy 0 only, sharing the same files) are packed with ``pack_manifest``.

Measurements, every one a fresh ``mmdistill run benchmarks/configs/scale.yaml`` process (one epoch
of the scratch student, ``stages=[student]``, no evaluation stage), per seed:

A. factor {1, k} x mode {memory (``data.stream: false``), stream (``data.stream: true``)}, one
   process, 1 thread: peak RSS of the process (``os.wait4``), wall time, data-stage time, the
   epoch's train samples/s (``train/samples_per_s`` in ``metrics.jsonl``) and a check that the
   epoch saw every train row (exactly once).
B. the k-x epoch of each ``--ddp-modes`` mode under ``torchrun --standalone --nproc_per_node=2``
   with 1 thread per process, against 1 process x 1 thread (the run of part A) and 1 process x 2
   threads (the fair single-process use of 2 cores): samples/s and their ratios.

What the run itself does not log is read by a measuring plugin, this very module imported in the
child (``plugins=[scale]``, enabled by ``MMDISTILL_SCALE_PROBE=1``): it times the data stage, counts
the rows (and distinct ids) every training step receives, logs ``train/rows_seen`` per epoch and
writes each rank's own peak RSS to ``RUN/scale_probe/``. It changes no number of the run.

Printed as mean ± sd (95% t-interval) over seeds, with the machine's core count and CPU model.

Usage:
    .venv/bin/python benchmarks/scale.py --seeds 0 1 2 --workdir W [--factor 10] [--out PATH]
    .venv/bin/python benchmarks/scale.py --quick --workdir W --out /tmp/scale-quick.json  # 2 seeds, ~2 min
    .venv/bin/python benchmarks/scale.py --reprint benchmarks/results/scale.json          # tables again
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from foundation import _cpu_model, mean_ci

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "configs" / "scale.yaml"
PROBE_ENV = "MMDISTILL_SCALE_PROBE"
PROBE_DIR = "scale_probe"
STAGE = "student-scratch"
BUILD_VERSION = 2  # bump when the build's output changes: cached builds with another stamp are rebuilt
TEXT_TYPO_P = 0.5  # share of augmented copies whose text gets one typo
MAX_ROTATION_DEG = 10.0
QUICK = {"factor": 2, "limits": {"train": 160, "val": 64, "test": 64}}
MODES = {"memory": "false", "stream": "true"}


# --------------------------------------------------------------------------------------------------
# Build: the augmented manifest and its shards
# --------------------------------------------------------------------------------------------------

def _copy_seed(aug_seed: int, row_key: int, copy: int) -> int:
    """A 32-bit seed for copy ``copy`` of the row ``row_key`` (a stable hash of its id)."""
    import numpy as np

    return int(np.random.SeedSequence([aug_seed, row_key, copy]).generate_state(1)[0])


def _augmented(sample: Any, asset: Any, seed: int) -> tuple[Any, Any, str]:
    """New draws of the row's degradations from the clean asset: (image uint8, audio float32, text)."""
    import random

    import numpy as np
    from PIL import Image

    from mmdistill.data.datasets.degrade import degrade_audio, degrade_image, typo

    kinds = sample.meta["degradation"]
    rng = np.random.default_rng(seed)
    clean = Image.fromarray(asset.images[sample.meta["image_index"]])
    angle = float(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
    rotated = np.asarray(clean.rotate(angle, resample=Image.Resampling.BILINEAR))
    image = degrade_image(rotated, seed, kinds.get("image"))
    audio = degrade_audio(asset.clips[sample.meta["clip_index"]], seed, kinds.get("audio"),
                          sample_rate=sample.sample_rate)
    text_rng = random.Random(seed)
    text = typo(sample.text, text_rng) if text_rng.random() < TEXT_TYPO_P else sample.text
    return image, audio, text


def _write_row(media: Path, name: str, image: Any, audio: Any, rate: int) -> tuple[str, str]:
    """Write one PNG and one 16-bit WAV; returns their paths relative to the manifest folder."""
    import soundfile as sf
    from PIL import Image

    Image.fromarray(image).save(media / f"{name}.png")
    sf.write(media / f"{name}.wav", audio, rate, subtype="PCM_16")
    return f"media/{name}.png", f"media/{name}.wav"


def _rows(factor: int, aug_seed: int, limits: dict[str, int] | None, media: Path) -> Iterator[dict]:
    """Manifest rows of every split, writing their files: train x ``factor``, val/test once.

    The train split is written copy by copy (all rows' copy 0, then all rows' copy 1, ...), so a
    row's copies do not share a Parquet row group and the 1x split is the first block.
    """
    from mmdistill.data.datasets.builtin import CLASS_NAMES, _load_asset, load_builtin

    asset = _load_asset()  # the clean images and clips the degradations start from
    for split in ("train", "val", "test"):
        samples = load_builtin(split, limit=(limits or {}).get(split))
        for k in range(factor if split == "train" else 1):
            for s in samples:
                if k == 0:
                    image, audio, text = s.image, s.audio, s.text
                else:
                    image, audio, text = _augmented(s, asset, _copy_seed(aug_seed, _stable(s.id), k))
                name = f"{s.id}-c{k}"
                img, wav = _write_row(media, name, image, audio, s.sample_rate)
                yield {"id": name, "split": split, "label": CLASS_NAMES[s.label], "text": text,
                       "image": img, "audio": wav, "copy": k}


def _stable(text: str) -> int:
    """A process-independent 32-bit hash (``hash()`` is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def _stamp(factor: int, aug_seed: int, limits: dict[str, int] | None) -> dict:
    from mmdistill.data.datasets.builtin import builtin_info

    return {"build_version": BUILD_VERSION, "factor": factor, "aug_seed": aug_seed, "limits": limits,
            "builtin_version": builtin_info()["version"], "text_typo_p": TEXT_TYPO_P,
            "max_rotation_deg": MAX_ROTATION_DEG}


def build(workdir: Path, factor: int, aug_seed: int, limits: dict[str, int] | None) -> dict:
    """The ``factor``-x and 1x shard folders under ``workdir/data``, built unless the stamp matches.

    Returns ``{"shards": {factor: path, 1: path}, "rows": {...}, "build_s": seconds or None}``.
    """
    from mmdistill.data.shards import read_index
    from mmdistill.data.shards_pack import pack_manifest

    root = workdir / "data"
    stamp = _stamp(factor, aug_seed, limits)
    shards = {factor: root / f"shards-x{factor}", 1: root / "shards-x1"}
    stamp_file = root / "stamp.json"
    done = (stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp
            and all((p / "index.json").is_file() for p in shards.values()))
    build_s = None
    if not done:
        t0 = time.perf_counter()
        shutil.rmtree(root, ignore_errors=True)
        (root / "media").mkdir(parents=True)
        rows = list(_rows(factor, aug_seed, limits, root / "media"))
        for f, path in shards.items():
            manifest = root / f"manifest-x{f}.jsonl"
            kept = [r for r in rows if r["copy"] < f]
            manifest.write_text("".join(json.dumps(r) + "\n" for r in kept))
            pack_manifest(manifest, path, overwrite=True, progress=False)
        stamp_file.write_text(json.dumps(stamp, indent=2))
        build_s = time.perf_counter() - t0
        print(f"built {root} in {build_s:.0f} s", flush=True)
    else:
        print(f"reusing the build in {root} (stamp matches)", flush=True)
    sizes = {f: {s: read_index(p).rows(s) for s in ("train", "val", "test")} for f, p in shards.items()}
    disk = {f: sum(q.stat().st_size for q in p.iterdir()) for f, p in shards.items()}
    return {"shards": shards, "rows": sizes, "shard_bytes": disk, "build_s": build_s, "stamp": stamp}


# --------------------------------------------------------------------------------------------------
# The measuring plugin (runs inside each `mmdistill run` child)
# --------------------------------------------------------------------------------------------------

_PROBE: dict[str, Any] = {"epochs": [], "ids": set()}


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _write_probe() -> None:
    """At exit: this rank's peak RSS, data-stage time and per-epoch row counts into RUN/scale_probe."""
    run_dir = _PROBE.get("run_dir")
    if run_dir is None:
        return
    out = Path(run_dir) / PROBE_DIR
    out.mkdir(parents=True, exist_ok=True)
    rec = {k: v for k, v in _PROBE.items() if k not in ("ids", "run_dir")}
    rec["rank"] = _rank()
    rec["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    (out / f"rank{_rank()}.json").write_text(json.dumps(rec, indent=2))
    (out / f"ids-rank{_rank()}.txt").write_text("\n".join(sorted(_PROBE["ids"])))


def install_probe() -> None:
    """Wrap the pipeline's data stage and the training epoch to measure them (same numbers)."""
    import torch

    from mmdistill.recipes import pipeline
    from mmdistill.training import distributed, loop

    if getattr(loop.train_one_epoch, "_scale_probe", False):
        return
    real_prepare, real_epoch = pipeline.prepare_data, loop.train_one_epoch

    def prepare_data(cfg: Any, run_dir: Path) -> Any:
        t0 = time.perf_counter()
        out = real_prepare(cfg, run_dir)
        _PROBE.update(run_dir=str(run_dir), data_s=time.perf_counter() - t0,
                      rss_after_data_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        return out

    def train_one_epoch(model: Any, loader: Any, step_fn: Callable, *args: Any, **kwargs: Any) -> dict:
        seen = [0]

        def counted(m: Any, batch: dict) -> Any:
            seen[0] += loop.batch_size(batch)
            _PROBE["ids"].update(batch.get("id") or [])
            return step_fn(m, batch)

        result = real_epoch(model, loader, counted, *args, **kwargs)
        total = distributed.all_reduce_sum(torch.tensor([float(seen[0])], dtype=torch.float64))
        result["rows_seen"] = float(total[0])
        _PROBE["epochs"].append({"stage": kwargs.get("stage"), "rows_seen_rank": seen[0],
                                 "rows_seen": result["rows_seen"], "distinct_ids_rank": len(_PROBE["ids"])})
        return result

    train_one_epoch._scale_probe = True  # type: ignore[attr-defined]
    pipeline.prepare_data, loop.train_one_epoch = prepare_data, train_one_epoch
    atexit.register(_write_probe)


if __name__ != "__main__" and os.environ.get(PROBE_ENV) == "1":
    install_probe()


# --------------------------------------------------------------------------------------------------
# Running and reading one measurement
# --------------------------------------------------------------------------------------------------

def run_measured(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, int]:
    """Run ``cmd`` to completion; returns (wall seconds, peak RSS in KiB from ``os.wait4``).

    The RSS is the child's own maximum, or for ``torchrun`` the largest of its process tree's
    (Linux reports the maximum over the waited-for descendants, not their sum). A SIGTERM to this
    script stops the child first, like ``foundation.run_child``.
    """
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            if proc.returncode is None:
                proc.terminate()
                proc.wait(timeout=30)
            signal.signal(signal.SIGTERM, previous)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise subprocess.CalledProcessError(proc.returncode, cmd, output=tail)
    return wall, int(usage.ru_maxrss)


def _command(case: dict, shards: Path, seed: int, runs: Path, overrides: list[str]) -> list[str]:
    py = [sys.executable]
    if case["procs"] > 1:
        py = [str(Path(sys.executable).parent / "torchrun"), "--standalone",
              f"--nproc_per_node={case['procs']}"]
    return [*py, "-m", "mmdistill.cli.main", "run", str(CONFIG), f"data.shards={shards}",
            f"data.stream={MODES[case['mode']]}", f"seed={seed}", f"threads={case['threads']}",
            "plugins=[scale]", "--output-dir", str(runs), "--name", case["name"], "--quiet", *overrides]


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1",
               PYTHONPATH=f"{HERE}{os.pathsep}{path}" if path else str(HERE), **{PROBE_ENV: "1"})
    return env


def read_run(run: Path, train_rows: int, procs: int) -> dict:
    """Samples/s and epoch seconds from metrics.jsonl, the probe's files, and the rows check."""
    epoch = next(json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
                 if line.strip() and '"val/accuracy"' in line and json.loads(line).get("stage") == STAGE)
    probes = [json.loads(p.read_text()) for p in sorted((run / PROBE_DIR).glob("rank*.json"))]
    ids: set[str] = set()
    for p in (run / PROBE_DIR).glob("ids-rank*.txt"):
        ids.update(x for x in p.read_text().splitlines() if x)
    seen = int(epoch.get("train/rows_seen", -1))
    data_json = json.loads((run / "data.json").read_text())
    return {
        "samples_per_s": epoch["train/samples_per_s"], "epoch_s": epoch["seconds"],
        "data_s": max(p["data_s"] for p in probes) if probes else None,
        "rank_peak_rss_kib": [p["peak_rss_kib"] for p in probes],
        "rank_rss_after_data_kib": [p["rss_after_data_kib"] for p in probes],
        "rows_seen": seen, "distinct_rows_seen": len(ids), "train_rows": train_rows,
        "data_json_train_rows": data_json["sizes"]["train"], "world_size": len(probes),
        "rows_ok": _rows_ok(seen, len(ids), train_rows, procs),
        "val_accuracy": epoch.get("val/accuracy"),
    }


def _rows_ok(seen: int, distinct: int, rows: int, procs: int) -> bool:
    """One process: every row exactly once. DDP: every row at least once, and at most ``procs``
    rows dropped (streamed tail rule) or repeated (DistributedSampler padding) per epoch."""
    if procs == 1:
        return seen == rows and distinct == rows
    return abs(seen - rows) < procs and distinct >= rows - procs + 1


def measure(case: dict, shards: Path, rows: int, seed: int, workdir: Path, overrides: list[str]) -> dict:
    """One fresh child process for ``case`` (factor, mode, procs, threads); its numbers."""
    runs = workdir / "runs"
    name = f"{case['name']}-seed{seed}"
    case = {**case, "name": name}
    shutil.rmtree(runs / name, ignore_errors=True)
    cmd = _command(case, shards, seed, runs, overrides)
    wall, peak = run_measured(cmd, _env(case["threads"]), workdir / "logs" / f"{name}.log")
    out = {"command": " ".join(cmd), "wall_s": wall, "peak_rss_kib": peak, **read_run(runs / name, rows,
                                                                                        case["procs"])}
    flag = "" if out["rows_ok"] else "  ROWS CHECK FAILED"
    print(f"  {name}: {out['samples_per_s']:.0f} samples/s, peak RSS {peak / 1024:.0f} MiB, "
          f"wall {wall:.0f} s, data {out['data_s'] or float('nan'):.1f} s, rows "
          f"{out['rows_seen']}/{rows}{flag}", flush=True)
    return out


def cases(factor: int, ddp_modes: list[str]) -> list[dict]:
    """Part A (factor x mode, 1 process x 1 thread) then part B (the factor-x epoch on 2 cores)."""
    a = [{"name": f"x{f}-{m}-p1t1", "factor": f, "mode": m, "procs": 1, "threads": 1, "part": "A"}
         for f in (1, factor) for m in MODES]
    b = [{"name": f"x{factor}-{m}-{tag}", "factor": factor, "mode": m, "procs": p, "threads": t, "part": "B"}
         for m in ddp_modes for tag, p, t in (("p2t1", 2, 1), ("p1t2", 1, 2))]
    return a + b


def run_seed(seed: int, built: dict, factor: int, ddp_modes: list[str], workdir: Path,
             overrides: list[str]) -> dict:
    """Every case of one seed, one process at a time."""
    print(f"seed {seed}", flush=True)
    out: dict[str, Any] = {"seed": seed, "cases": {}}
    for case in cases(factor, ddp_modes):
        f = case["factor"]
        res = measure(case, built["shards"][f], built["rows"][f]["train"], seed, workdir, overrides)
        out["cases"][case["name"]] = {**{k: case[k] for k in ("factor", "mode", "procs", "threads", "part")},
                                      **res}
    return out


# --------------------------------------------------------------------------------------------------
# Summary and tables
# --------------------------------------------------------------------------------------------------

def summarize(runs: list[dict], factor: int, ddp_modes: list[str]) -> dict:
    """Per case the per-seed values of every number; the paired per-seed ratios of parts A and B."""
    names = list(runs[0]["cases"])
    keys = ("samples_per_s", "peak_rss_kib", "wall_s", "data_s", "epoch_s")
    per = {n: {k: [r["cases"][n][k] for r in runs] for k in keys} for n in names}
    for n in names:
        per[n]["rows_ok"] = all(r["cases"][n]["rows_ok"] for r in runs)
        per[n]["rank_peak_rss_kib_sum"] = [sum(r["cases"][n]["rank_peak_rss_kib"]) for r in runs]

    def ratio(a: str, b: str, key: str) -> list[float]:
        return [x / y for x, y in zip(per[a][key], per[b][key], strict=True)]

    f = factor
    ratios = {
        "rss_growth_memory": ratio(f"x{f}-memory-p1t1", "x1-memory-p1t1", "peak_rss_kib"),
        "rss_growth_stream": ratio(f"x{f}-stream-p1t1", "x1-stream-p1t1", "peak_rss_kib"),
        "rss_memory_over_stream": ratio(f"x{f}-memory-p1t1", f"x{f}-stream-p1t1", "peak_rss_kib"),
        "throughput_stream_over_memory": ratio(f"x{f}-stream-p1t1", f"x{f}-memory-p1t1", "samples_per_s"),
        "wall_stream_over_memory": ratio(f"x{f}-stream-p1t1", f"x{f}-memory-p1t1", "wall_s"),
    }
    for m in ddp_modes:
        ratios[f"{m}: 2 procs x 1 thread / 1 proc x 1 thread"] = ratio(f"x{f}-{m}-p2t1", f"x{f}-{m}-p1t1",
                                                                       "samples_per_s")
        ratios[f"{m}: 2 procs x 1 thread / 1 proc x 2 threads"] = ratio(f"x{f}-{m}-p2t1", f"x{f}-{m}-p1t2",
                                                                        "samples_per_s")
        ratios[f"{m}: 1 proc x 2 threads / 1 proc x 1 thread"] = ratio(f"x{f}-{m}-p1t2", f"x{f}-{m}-p1t1",
                                                                       "samples_per_s")
    return {"cases": per, "ratios": ratios}


def fmt(values: list, scale: float = 1.0, digits: int = 1) -> str:
    """``mean ± sd (95% CI ± h)``; ``-`` when no value is known."""
    vals = [scale * v for v in values if v is not None and v == v]
    if not vals:
        return "-"
    m, sd, ci = mean_ci(vals)
    if len(vals) < 2:
        return f"{m:.{digits}f} (1 seed)"
    return f"{m:.{digits}f} ± {sd:.{digits}f} (95% CI ± {ci:.{digits}f})"


def report(result: dict, out: Path) -> None:
    """Print the markdown tables of docs/benchmarks.md."""
    s, mach, n = result["summary"], result["machine"], len(result["runs"])
    rows = result["build"]["rows"]
    print(f"\nmachine: {mach['cpus']} cores ({mach['cpu_model']}), {mach['platform']}, Python "
          f"{mach['python']}, torch {mach['torch']}; {n} seed(s) {result['seeds']}; train rows "
          + ", ".join(f"x{f}: {r['train']:,}" for f, r in sorted(rows.items(), key=lambda x: int(x[0]))))
    b, big = result["build"], rows[str(result["factor"])]
    built = f"built in {b['build_s']:.0f} s" if b["build_s"] is not None else "reused from an earlier build"
    print(f"build: {built}; shard bytes " + ", ".join(f"x{f}: {n:,}" for f, n in b["shard_bytes"].items())
          + f"; val {big['val']:,}, test {big['test']:,} rows; memory {mach['memory_gib']} GiB; "
          f"whole benchmark {result['total_s']:.0f} s")
    print(f"\n| case | factor | train data | procs x threads | train samples/s over {n} seeds "
          "| peak RSS MiB | wall s | data stage s | epoch s | rows seen = split |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, c in s["cases"].items():
        meta = result["runs"][0]["cases"][name]
        rss = fmt(c["peak_rss_kib"], 1 / 1024, 0)
        if meta["procs"] > 1:
            rss += f"; ranks' sum {fmt(c['rank_peak_rss_kib_sum'], 1 / 1024, 0)}"
        print(f"| {name} | {meta['factor']}x | {'streamed' if meta['mode'] == 'stream' else 'in memory'} "
              f"| {meta['procs']} x {meta['threads']} | {fmt(c['samples_per_s'], digits=0)} | {rss} "
              f"| {fmt(c['wall_s'])} | {fmt(c['data_s'])} | {fmt(c['epoch_s'])} "
              f"| {'yes' if c['rows_ok'] else 'NO'} |")
    print(f"\n| ratio (per seed, then mean ± sd (95% CI)); machine: {mach['cpus']} cores, "
          f"{mach['cpu_model']} | value |")
    print("|---|---|")
    for name, v in s["ratios"].items():
        print(f"| {name} | {fmt(v, digits=2)} |")
    print(f"\nraw results: {out}")


def _machine() -> dict:
    import torch

    return {"platform": platform.platform(), "cpu_model": _cpu_model(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__,
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="default 0 1 2 (with --quick: 0 1, the fewest that give an sd)")
    ap.add_argument("--factor", type=int, default=10, help="copies of every train row (default 10)")
    ap.add_argument("--aug-seed", type=int, default=0, help="seed of the augmentation (the build)")
    ap.add_argument("--ddp-modes", nargs="+", choices=list(MODES), default=["stream", "memory"],
                    help="modes measured on 2 cores (part B)")
    ap.add_argument("--quick", action="store_true",
                    help=f"tiny check of every code path: factor {QUICK['factor']}, first "
                         f"{QUICK['limits']} rows of the splits")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/scale.json"))
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/mmdistill-scale"),
                    help="build cache and run folders (default /tmp/mmdistill-scale)")
    ap.add_argument("--reprint", type=Path, default=None, help="print the tables again from a results JSON")
    ap.add_argument("overrides", nargs="*", help="config overrides for every run (key=value)")
    args = ap.parse_args()
    if args.reprint is not None:
        result = json.loads(args.reprint.read_text())
        report(result, args.reprint)
        return
    if args.seeds is None:
        args.seeds = [0, 1] if args.quick else [0, 1, 2]
    factor, limits = (QUICK["factor"], QUICK["limits"]) if args.quick else (args.factor, None)
    if factor < 2:
        ap.error("--factor must be at least 2 (the 1x dataset is always measured)")
    if args.quick:
        args.overrides = ["data.text.vocab_size=200", *args.overrides]
    t0 = time.perf_counter()
    built = build(args.workdir, factor, args.aug_seed, limits)
    runs = []
    for seed in args.seeds:
        runs.append(run_seed(seed, built, factor, args.ddp_modes, args.workdir, args.overrides))
        result = _result(args, built, factor, runs, time.perf_counter() - t0)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))  # after every seed: a stopped run keeps its seeds
    report(result, args.out)


def _result(args: argparse.Namespace, built: dict, factor: int, runs: list[dict], total_s: float) -> dict:
    return {"benchmark": "scale", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "config": str(CONFIG.relative_to(HERE.parent)), "quick": args.quick, "factor": factor,
            "ddp_modes": args.ddp_modes, "machine": _machine(),
            "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "build": {"rows": {str(f): r for f, r in built["rows"].items()},
                      "shard_bytes": {str(f): b for f, b in built["shard_bytes"].items()},
                      "build_s": built["build_s"], "stamp": built["stamp"],
                      "shards": {str(f): str(p) for f, p in built["shards"].items()}},
            "seeds": [r["seed"] for r in runs], "requested_seeds": args.seeds,
            "complete": len(runs) == len(args.seeds), "overrides": args.overrides, "total_s": total_s,
            "summary": summarize(runs, factor, args.ddp_modes), "runs": runs}


if __name__ == "__main__":
    main()
