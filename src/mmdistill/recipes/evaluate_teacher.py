"""Evaluation of a teacher that reads raw records (frozen pretrained encoders + head, or external).

It writes the same keys as :func:`~mmdistill.recipes.evaluate.evaluate_model` where they apply
(accuracy, macro-F1, ECE, confusion matrix, per-class and per-task metrics, ``modality_subsets``,
``drop_one_loss``, parameters, bytes, latency), computed through ``forward_raw`` on the test
split's raw records, plus what differs for such a teacher:

* ``parameters`` / ``bytes_on_disk`` count the **whole** teacher: every pretrained encoder (PyTorch
  parameters, or the initializers of its ONNX graphs) plus the trained head, itemized in
  ``size_parts`` (so a student's "x smaller" compares against what one would have to deploy);
* ``latency`` times raw records → logits **including the teacher's own preprocessing** (its
  tokenizer, 16 kHz mel front end, image transform) and every encoder, with the embedding stores
  detached (nothing is read from a cache); ``latency.scope`` says so. The students' eager latency
  times the forward pass on preprocessed tensors only;
* ``teacher_kind``: ``frozen_encoders`` or ``external``. No MACs (ONNX graphs are not counted).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmdistill.config.schema import Config
from mmdistill.data.batch import IGNORE_LABEL
from mmdistill.data.records import RawSample
from mmdistill.evaluation.alignment import FeatureSet
from mmdistill.evaluation.efficiency import bytes_on_disk, count_parameters, measure_latency
from mmdistill.evaluation.metrics import classification_report
from mmdistill.evaluation.robustness import drop_one_losses, modality_subsets
from mmdistill.evaluation.summary import EAGER_RUNTIME
from mmdistill.recipes.data import DataBundle
from mmdistill.teachers import FrozenEncodersTeacher, Teacher
from mmdistill.teachers.frozen import HEAD_DIR
from mmdistill.training.predict import Predictions

LATENCY_SCOPE = ("raw records -> logits: the teacher's own preprocessing, every pretrained encoder and the "
                 "head (embedding stores not used)")


def raw_predictions(teacher: Teacher, records: list[RawSample],
                    batch_size: int) -> tuple[Predictions, dict[str, torch.Tensor]]:
    """``teacher.forward_raw`` over ``records`` in chunks: predictions and features, record order.

    Shapes:
        logits ``[N, K]``; each feature ``[N, D]``.
    """
    logits, feats, task_logits = [], {}, {}
    with torch.inference_mode():
        for s in range(0, len(records), batch_size):
            out = teacher.forward_raw(records[s:s + batch_size])
            logits.append(out.logits.float().cpu())
            for k, v in out.features.items():
                feats.setdefault(k, []).append(v.float().cpu())
            for k, v in out.task_logits.items():
                task_logits.setdefault(k, []).append(v.float().cpu())
    task_labels = {t: torch.tensor([int(r.tasks.get(t, IGNORE_LABEL)) for r in records]) for t in task_logits}
    preds = Predictions(logits=torch.cat(logits), labels=torch.tensor([int(r.label) for r in records]),
                        ids=[r.id for r in records], task_labels=task_labels,
                        task_logits={t: torch.cat(v) for t, v in task_logits.items()})
    return preds, {k: torch.cat(v) for k, v in feats.items()}


def hide(records: list[RawSample], hidden: list[str]) -> list[RawSample]:
    """Copies of ``records`` without the ``hidden`` modalities (as if they were absent)."""
    return [dataclasses.replace(r, **{m: None for m in hidden}) for r in records]


def raw_subset_accuracy(teacher: Teacher, records: list[RawSample], batch_size: int,
                        full_accuracy: float) -> dict[str, float]:
    """Accuracy for each non-empty subset of the teacher's modalities (keys like ``"text+audio"``)."""
    mods = list(teacher.modalities)
    out: dict[str, float] = {}
    for subset in modality_subsets(mods):
        if len(subset) == len(mods):
            out["+".join(subset)] = full_accuracy
            continue
        preds, _ = raw_predictions(teacher, hide(records, [m for m in mods if m not in subset]), batch_size)
        out["+".join(subset)] = float((preds.logits.argmax(-1) == preds.labels).float().mean())
    return out


def _files(part: Any) -> list[Path]:
    files = getattr(part, "files", None) or getattr(part, "_files", None)
    if files:
        return [Path(f) for f in files]
    path = getattr(part, "path", None)
    return [Path(path)] if path is not None and Path(path).is_file() else []


def onnx_parameters(files: list[Path]) -> int | None:
    """Elements of every initializer of the ONNX graphs ``files`` (None without the ``onnx`` package)."""
    try:
        import onnx
    except ImportError:
        return None
    total = 0
    for f in files:
        graph = onnx.load(str(f), load_external_data=False).graph
        total += sum(math.prod(t.dims) for t in graph.initializer)
    return total


def part_size(part: Any) -> dict[str, Any]:
    """``{"parameters", "bytes", "runtime"}`` of one pretrained encoder or external teacher."""
    files = _files(part)
    module = part if isinstance(part, nn.Module) else (part.module() if getattr(part, "finetunable", False)
                                                      else None)
    if module is not None and count_parameters(module) > 0:
        params = count_parameters(module)
        size = (sum(bytes_on_disk(f) for f in files) if files
                else sum(p.numel() * p.element_size() for p in module.parameters()))
        return {"parameters": params, "bytes": size, "runtime": "torch"}
    onnx_files = [f for f in files if f.suffix == ".onnx"]
    return {"parameters": onnx_parameters(onnx_files) if onnx_files else None,
            "bytes": sum(bytes_on_disk(f) for f in files) if files else None,
            "runtime": "onnxruntime" if onnx_files else "unknown"}


