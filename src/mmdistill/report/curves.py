"""Training curves from ``metrics.jsonl``: one series per stage and metric.

Each line of ``metrics.jsonl`` is ``{"stage", "epoch", "step", "time", <metric>: value, ...}``
(:class:`mmdistill.training.logging.MetricsLogger`). Epoch records (those holding ``seconds`` or a
``val/...`` key) become ``curves[stage][metric] = [[epoch, value], ...]``; the per-step records that
``log_every`` adds become ``step_curves[stage][metric] = [[step, value], ...]``.

A stage rerun into the same folder appends to the file: when a stage's epoch (or step) goes back, the
earlier attempt is dropped, so the curves show the last run of each stage. ``--resume`` continues
with higher epochs and keeps the earlier ones.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_NOT_METRICS = frozenset({"stage", "epoch", "step", "time"})

Series = dict[str, list[list[float]]]


@dataclass
class Curves:
    """What :func:`read_curves` found: epoch curves, step curves, and unreadable lines skipped."""

    epochs: dict[str, Series] = field(default_factory=dict)
    steps: dict[str, Series] = field(default_factory=dict)
    skipped_lines: int = 0


def _is_epoch_record(record: dict[str, Any]) -> bool:
    return "seconds" in record or any(k.startswith("val/") for k in record)


def _metrics(record: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in record.items():
        if key in _NOT_METRICS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


def _add(series: dict[str, Series], last: dict[str, float], stage: str, x: float, metrics: dict) -> None:
    if stage in last and x <= last[stage]:
        series[stage] = {}  # the stage started over: keep only its latest attempt
    last[stage] = x
    per_stage = series.setdefault(stage, {})
    for key, value in metrics.items():
        per_stage.setdefault(key, []).append([x, value])


def read_curves(path: Path) -> Curves:
    """Parse ``metrics.jsonl`` into per-stage curves; a missing file gives empty curves.

    Lines that are not JSON objects (a run killed mid-write leaves half a line) are skipped and
    counted in :attr:`Curves.skipped_lines`, with a warning naming the file and line.
    """
    out = Curves()
    path = Path(path)
    if not path.is_file():
        return out
    last_epoch: dict[str, float] = {}
    last_step: dict[str, float] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict):
                out.skipped_lines += 1
                log.warning("%s, line %d: not a JSON object, left out of the training curves", path, lineno)
                continue
            stage = str(record.get("stage") or "run")
            metrics = _metrics(record)
            if not metrics:
                continue
            epoch, step = record.get("epoch"), record.get("step")
            if _is_epoch_record(record) and isinstance(epoch, (int, float)):
                _add(out.epochs, last_epoch, stage, float(epoch), metrics)
            elif isinstance(step, (int, float)):
                _add(out.steps, last_step, stage, float(step), metrics)
    return out


def loss_terms(series: Series) -> list[str]:
    """The loss series of one stage, total first: ``train/loss``, ``train/loss/<term>``..., ``val/loss``."""
    keys = [k for k in series if k == "loss" or k.endswith("/loss") or "/loss/" in k or k.startswith("loss/")]
    return sorted(keys, key=lambda k: (k.startswith("val/"), k.count("/"), k))
