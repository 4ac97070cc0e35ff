"""Export stage: ONNX files, int8 for ONNX Runtime, verification, per-runtime latency, what to ship.

For every exported student ``<v>`` (``export.variants``) it writes ``export/<v>.onnx`` (fp32,
verified against eager: max |error| and top-1 agreement on the test split, a miss fails the
stage), ``export/<v>.int8.onnx`` (static QDQ calibrated on the first training batches in file
order, read from the shards when the train split streams) and optionally
``export/<v>.dyn8.onnx``, each int8 file checked for agreement with eager. Then every artifact and
the fp32 eager teacher are timed, each in its own process (:mod:`mmdistill.evaluation.latency`),
compressed artifacts slower than their parent on the same runtime are flagged, and
``export/results.json`` names the artifact to ship.

Artifact names: ``student-<v>`` (PyTorch eager), ``student-<v>.onnx`` (ONNX Runtime fp32),
``student-<v>.int8`` / ``.dyn8`` (ONNX Runtime int8), ``teacher``.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mmdistill.config.compress_checks import PRUNED, SPARSE, compress_source
from mmdistill.config.schema import Config
from mmdistill.data.collate import collate
from mmdistill.errors import CheckpointError
from mmdistill.evaluation.efficiency import bytes_on_disk
from mmdistill.io_atomic import atomic_path, atomic_write_json
from mmdistill.recipes.compress import split_batches
from mmdistill.recipes.data import DataBundle, first_train_samples
from mmdistill.recipes.evaluate import example_batch_fn
from mmdistill.recipes.train import load_trained
from mmdistill.training.kill_hook import maybe_test_kill_at

if TYPE_CHECKING:
    from mmdistill.export.verify import VerifyReport

log = logging.getLogger(__name__)

EXPORT_DIR = "export"


def export_variants(cfg: Config, run_dir: Path) -> list[str]:
    """Student folder names to export: ``export.variants``, else the compress source and its variants."""
    if cfg.export.variants is not None:
        return [v.removeprefix("student-") for v in cfg.export.variants]
    src = compress_source(cfg)
    names = [src, f"{src}-{PRUNED}", f"{src}-{SPARSE}"]
    return [n for n in names if (run_dir / "students" / n / "model.json").exists()]


def checked_variants(cfg: Config, run_dir: Path) -> list[str]:
    """:func:`export_variants`, after checking that each is saved in ``run_dir`` (a clear error if not)."""
    names = export_variants(cfg, run_dir)
    students = run_dir / "students"
    have = ", ".join(sorted(p.name for p in students.glob("*") if (p / "model.json").is_file())) or "(none)"
    if not names:
        raise CheckpointError(f"export.variants: not set, and neither student '{compress_source(cfg)}' (the "
                              f"compress source) nor its pruned or sparse variants is saved in {students} "
                              f"(saved: {have}); list saved students in export.variants, or add 'student', "
                              "'distill' or 'compress' to stages")
    missing = [n for n in names if not (students / n / "model.json").is_file()]
    if missing:
        raise CheckpointError(f"export.variants: {missing} not saved in {students} (saved: {have}); remove "
                              "them from export.variants or run the stage that makes them")
    return names


def _parent_student(name: str, src: str) -> str | None:
    return src if name != src and name.startswith(f"{src}-") else None


def _artifact_parents(names: list[str], src: str, kinds: list[str]) -> list[tuple[str, str]]:
    """(artifact, parent) pairs compared on the same runtime: int8 vs fp32, compressed vs source."""
    pairs = []
    for v in names:
        base = f"student-{v}"
        for kind in kinds:
            pairs.append((f"{base}.{kind}", f"{base}.onnx"))
        parent = _parent_student(v, src)
        if parent is not None:
            pairs.append((base, f"student-{parent}"))
            for kind in ["onnx", *kinds]:
                pairs.append((f"{base}.{kind}", f"student-{parent}.{kind}"))
    return pairs


def runtime_quality(
    rep: Any, batches: list[dict], data: DataBundle, logits_path: Path, modalities: list[str] | None = None
) -> dict[str, Any]:
    """Test-split quality through the runtime (macro-F1, ECE, confusion matrix) from ``rep.logits``.

    With two or more ``modalities``, also ``modality_subsets`` (accuracy through the runtime for
    every non-empty subset) and ``drop_one_loss``, as the evaluate stage reports for eager models.

    The logits ``[N, K]`` are saved to ``logits_path`` (``.npy``, no pickle) so that the evaluate
    stage can compute the artifact's top-1 agreement with the teacher on the same rows (the test
    batches are in dataset order, as the evaluate stage reads them).
    """
    from mmdistill.evaluation.metrics import classification_report
    from mmdistill.training.predict import Predictions

    logits = np.asarray(rep.logits, dtype=np.float32)
    labels = torch.cat([b["label"] for b in batches]).long()
    ids = [i for b in batches for i in b.get("id", [])]
    report = classification_report(Predictions(torch.from_numpy(logits), labels, ids), data.num_classes,
                                   class_names=data.classes)
    with atomic_path(logits_path) as tmp, tmp.open("wb") as fh:  # a file object: np.save adds no .npy
        np.save(fh, logits, allow_pickle=False)
    keep = ("n", "accuracy", "macro_f1", "ece", "confusion_matrix", "class_names")
    out = {**{k: report[k] for k in keep}, "test_logits": logits_path.name}
    if modalities and len(modalities) > 1:
        from mmdistill.evaluation.robustness import drop_one_losses
        from mmdistill.export.verify import runtime_subset_accuracy

        subsets = runtime_subset_accuracy(rep.path, batches, modalities, full_accuracy=report["accuracy"])
        out.update(modality_subsets=subsets, drop_one_loss=drop_one_losses(subsets, modalities))
    return out


def example_input(data: DataBundle, rows: int = 8) -> dict[str, Any]:
    """The batch ONNX export traces: the train split's first ``rows`` rows in file order (cycled when
    it is shorter), read from the shards when the split is streamed (``data.stream``)."""
    samples = first_train_samples(data, rows)
    return collate([samples[i % len(samples)] for i in range(rows)])


def run_export_stage(cfg: Config, data: DataBundle, run_dir: Path) -> dict[str, Any]:
    """Export, quantize, verify and time the configured students; write ``export/results.json``."""
    from mmdistill.compression.ort_quant import calibration_feeds, quantize_dynamic_onnx, quantize_static_onnx
    from mmdistill.export.onnx import export_onnx
    from mmdistill.export.verify import runtime_accuracy, verify_onnx

    e = cfg.export
    names = checked_variants(cfg, run_dir)
    out_dir = run_dir / EXPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    test = split_batches(data, "test", cfg.data.eval_batch_size)
    val = split_batches(data, "val", cfg.data.eval_batch_size)  # what the ship decision reads
    train = split_batches(data, "train", cfg.data.batch_size, limit=e.quantize.calibration_batches)
    example = example_input(data)
    kinds = (["int8"] if e.quantize.static else []) + (["dyn8"] if e.quantize.dynamic else [])
    artifacts: dict[str, dict[str, Any]] = {}
    for v in names:
        directory = run_dir / "students" / v
        model = load_trained(directory).model.eval()
        base = f"student-{v}"
        fp32 = out_dir / f"{v}.onnx"
        info = export_onnx(model, fp32, example, opset=e.opset, checkpoint=directory)
        maybe_test_kill_at(f"export:{v}:onnx")
        with torch.inference_mode():  # eager logits once: the fp32 check and every int8 check use them
            reference = [model(b).logits for b in test]
            val_reference = [model(b).logits for b in val]
        rep = verify_onnx(model, fp32, test, atol=e.verify.atol, min_agreement=e.verify.min_agreement,
                          reference_logits=reference)
        on_val = _val_accuracy(fp32, val, val_reference)
        log.info(
            "export: %s -> %s (max |err| %.2g, agreement %.4f)", v, fp32, rep.max_abs_error, rep.agreement
        )
        artifacts[base] = {
            "runtime": "torch",
            "path": str(directory),
            "bytes": bytes_on_disk(directory / "model.safetensors"),
            "accuracy": rep.accuracy_reference,
            "val_accuracy": None if on_val is None else on_val.accuracy_reference,
            "student": v,
        }
        artifacts[f"{base}.onnx"] = {
            "runtime": "onnxruntime",
            "path": str(fp32),
            "bytes": bytes_on_disk(fp32),
            "accuracy": rep.accuracy_onnx,
            "val_accuracy": None if on_val is None else on_val.accuracy_onnx,
            "verify": rep.to_dict(),
            "quality": runtime_quality(rep, test, data, out_dir / f"{v}.test-logits.npy",
                                       list(model.modalities)),
            "student": v,
        }
        feeds = calibration_feeds(train, info.input_names, input_shapes=info.input_shapes) if kinds else []
        for kind in kinds:
            path = out_dir / f"{v}.{kind}.onnx"
            if kind == "int8":
                q = quantize_static_onnx(
                    fp32,
                    path,
                    feeds,
                    per_channel=e.quantize.per_channel,
                    calibrate_method=e.quantize.calibrate_method,
                    fp32_branches=list(e.quantize.keep_fp32),
                )
            else:
                q = quantize_dynamic_onnx(fp32, path)
            rq = runtime_accuracy(
                path, test, reference_logits=reference, min_agreement=e.verify.int8_min_agreement
            )
            q_val = _val_accuracy(path, val)
            log.info(
                "export: %s %s: %s -> %s bytes (fp32/int8 = %.2f), agreement %.4f, accuracy %.4f",
                v,
                kind,
                f"{q.bytes_before:,}",
                f"{q.bytes_after:,}",
                q.size_ratio,
                rq.agreement,
                rq.accuracy_onnx,
            )
            artifacts[f"{base}.{kind}"] = {
                "runtime": "onnxruntime",
                "path": str(path),
                "bytes": bytes_on_disk(path),
                "accuracy": rq.accuracy_onnx,
                "val_accuracy": None if q_val is None else q_val.accuracy_onnx,
                "verify": rq.to_dict(),
                "quality": runtime_quality(rq, test, data, out_dir / f"{v}.{kind}.test-logits.npy",
                                           list(model.modalities)),
                "quantization": q.to_dict(),
                "student": v,
            }
    if e.quantize.torch_dynamic:
        artifacts.update(_torch_dynamic(names, run_dir, test))
    if e.latency.enabled and (run_dir / "teacher" / "model.json").exists() and e.latency.include_teacher:
        artifacts["teacher"] = {
            "runtime": "torch",
            "path": str(run_dir / "teacher"),
            "bytes": bytes_on_disk(run_dir / "teacher" / "model.safetensors"),
        }
    src = compress_source(cfg)
    result: dict[str, Any] = {"format": "mmdistill.export/1", "source": src, "artifacts": artifacts}
    if e.latency.enabled:
        result.update(_latency(cfg, data, artifacts, names, src, kinds))
    result["ship"] = choose_ship(result, src, e.keep_faster, e.max_accuracy_drop)
    if result["ship"] and result["ship"]["selected_on"] == "test":
        log.warning("export: the run has no labelled validation rows, so the artifact to ship was chosen "
                    "on test accuracy, and its reported test accuracy is optimistic; give the data a "
                    "val split")
    atomic_write_json(out_dir / "results.json", result)
    if result["ship"]:
        log.info("export: ship %s (%s)", result["ship"]["name"], result["ship"]["reason"])
    return result


def _val_accuracy(
    path: Path, val: list[dict], reference: list[torch.Tensor] | None = None
) -> VerifyReport | None:
    """Accuracy of the ONNX file (and of ``reference``, the eager logits) on the validation split, or
    None when the run has no validation rows."""
    from mmdistill.export.verify import runtime_accuracy

    return runtime_accuracy(path, val, reference_logits=reference) if val else None


def _torch_dynamic(names: list[str], run_dir: Path, test: list[dict]) -> dict[str, dict[str, Any]]:
    """In-PyTorch dynamic int8 (torch.ao), for comparison only: accuracy and size, never shipped."""
    from mmdistill.compression.torch_int8 import torch_dynamic_int8
    from mmdistill.recipes.compress import accuracy_on

    out = {}
    for v in names:
        q = torch_dynamic_int8(load_trained(run_dir / "students" / v).model.eval())
        out[f"student-{v}.torch-dyn8"] = {
            "runtime": "torch (in-process, not deployable)",
            "path": None,
            "accuracy": accuracy_on(q, test),
            "student": v,
            "note": "torch.ao dynamic int8 (deprecated API); not exportable, not timed in a separate process",
        }
    return out


def _latency(
    cfg: Config,
    data: DataBundle,
    artifacts: dict[str, dict[str, Any]],
    names: list[str],
    src: str,
    kinds: list[str],
) -> dict[str, Any]:
    from mmdistill.evaluation.latency import (
        LatencyVariant,
        flag_not_faster,
        measure_runtimes,
        write_batch_files,
    )

    lat = cfg.export.latency
    make = example_batch_fn(data, "test")  # the same rows the evaluate stage times eager models on
    batches = {b: make(b) for b in lat.batch_sizes}
    timed = {n: a for n, a in artifacts.items() if a["runtime"] in ("torch", "onnxruntime")}
    variants = [LatencyVariant(n, a["runtime"], Path(a["path"])) for n, a in timed.items()]
    log.info(
        "export: timing %d artifacts at batch sizes %s, %d thread(s), each in its own process",
        len(variants),
        lat.batch_sizes,
        lat.threads,
    )
    with tempfile.TemporaryDirectory(prefix="mmdistill-latency-") as tmp:
        files = write_batch_files(batches, Path(tmp))
        rows = measure_runtimes(
            variants, files, threads=lat.threads, warmup=lat.warmup, repeats=lat.repeats, rounds=lat.rounds,
            progress=cfg.logging.progress and not cfg.logging.quiet,
        )
    for r in rows:
        timed[r["name"]].setdefault("latency", {})[f"b{r['batch_size']}"] = {
            k: r[k] for k in ("median_ms", "p95_ms", "min_ms", "round_median_ms", "samples_per_s", "threads")
        }
    flags = []
    measured = {r["name"] for r in rows}
    for b in lat.batch_sizes:
        for name, parent in _artifact_parents(names, src, kinds):
            if name in measured and parent in measured:
                flags += flag_not_faster(rows, {name: parent}, batch_size=b)
    return {
        "latency_rows": rows,
        "flags": flags,
        "latency_settings": {
            "threads": lat.threads,
            "warmup": lat.warmup,
            "repeats": lat.repeats,
            "rounds": lat.rounds,
            "batch_sizes": list(lat.batch_sizes),
        },
    }


def choose_ship(
    result: dict[str, Any], src: str, keep_faster: bool, max_drop: float
) -> dict[str, Any] | None:
    """The artifact to ship: fastest at batch 1 within ``max_drop`` points of the source's eager accuracy.

    The accuracies compared are on the validation split (``val_accuracy``), so the test accuracy
    reported for the shipped artifact is not the one it was picked on. A run without labelled
    validation rows (or results written before ``val_accuracy`` existed) compares test accuracy, and
    the decision says so (``selected_on``). With ``keep_faster`` False the most compressed artifact
    is taken without comparing accuracies, and ``selected_on`` is None.
    """
    arts = result["artifacts"]
    on = "val_accuracy" if arts.get(f"student-{src}", {}).get("val_accuracy") is not None else "accuracy"
    ref = arts.get(f"student-{src}", {}).get(on)
    deployable = {
        n: a
        for n, a in arts.items()
        if a["runtime"] in ("torch", "onnxruntime") and n != "teacher" and a.get(on) is not None
    }
    if not deployable or ref is None:
        return None
    if not keep_faster:
        order = [
            f"student-{src}-{PRUNED}.int8",
            f"student-{src}.int8",
            f"student-{src}-{PRUNED}.onnx",
            f"student-{src}.onnx",
        ]
        name = next((n for n in order if n in deployable), next(iter(deployable)))
        # No accuracy is compared on this path, so no split is named (``selected_on`` None).
        return {"name": name, "reason": "export.keep_faster is false: the most compressed artifact",
                "accuracy": arts[name]["accuracy"], "val_accuracy": arts[name].get("val_accuracy"),
                "path": arts[name]["path"], "selected_on": None}
    split = "validation" if on == "val_accuracy" else "test"
    ok = {n: a for n, a in deployable.items() if 100 * (ref - a[on]) <= max_drop}
    timed = {n: a["latency"]["b1"]["median_ms"] for n, a in ok.items() if "b1" in a.get("latency", {})}
    if not timed:
        return None
    name = min(timed, key=timed.__getitem__)
    return {
        "name": name,
        "reason": f"fastest at batch 1 ({timed[name]:.3f} ms median) among artifacts within "
        f"{max_drop} points of student-{src}'s eager accuracy on the {split} split",
        "accuracy": arts[name]["accuracy"],
        "val_accuracy": arts[name].get("val_accuracy"),
        "path": arts[name]["path"],
        "selected_on": split,
    }
