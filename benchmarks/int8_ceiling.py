"""Where does ORT static int8 pay on this CPU? int8 over fp32 on ONNX Runtime, by layer family and width.

Issue 4 asks that int8 be at least 3x faster than fp32 on the same runtime at batch 1 for students
of at least 1 MB of fp32 weights. ``compress.py`` measures 1.1-1.3x for the 1.6 MB students. This
benchmark measures how far the runtime itself goes: for every seed it builds single-modality
mmdistill models whose compute is one layer family at growing widths,

- ``image-mlp``: the ``mlp`` image encoder with three hidden layers of width ``w`` (Gemm);
- ``image-cnn``: the ``cnn`` image encoder with channels ``[w, 2w]`` on 28x28 images (Conv2d);
- ``audio-conv1d``: the ``conv1d`` audio encoder with channels ``[w, 2w]`` on 101 frames (Conv1d),

each with concat fusion of width ``w`` and a linear head, exports each with ``export_onnx``,
quantizes it with ``quantize_static_onnx`` (the export stage's QDQ per-channel path, calibrated on
8 random batches of 64) and times both files with ``measure_runtimes`` (each file in its own
process, 1 thread, interleaved rounds, medians) at batch 1 and 64. Inputs are random: int8 kernel
time does not depend on the values. Printed: fp32 weight size, fp32 and int8 medians and int8 over
fp32, as mean ± sd (95% t-interval) over seeds (new weights and new processes per seed).

    .venv/bin/python benchmarks/int8_ceiling.py --seeds 0 1 2
    .venv/bin/python benchmarks/int8_ceiling.py --reprint benchmarks/results/int8_ceiling.json
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from foundation import mean_ci, saved_results, seeded_parser, write_results

FAMILIES: dict[str, tuple[str, list[int]]] = {
    "image-mlp": ("image", [128, 256, 512, 1024]),
    "image-cnn": ("image", [16, 32, 64, 128]),
    "audio-conv1d": ("audio", [32, 64, 128, 256]),
}
SIZES = (1, 64)
FRAMES = 101  # one second of builtin audio at hop 160


def _encoder(family: str, width: int) -> dict[str, Any]:
    if family == "image-mlp":
        return {"name": "mlp", "kwargs": {"hidden": [width] * 3}}
    if family == "image-cnn":
        return {"name": "cnn", "kwargs": {"channels": [width, 2 * width], "out_dim": 2 * width}}
    return {"name": "conv1d", "kwargs": {"channels": [width, 2 * width], "out_dim": 2 * width}}


def _batch(modality: str, rows: int, gen: Any) -> dict[str, Any]:
    import torch

    batch: dict[str, Any] = {
        "id": [str(i) for i in range(rows)], "label": torch.zeros(rows, dtype=torch.long),
        "present": {modality: torch.ones(rows, dtype=torch.bool)}, "lengths": {},
    }
    if modality == "image":
        batch["image"] = torch.randn(rows, 1, 28, 28, generator=gen)
    else:
        batch["audio"] = torch.randn(rows, 40, FRAMES, generator=gen)
        batch["lengths"]["audio"] = torch.full((rows,), FRAMES, dtype=torch.long)
    return batch


def run_seed(seed: int, workdir: Path) -> dict:
    import torch

    from mmdistill.compression.ort_quant import calibration_feeds, quantize_static_onnx
    from mmdistill.evaluation.latency import LatencyVariant, measure_runtimes, write_batch_files
    from mmdistill.export.onnx import export_onnx
    from mmdistill.models.builders import build_model, model_spec

    t0 = time.perf_counter()
    folder = workdir / f"seed{seed}"
    variants, models = [], {}
    files: dict[str, dict[int, Path]] = {}
    for family, (modality, widths) in FAMILIES.items():
        gen = torch.Generator().manual_seed(seed)
        batches = {bs: _batch(modality, bs, gen) for bs in SIZES}
        files[modality] = files.get(modality) or write_batch_files(batches, folder / f"batches-{modality}")
        for width in widths:
            torch.manual_seed(seed)
            name = f"{family}-{width}"
            spec = model_spec("student", modalities=[modality], num_classes=10, vocab_size=100,
                              encoders={modality: _encoder(family, width)},
                              fusion={"name": "concat", "kwargs": {"dim": width}})
            model = build_model(spec).eval()
            info = export_onnx(model, folder / f"{name}.onnx", batches[64])
            calib = calibration_feeds([_batch(modality, 64, gen) for _ in range(8)], info.input_names,
                                      input_shapes=info.input_shapes)
            quantize_static_onnx(info.path, folder / f"{name}.int8.onnx", calib)  # the export stage's path
            models[name] = {"family": family, "width": width, "modality": modality,
                            "fp32_weight_bytes": 4 * sum(p.numel() for p in model.parameters())}
            int8 = folder / f"{name}.int8.onnx"
            variants += [(modality, LatencyVariant(f"{name}.fp32", "onnxruntime", Path(info.path))),
                         (modality, LatencyVariant(f"{name}.int8", "onnxruntime", int8))]
    rows: list[dict] = []
    for modality in files:  # one interleaved measurement per input kind (the batch files differ)
        mine = [v for m, v in variants if m == modality]
        rows += measure_runtimes(mine, files[modality], threads=1, warmup=10, repeats=50, rounds=3)
    latency = {f"{r['name']}@b{r['batch_size']}": r["median_ms"] for r in rows}
    return {"seed": seed, "models": models, "median_ms": latency, "wall_s": time.perf_counter() - t0}


def summarize(runs: list[dict]) -> dict:
    out: dict = {}
    for name, meta in runs[0]["models"].items():
        row: dict[str, Any] = {"family": meta["family"], "width": meta["width"],
                               "fp32_mb": meta["fp32_weight_bytes"] / 1e6}
        for bs in SIZES:
            fp32 = [r["median_ms"][f"{name}.fp32@b{bs}"] for r in runs]
            int8 = [r["median_ms"][f"{name}.int8@b{bs}"] for r in runs]
            row[f"fp32_ms_b{bs}"] = mean_ci(fp32)
            row[f"int8_ms_b{bs}"] = mean_ci(int8)
            row[f"speedup_b{bs}"] = mean_ci([a / b for a, b in zip(fp32, int8, strict=True)])
        out[name] = row
    return out


def _fmt(v: list[float] | tuple[float, ...], digits: int = 2) -> str:
    m, sd, ci = v
    return f"{m:.{digits}f} ± {sd:.{digits}f} (± {ci:.{digits}f})"


def report(s: dict, runs: list[dict], out: Path) -> None:
    print(f"int8 over fp32 on ONNX Runtime, 1 thread, mean ± sd (95% CI) over {len(runs)} seeds")
    print("| model | fp32 weights (MB) | fp32 b1 (ms) | int8 b1 (ms) | int8 x faster b1 "
          "| int8 x faster b64 |")
    print("|---|---|---|---|---|---|")
    for name, row in s.items():
        print(f"| {name} | {row['fp32_mb']:.2f} | {_fmt(row['fp32_ms_b1'], 3)} "
              f"| {_fmt(row['int8_ms_b1'], 3)} | {_fmt(row['speedup_b1'])} | {_fmt(row['speedup_b64'])} |")
    walls = ", ".join(f"{r['wall_s']:.0f}" for r in runs)
    print(f"wall time per seed (s): {walls}; raw results: {out}")


def main() -> None:
    ap = seeded_parser(__doc__, seeds=[0, 1, 2], out="benchmarks/results/int8_ceiling.json")
    args = ap.parse_args()
    if args.overrides:
        raise SystemExit(f"int8_ceiling.py takes no config overrides, got {args.overrides}")
    if saved_results(args, summarize, report):
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mmdistill-int8-ceiling-"))
    runs = [run_seed(seed, workdir) for seed in args.seeds]
    write_results(args, "int8_ceiling", runs, summarize, report)

if __name__ == "__main__":
    main()
