"""Evaluation stage: test-set quality, robustness, alignment and CPU efficiency of every model.

Writes ``eval/<variant>.json`` per model and ``eval/summary.json`` (every key is documented in
``docs/evaluation.md``); the pipeline prints the summary table
(:func:`mmdistill.evaluation.summary.format_summary`). Variants are discovered from the run
directory alone (``teacher/``, ``baselines/<modality>/``, ``students/<variant>/``), so this stage
can run by itself. A teacher that reads raw records (``teacher/teacher.json``: frozen pretrained
encoders + a trained head; ``teacher/external.json``) is evaluated through its own preprocessing
(:mod:`mmdistill.recipes.evaluate_teacher`), under the same name ``teacher``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mmdistill.config.schema import Config
from mmdistill.data.collate import collate
from mmdistill.data.loaders import make_loader
from mmdistill.evaluation.alignment import FeatureSet, alignment_summary, collect_features, compare_features
from mmdistill.evaluation.efficiency import bytes_on_disk, count_parameters, model_latency
from mmdistill.evaluation.metrics import classification_report
from mmdistill.evaluation.robustness import drop_one_losses, subset_accuracy
from mmdistill.evaluation.summary import (
    EAGER_RUNTIME,
    format_summary,
    gap_recovered,
    merge_export_results,
    summary_row,
)
from mmdistill.io_atomic import atomic_write_json
from mmdistill.models.multimodal import MultimodalModel
from mmdistill.recipes.data import DataBundle
from mmdistill.recipes.teacher import raw_teacher_saved
from mmdistill.recipes.train import load_trained
from mmdistill.training.distributed import is_main
from mmdistill.training.kill_hook import maybe_test_kill_at
from mmdistill.training.predict import predict

log = logging.getLogger(__name__)

EVAL_DIR = "eval"


def discover_models(run_dir: Path) -> dict[str, Path]:
    """Variant name → checkpoint directory, for every saved model of the run, in report order."""
    found: dict[str, Path] = {}
    if (run_dir / "teacher" / "model.json").exists() or raw_teacher_saved(run_dir):
        found["teacher"] = run_dir / "teacher"
    for group, prefix in (("baselines", "baseline-"), ("students", "student-")):
        base = run_dir / group
        if base.is_dir():
            for d in sorted(p for p in base.iterdir() if (p / "model.json").exists()):
                found[prefix + d.name] = d
    return found


def example_batch_fn(data: DataBundle, split: str = "test"):
    """``batch_size -> batch`` of the first rows of ``split`` (cycled): the inputs latency is timed on."""
    samples = list(data.splits[split].samples)

    def make(batch_size: int) -> dict[str, Any]:
        rows = [samples[i % len(samples)] for i in range(batch_size)]
        return collate(rows)

    return make


def evaluate_model(
    model: MultimodalModel,
    directory: Path,
    data: DataBundle,
    cfg: Config,
    *,
    name: str,
    split: str = "test",
    reference_preds: torch.Tensor | None = None,
    teacher_features: FeatureSet | None = None,
    keep_features: bool = False,
) -> dict[str, Any]:
    """Quality and efficiency of one model on ``split`` (every key: ``docs/evaluation.md``).

    Returns a JSON-serializable dict: accuracy, macro-F1, ECE, confusion matrix, per-class and
    per-task metrics, parameters, bytes on disk, MACs, latency (when ``cfg.eval.latency``) and,
    when ``reference_preds`` (the teacher's test top-1, ``[N]``) is given, agreement with it.
    Models with several modalities also get ``modality_subsets`` (accuracy for every non-empty
    subset of their modalities) and ``drop_one_loss``, the per-modality contribution (accuracy,
    as a fraction, lost when that single modality is removed from every test row). With
    ``teacher_features`` (the teacher's :class:`FeatureSet` over the same split and batch size)
    it adds ``alignment``: linear CKA and cosine per shared modality and after fusion (see
    :func:`~mmdistill.evaluation.alignment.compare_features`). The test batches are collated once
    and reused by every pass. Private keys for the caller: ``_top1`` (``[N]`` predictions) and,
    with ``keep_features``, ``_features`` (this model's :class:`FeatureSet`).
    """
    loader = make_loader(data.splits[split], cfg.data.eval_batch_size, shuffle=False, seed=cfg.seed)
    batches = list(loader)  # collated once, reused by the modality-subset and feature passes below
    preds = predict(model, batches, device="cpu")
    report = classification_report(preds, data.num_classes, class_names=data.classes)
    out: dict[str, Any] = {
        "name": name,
        "split": split,
        "modalities": list(model.modalities),
        "parameters": count_parameters(model),
        "bytes_on_disk": bytes_on_disk(directory / "model.safetensors"),
        **report,
    }
    from mmdistill.evaluation.flops import count_macs

    # MACs of one typical test row (LSTM/GRU counted analytically; torch's counter reports them as 0).
    make_batch = example_batch_fn(data, split)
    macs = count_macs(model, make_batch(1))
    out["macs"] = int(macs.total)
    out["macs_by_branch"] = dict(macs.by_branch)
    top1 = preds.logits.argmax(-1)
    if len(model.modalities) > 1:
        # Missing-modality robustness: accuracy on every non-empty subset of the model's modalities.
        subsets = subset_accuracy(model, batches, list(model.modalities), full_accuracy=report["accuracy"])
        out["modality_subsets"] = subsets
        out["drop_one_loss"] = drop_one_losses(subsets, list(model.modalities))
    if reference_preds is not None:
        out["teacher_agreement"] = float((top1 == reference_preds).float().mean())
    if teacher_features is not None or keep_features:
        feats = collect_features(model, batches)
        if teacher_features is not None:
            out["alignment"] = compare_features(feats, teacher_features)
        if keep_features:
            out["_features"] = feats
    if cfg.eval.latency:
        out["latency"] = model_latency(
            model,
            make_batch,
            batch_sizes=tuple(cfg.eval.latency_batch_sizes),
            threads=cfg.eval.latency_threads,
            warmup=cfg.eval.latency_warmup,
            repeats=cfg.eval.latency_repeats,
        )
        out["latency"]["runtime"] = EAGER_RUNTIME
    out["_top1"] = top1
    return out


def evaluate_run(run_dir: Path, data: DataBundle, cfg: Config) -> list[dict[str, Any]]:
    """Evaluate every model found in ``run_dir``; write per-variant JSON and ``eval/summary.json``.

    The teacher comes first (discovery order): its test predictions and features are kept, so
    every later model gets ``teacher_agreement`` and ``alignment`` without loading or running the
    teacher again. A progress bar over the models follows ``cfg.logging.progress`` / ``quiet``.
    """
    models = discover_models(run_dir)
    if not models:
        log.warning("no trained model found in %s: nothing to evaluate", run_dir)
        return []
    out_dir = run_dir / EVAL_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    teacher_top1: torch.Tensor | None = None
    teacher_feats: FeatureSet | None = None
    show = cfg.logging.progress and not cfg.logging.quiet and is_main()
    bar = tqdm(models.items(), desc="evaluate", total=len(models), unit="model", leave=False,
               dynamic_ncols=True, disable=not show)
    for i, (name, directory) in enumerate(bar, start=1):
        bar.set_postfix_str(name)
        t0 = time.perf_counter()
        is_teacher = name == "teacher"
        if is_teacher and raw_teacher_saved(run_dir) and not (directory / "model.json").exists():
            from mmdistill.recipes.evaluate_teacher import evaluate_raw_teacher
            from mmdistill.recipes.teacher import load_run_teacher

            # local: the evaluate stage runs on rank 0 alone, so no collective call may happen here.
            res = evaluate_raw_teacher(load_run_teacher(run_dir, data, cfg, local=True), directory, data, cfg,
                                       keep_features=len(models) > 1)
        else:
            res = evaluate_model(
                load_trained(directory).model, directory, data, cfg, name=name, reference_preds=teacher_top1,
                teacher_features=teacher_feats, keep_features=is_teacher and len(models) > 1,
            )
        top1, feats = res.pop("_top1"), res.pop("_features", None)
        if is_teacher:
            teacher_top1, teacher_feats = top1, feats
        atomic_write_json(out_dir / f"{name}.json", res)
        maybe_test_kill_at(f"evaluate:{name}")
        results.append(res)
        log.info("evaluate %d/%d %s: accuracy %.4f, macro-F1 %.4f, ECE %.4f%s (%.1f s)", i, len(models), name,
                 res["accuracy"], res["macro_f1"], res["ece"],
                 f", CKA {alignment_summary(res['alignment'])}" if res.get("alignment") else "",
                 time.perf_counter() - t0)
    bar.close()
    teacher = next((r for r in results if r["name"] == "teacher"), None)
    scratch = next((r for r in results if r["name"] == "student-scratch"), None)
    summary = [summary_row(r, teacher, scratch) for r in results]
    summary = merge_export_results(summary, run_dir, teacher, teacher_top1)
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


_summary_row = summary_row  # the name the tests of other stages import

__all__ = [
    "discover_models",
    "evaluate_model",
    "evaluate_run",
    "example_batch_fn",
    "format_summary",
    "gap_recovered",
    "merge_export_results",
    "summary_row",
]