def teacher_size(teacher: Teacher, directory: Path) -> dict[str, Any]:
    """Parameters and bytes of the whole teacher and of each part (encoders, head)."""
    if isinstance(teacher, FrozenEncodersTeacher):
        plan = teacher.plan
        parts = {f"{m}: {plan.specs[m].name}": part_size(plan.encoders[m]) for m in plan.stored}
        # A fine-tuned encoder is part of the head model (its weights are in the head's file): its
        # part is counted there once, and taken out of the head's row.
        tuned = [{"parameters": count_parameters(enc),
                  "bytes": sum(p.numel() * p.element_size() for p in enc.parameters()), "runtime": "torch"}
                 for enc in (teacher.head.encoders[m] for m in plan.finetuned)]
        parts.update({f"{m}: {plan.specs[m].name} (fine-tuned)": p
                      for m, p in zip(plan.finetuned, tuned, strict=True)})
        head_file = bytes_on_disk(directory / HEAD_DIR / "model.safetensors")
        parts["head (trained)"] = {
            "parameters": count_parameters(teacher.head) - sum(p["parameters"] for p in tuned),
            "bytes": max(0, head_file - sum(p["bytes"] for p in tuned)), "runtime": "torch"}
    else:
        parts = {"model": part_size(teacher)}
    known = [p for p in parts.values() if p["parameters"] is not None]
    return {"parameters": sum(p["parameters"] for p in known),
            "bytes_on_disk": sum(p["bytes"] or 0 for p in parts.values()), "size_parts": parts,
            "size_complete": len(known) == len(parts)}


def raw_latency(teacher: Teacher, records: list[RawSample], cfg: Config) -> dict[str, Any]:
    """Median/p95 ms of ``forward_raw`` on ``b`` raw records for each ``eval.latency_batch_sizes``."""
    e = cfg.eval
    old = torch.get_num_threads()
    torch.set_num_threads(e.latency_threads)
    out: dict[str, Any] = {}
    try:
        with torch.inference_mode():
            for b in e.latency_batch_sizes:
                rows = [records[i % len(records)] for i in range(int(b))]
                stats = measure_latency(lambda rows=rows: teacher.forward_raw(rows), warmup=e.latency_warmup,
                                        repeats=e.latency_repeats)
                stats.update(batch_size=int(b), threads=e.latency_threads,
                             samples_per_s=int(b) / (stats["median_ms"] / 1e3))
                out[f"b{b}"] = stats
    finally:
        torch.set_num_threads(old)
    return out


def _without_stores(teacher: Teacher) -> Teacher:
    if isinstance(teacher, FrozenEncodersTeacher):
        return FrozenEncodersTeacher(teacher.plan, teacher.head, stores=None)
    return teacher


def evaluate_raw_teacher(teacher: Teacher, directory: Path, data: DataBundle, cfg: Config, *,
                         split: str = "test", keep_features: bool = False) -> dict[str, Any]:
    """The ``eval/teacher.json`` dict of a raw-record teacher (keys: module docstring).

    Private keys for the caller, as in ``evaluate_model``: ``_top1`` (``[N]``, the test split's
    order, which the students' batches follow) and, with ``keep_features`` and when the teacher
    returns ``"fused"``, ``_features`` (its :class:`FeatureSet`, for the students' alignment).
    """
    if data.raw is None:
        raise ValueError("evaluate_raw_teacher needs the raw records (DataBundle.raw)")
    records = list(data.raw[split])
    bs = cfg.data.eval_batch_size
    preds, feats = raw_predictions(teacher, records, bs)
    report = classification_report(preds, data.num_classes, class_names=data.classes)
    frozen = isinstance(teacher, FrozenEncodersTeacher)
    out: dict[str, Any] = {"name": "teacher", "split": split, "modalities": list(teacher.modalities),
                           "teacher_kind": "frozen_encoders" if frozen else "external",
                           **teacher_size(teacher, directory), **report}
    if frozen:
        out["pretrained_encoders"] = {m: s.name for m, s in teacher.plan.specs.items()}
        out["trained_modalities"] = list(teacher.plan.trained)
    if len(teacher.modalities) > 1:
        subsets = raw_subset_accuracy(teacher, records, bs, report["accuracy"])
        out["modality_subsets"] = subsets
        out["drop_one_loss"] = drop_one_losses(subsets, list(teacher.modalities))
    if cfg.eval.latency:
        lat = raw_latency(_without_stores(teacher), records, cfg)
        runtimes = {p["runtime"] for p in out["size_parts"].values()}
        lat["runtime"] = EAGER_RUNTIME + ("+onnxruntime" if "onnxruntime" in runtimes else "")
        lat["scope"] = LATENCY_SCOPE
        out["latency"] = lat
    out["_top1"] = preds.logits.argmax(-1)
    if keep_features and "fused" in feats:
        present = {m: torch.tensor([getattr(r, m) is not None for r in records]) for m in teacher.modalities}
        out["_features"] = FeatureSet(ids=list(preds.ids), features=feats, present=present)
    return out
