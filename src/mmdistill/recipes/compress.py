"""Compress stage: prune, sparsify, sweep bit widths and quantization-aware-train one student.

Reads ``students/<source>/`` (``compress.source``) and the run's teacher, writes each compressed
variant as a student (``students/<source>-pruned/``, ``-sparse/``, ``-qat<bits>/``) so the evaluate
and export stages treat it like any other, plus ``compress/summary.json`` (what each step did) and
``compress/bit_sweep.json``. Recovery fine-tuning and QAT reuse the distillation recipe with the
teacher in place (:func:`mmdistill.recipes.distill.distill_student`); no compressor trains.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

from mmdistill.config.compress_checks import PRUNED, SPARSE, compress_source, qat_name
from mmdistill.config.schema import Config, DistillStudentConfig, DistillTermConfig, TrainConfig
from mmdistill.config.schema_compress import RecoveryConfig
from mmdistill.data.loaders import SampleDataset, make_loader
from mmdistill.errors import CheckpointError
from mmdistill.io_atomic import atomic_write_json
from mmdistill.models.checkpoint import read_model_json, save_model
from mmdistill.models.multimodal import MultimodalModel
from mmdistill.recipes.data import DataBundle, first_train_samples
from mmdistill.recipes.distill import distill_student, load_teachers
from mmdistill.recipes.train import checkpoint_extra, load_trained
from mmdistill.training.distributed import barrier, is_main
from mmdistill.training.logging import MetricsLogger
from mmdistill.training.predict import predict
from mmdistill.training.progress import RunProgress

log = logging.getLogger(__name__)

COMPRESS_DIR = "compress"


def recovery_variant(rec: RecoveryConfig, cfg: Config) -> DistillStudentConfig:
    """The distillation settings of a recovery/QAT fine-tune: ``kd_ce`` against the run's teacher
    (on mixed inputs, the teacher online, when ``rec.mixup`` > 0)."""
    base = cfg.student.train
    train = TrainConfig(
        epochs=max(rec.epochs, 1),
        lr=rec.lr,
        weight_decay=base.weight_decay,
        warmup=base.warmup,
        patience=None,
        grad_clip=base.grad_clip,
        label_smoothing=base.label_smoothing,
        modality_dropout=base.modality_dropout,
    )
    term = DistillTermConfig(name="kd_ce", kwargs={"temperature": rec.temperature, "alpha": rec.alpha})
    return DistillStudentConfig(
        strategy=rec.strategy,
        terms=[term],
        teachers=list(cfg.distill.teachers[:1]),
        train=train,
        mixup=rec.mixup,
    )


def split_batches(data: DataBundle, split: str, batch_size: int, limit: int | None = None) -> list[dict]:
    """Collated batches of ``split`` in a fixed order, dataset (= file) order (at most ``limit``).

    The train split streamed (``data.stream``) gives the same batches as in memory: the first
    ``limit * batch_size`` rows of the shards in packing order
    (:func:`~mmdistill.recipes.data.first_train_samples`), whatever the epoch shuffle; only those
    rows are read, so ``limit`` is required there.

    Raises:
        ValueError: the train split is streamed and ``limit`` is None (that would hold the whole split).
    """
    dataset: SampleDataset
    if split == "train" and data.train_stream is not None:
        if limit is None:
            raise ValueError("split_batches: the train split is streamed (data.stream: true), so a batch "
                             "limit is required; pass limit=N to read its first N batches")
        dataset = SampleDataset(first_train_samples(data, limit * batch_size))
    else:
        dataset = data.splits[split]
    loader = make_loader(dataset, batch_size, shuffle=False, seed=0)
    out = []
    for batch in loader:
        out.append(batch)
        if limit is not None and len(out) >= limit:
            break
    return out


def accuracy_on(model: MultimodalModel, batches: list[dict]) -> float:
    """Top-1 accuracy of ``model`` (eval mode, CPU) on pre-collated batches."""
    preds = predict(model.eval(), batches, device="cpu")
    return float((preds.logits.argmax(-1) == preds.labels).float().mean())


def _save(
    model: MultimodalModel, directory: Path, data: DataBundle, cfg: Config, extra: dict[str, Any]
) -> None:
    if is_main():
        save_model(model.eval(), directory, extra=checkpoint_extra(data, cfg) | extra)


def _finetune(
    name: str,
    model: MultimodalModel,
    rec: RecoveryConfig,
    *,
    key: str,
    data: DataBundle,
    cfg: Config,
    run_dir: Path,
    teachers: dict[str, MultimodalModel],
    logger: MetricsLogger,
    extra: dict[str, Any],
    progress: RunProgress | None = None,
) -> MultimodalModel:
    """Recovery fine-tuning through the distill recipe (saved there), or a plain save for 0 epochs.

    A fine-tune that ``progress`` records as done is loaded from its folder instead of retrained.
    """
    if rec.epochs == 0:
        _save(model, run_dir / "students" / name, data, cfg, extra)
        return model
    if progress is not None and progress.done("compress", f"student-{name}"):
        log.info("student-%s: done, skipped (%s)", name, run_dir / "students" / name)
        return load_trained(run_dir / "students" / name).model.eval()
    trained = distill_student(
        name,
        recovery_variant(rec, cfg),
        data,
        cfg,
        run_dir,
        teachers=teachers,
        logger=logger,
        seed=cfg.seed,
        init=model,
        key=key,
        extra=extra,
        resume=progress is not None and progress.resuming,
    )
    if progress is not None:
        progress.mark("compress", f"student-{name}")
    return trained.model


def _qat_bits(cfg: Config, sweep: list[dict[str, Any]] | None) -> int | None:
    """``qat.bits``, else the widest swept width at which PTQ of the whole model loses > max_ptq_drop.

    Chosen on the validation split's sweep rows (the test split only reports).
    """
    from mmdistill.compression.fake_quant import choose_qat_bits

    q = cfg.compress.qat
    if q.bits is not None:
        return q.bits
    return choose_qat_bits([r for r in (sweep or []) if r["split"] == "val"], q.max_ptq_drop)


def run_compress_stage(
    cfg: Config,
    data: DataBundle,
    run_dir: Path,
    *,
    logger: MetricsLogger,
    progress: RunProgress | None = None,
) -> dict[str, Any]:
    """Run the configured compressions of ``compress.source``; returns (and writes) the stage summary.

    The fine-tunes (pruning recovery, QAT) are recorded in ``progress``: done ones are loaded, not
    retrained, and with a resuming ``progress`` an interrupted one continues from its last epoch.
    """
    c = cfg.compress
    src = compress_source(cfg)
    src_dir = run_dir / "students" / src
    if not (src_dir / "model.json").exists():
        raise CheckpointError(
            f"compress.source: student '{src}' has no checkpoint at {src_dir}; add the stage "
            "that trains it ('student' for scratch, 'distill' for distill.students) to stages, "
            "or set compress.source to a student the run folder holds"
        )
    base = load_trained(src_dir).model.eval()
    val = split_batches(data, "val", cfg.data.eval_batch_size)
    test = split_batches(data, "test", cfg.data.eval_batch_size)
    summary: dict[str, Any] = {"source": src, "source_val_accuracy": accuracy_on(base, val), "variants": {}}
    needs_teacher = (c.prune.enabled and c.prune.recover.epochs > 0) or c.qat.enabled
    teachers = load_teachers(cfg.distill.teachers[:1], run_dir, data, cfg) if needs_teacher else {}
    origin = {"compressed_from": src}

    if c.prune.enabled:
        from mmdistill.compression.prune import prune_structured

        train = split_batches(data, "train", cfg.data.batch_size, limit=c.prune.taylor_batches)
        report = prune_structured(
            base,
            train[0],
            ratio=c.prune.ratio,
            branch_ratios=dict(c.prune.branch_ratios),
            importance=c.prune.importance,
            taylor_batches=train,
            round_to=c.prune.round_to,
        )
        name = f"{src}-{PRUNED}"
        before = accuracy_on(report.model, val)
        info = {"pruning": report.to_dict() | {"val_accuracy_before_recovery": before}}
        log.info(
            "compress: pruned %s to %s parameters (from %s), val acc %.4f before recovery",
            src,
            f"{report.params_after:,}",
            f"{report.params_before:,}",
            before,
        )
        pruned = _finetune(
            name,
            report.model,
            c.prune.recover,
            key="compress.prune.recover",
            data=data,
            cfg=cfg,
            run_dir=run_dir,
            teachers=teachers,
            logger=logger,
            extra=origin | info,
            progress=progress,
        )
        info["val_accuracy"] = accuracy_on(pruned, val)
        summary["variants"][name] = info

    if c.sparsity.enabled:
        from mmdistill.compression.sparsity import prune_unstructured_

        sparse = copy.deepcopy(base)
        rep = prune_unstructured_(sparse, sparsity=c.sparsity.sparsity, scope=c.sparsity.scope)
        name = f"{src}-{SPARSE}"
        info = {"sparsity": rep.to_dict(), "val_accuracy": accuracy_on(sparse, val)}
        _save(sparse, run_dir / "students" / name, data, cfg, origin | info)
        summary["variants"][name] = info

    sweep: list[dict[str, Any]] | None = None
    if c.sweep.enabled:
        from mmdistill.compression.fake_quant import bit_sweep

        sweep = []
        for split, batches in (("val", val), ("test", test)):
            rows = bit_sweep(
                base,
                lambda m, b=batches: accuracy_on(m, b),
                bits=c.sweep.bits,
                branches=c.sweep.branches,
                per_channel=c.sweep.per_channel,
            )
            sweep += [r | {"split": split} for r in rows]
        summary["bit_sweep"] = f"{COMPRESS_DIR}/bit_sweep.json"
        if is_main():
            _write(run_dir / COMPRESS_DIR / "bit_sweep.json", {"source": src, "rows": sweep})

    if c.qat.enabled:
        bits = _qat_bits(cfg, sweep)
        if bits is None:
            log.info(
                "compress: no swept bit width loses more than %.1f points after post-training "
                "quantization: QAT skipped",
                c.qat.max_ptq_drop,
            )
            summary["qat"] = {"skipped": f"no bit width loses more than {c.qat.max_ptq_drop} points"}
        else:
            from mmdistill.compression.policy import PrecisionPolicy
            from mmdistill.compression.qat import convert_qat_, prepare_qat_

            policy = PrecisionPolicy.from_dict({"default": bits, **c.qat.policy}, key="compress.qat.policy")
            name = qat_name(src, bits)
            if progress is not None and progress.done("compress", f"student-{name}"):
                log.info("student-%s: done, skipped (%s)", name, run_dir / "students" / name)
                qat_model = load_trained(run_dir / "students" / name).model.eval()
            else:
                # compression.qat.qat_finetune, spelled out to pass `resume` (it has no such argument).
                student = copy.deepcopy(base)
                prepare_qat_(student, policy)
                qat_model = distill_student(
                    name, recovery_variant(c.qat.recover, cfg), data, cfg, run_dir, teachers=teachers,
                    logger=logger, seed=cfg.seed, init=student, key="compress.qat.recover",
                    extra={"qat": policy.to_dict()} | origin, before_save=convert_qat_,
                    resume=progress is not None and progress.resuming,
                ).model
                if progress is not None:
                    progress.mark("compress", f"student-{name}")
            summary["variants"][name] = {
                "qat": policy.to_dict(),
                "val_accuracy": accuracy_on(qat_model, val),
            }
    barrier()
    if is_main():
        _write(run_dir / COMPRESS_DIR / "summary.json", summary)
    return summary


def _write(path: Path, obj: Any) -> None:
    atomic_write_json(path, obj)


def compressed_from(directory: Path) -> str | None:
    """The student a saved compressed variant came from (``None`` for an uncompressed one)."""
    extra = read_model_json(directory).get("extra") or {}
    return extra.get("compressed_from")
