"""The run tables of the report: training stages, compression, export artifacts, machine, packages."""

from __future__ import annotations

from typing import Any

from mmdistill.report.curves import loss_terms
from mmdistill.report.table import DASH, Cell, Table, count, num, pct, points, si, size, text


def _last(series: list[list[float]] | None) -> float | None:
    return series[-1][1] if series else None


def stages_table(curves: dict[str, dict[str, list[list[float]]]]) -> Table:
    """One row per training stage: epochs, last losses per term, last and best validation accuracy."""
    terms = sorted({t for s in curves.values() for t in loss_terms(s)},
                   key=lambda k: (k.startswith("val/"), k.count("/"), k))
    cols = ["stage", "epochs", *terms, "val acc (last)", "val acc (best)", "train s"]
    rows = []
    for stage, s in curves.items():
        val = s.get("val/accuracy") or []
        epochs = max((int(x) for series in s.values() for x, _ in series), default=0)
        seconds = sum(v for _, v in s.get("seconds") or [])
        rows.append([Cell(stage), Cell(str(epochs))] + [Cell(num(_last(s.get(t)), ".4f")) for t in terms]
                    + [Cell(pct(_last(val))), Cell(pct(max((v for _, v in val), default=None)))
                       if val else Cell(DASH), Cell(num(seconds, ".1f") if s.get("seconds") else DASH)])
    note = "losses of the last epoch (train/loss/<term>: each weighted term of the strategy's loss)"
    return Table("stages", "Training stages", cols, rows, note=note).drop_empty_columns()


def compress_table(compress: dict[str, Any] | None) -> Table:
    """What the compress stage made: each variant, how, and its validation accuracy."""
    summary = (compress or {}).get("summary") or {}
    rows = []
    for name, info in (summary.get("variants") or {}).items():
        how, detail = [], []
        if "pruning" in info:
            p = info["pruning"]
            how.append("structured pruning")
            detail.append(f"params {count(p.get('params_before'))} → {count(p.get('params_after'))}")
            macs_b = (p.get("macs_before") or {}).get("total")
            macs_a = (p.get("macs_after") or {}).get("total")
            if macs_b is not None:
                detail.append(f"MACs {si(macs_b)} → {si(macs_a)}")
            if "val_accuracy_before_recovery" in p:
                detail.append(f"val acc before recovery {pct(p['val_accuracy_before_recovery'])}")
        if "sparsity" in info:
            sp = info["sparsity"]
            how.append("unstructured sparsity")
            detail.append(f"target {pct(sp.get('target'), 0)}, overall {pct(sp.get('overall'), 1)}")
            if sp.get("note"):
                detail.append(str(sp["note"]))
        if "qat" in info:
            how.append("quantization-aware training")
            bits = (info["qat"] or {}).get("bits") or {}
            detail.append(f"default {info['qat'].get('default')} bits"
                          + (f", {', '.join(f'{k}: {v}' for k, v in bits.items())}" if bits else ""))
        rows.append([Cell(f"student-{name}"), Cell(", ".join(how) or DASH), Cell("; ".join(detail) or DASH),
                     Cell(pct(info.get("val_accuracy")))])
    src = summary.get("source")
    note = (f"source: student-{src} (val accuracy {pct(summary.get('source_val_accuracy'))})" if src else "")
    if isinstance(summary.get("qat"), dict) and summary["qat"].get("skipped"):
        note += f"; QAT skipped: {summary['qat']['skipped']}"
    return Table("compress", "Compression", ["variant", "method", "details", "val accuracy"], rows, note=note)


def bit_sweep_table(compress: dict[str, Any] | None) -> Table:
    """Post-training fake quantization per branch and bit width: accuracy drop and size ratio."""
    sweep = ((compress or {}).get("bit_sweep") or {}).get("rows") or []
    keyed: dict[tuple[str, Any], dict[str, Any]] = {}
    for r in sweep:
        keyed.setdefault((str(r.get("branch")), r.get("bits")), {})[str(r.get("split"))] = r
    rows = []
    for (branch, bits), by_split in keyed.items():
        val, test = by_split.get("val") or {}, by_split.get("test") or {}
        any_row = val or test
        rows.append([Cell(branch), Cell(text(bits)), Cell(pct(val.get("accuracy"))),
                     Cell(points(val.get("drop"))), Cell(pct(test.get("accuracy"))),
                     Cell(points(test.get("drop"))),
                     Cell(num(any_row.get("size_ratio"), ".3f"))])
    note = "accuracy drop in points (positive: worse than fp32); size ratio: quantized / fp32 bytes"
    cols = ["branch", "bits", "val acc", "val drop", "test acc", "test drop", "size ratio"]
    return Table("bit-sweep", "Bit-width sweep (post-training fake quantization)", cols, rows,
                 note=note).drop_empty_columns(keep=2)


def export_table(export: dict[str, Any] | None) -> Table:
    """Every export artifact: runtime, size, accuracy and its verification against eager."""
    rows = []
    for name, a in ((export or {}).get("artifacts") or {}).items():
        v, q = a.get("verify") or {}, a.get("quantization") or {}
        rows.append([Cell(name), Cell(text(a.get("runtime"))), Cell(size(a.get("bytes"))),
                     Cell(pct(a.get("accuracy"))), Cell(num(v.get("max_abs_error"), ".2e")),
                     Cell(pct(v.get("agreement"), 2)), Cell(num(q.get("size_ratio"), ".2f")),
                     Cell(text(a.get("note")))])
    lat = (export or {}).get("latency_settings")
    note = ("max |err|: largest logit difference from eager PyTorch; agreement: same top-1 as eager; "
            "fp32/int8: size ratio of the quantized file")
    if lat:
        note += (f"; latency timed in a separate process per artifact: {lat.get('threads')} thread(s), "
                 f"{lat.get('warmup')} warm-up, {lat.get('repeats')} repeats x {lat.get('rounds')} round(s), "
                 f"batch sizes {lat.get('batch_sizes')}")
    cols = ["artifact", "runtime", "size", "accuracy", "max |err|", "agreement", "fp32/int8", "note"]
    return Table("export", "Export artifacts", cols, rows, note=note).drop_empty_columns(keep=2)


def key_value_table(key: str, title: str, values: dict[str, Any] | None) -> Table:
    """A two-column table of ``values`` (machine description, package versions)."""
    rows = [[Cell(str(k)), Cell(text(v))] for k, v in (values or {}).items()]
    return Table(key, title, ["name", "value"], rows)
