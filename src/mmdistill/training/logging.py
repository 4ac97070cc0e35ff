"""Metrics to ``metrics.jsonl`` (one JSON object per line), a one-line summary per epoch, and the
``logging`` set-up for the ``mmdistill`` logger.

Only rank 0 writes or prints: under torchrun every other rank's logger is silent, so library code
logs unconditionally. Each line is flushed as it is written, so a crashed or interrupted run keeps
every epoch it finished and ``tail -f metrics.jsonl`` follows a live run. It is the one file not
written atomically (an append log): a kill can cut its last line, which readers skip.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmdistill.errors import ConfigError, MissingDependencyError
from mmdistill.io_atomic import jsonable
from mmdistill.training.distributed import is_main

METRICS_FILE = "metrics.jsonl"

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_HANDLER_NAME = "mmdistill-console"


def _end_torn_line(path: Path) -> None:
    """End a last line cut off by a kill with a newline, so the next record starts a line of its own.

    ``metrics.jsonl`` is an append-only log, not written atomically: its readers skip a line that
    does not parse (``drop_stage_records``, ``report.curves.read_curves``), but a record appended to
    the torn line would be lost with it.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, 2)
        if f.read(1) != b"\n":
            f.write(b"\n")


class MetricsLogger:
    """Appends metric records to a JSON-lines file and prints epoch summaries, on rank 0 only.

    Each record is ``{"stage": ..., "epoch": ..., "step": ..., "time": <unix seconds>, **metrics}``.

    Args:
        path: the ``metrics.jsonl`` file (an existing directory means ``<dir>/metrics.jsonl``),
            or None to write no file (printing still happens).
        stage: default stage name for records (``"teacher"``, ``"distill"``, ...).
        quiet: print nothing (the file is still written).
        tensorboard_dir: also write scalars for TensorBoard there (needs the ``tensorboard`` extra).
    """

    def __init__(
        self,
        path: Path | None,
        *,
        stage: str = "",
        quiet: bool = False,
        tensorboard_dir: Path | None = None,
    ) -> None:
        self.enabled = is_main()
        self.stage = stage
        self.quiet = quiet
        self.path: Path | None = None
        if path is not None:
            path = Path(path)
            self.path = path / METRICS_FILE if path.is_dir() else path
        if self.enabled and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _end_torn_line(self.path)
        self._tb: Any = None
        if self.enabled and tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise MissingDependencyError("tensorboard", "tensorboard", "Logging to TensorBoard") from e
            self._tb = SummaryWriter(log_dir=str(tensorboard_dir))

    def log(
        self,
        metrics: Mapping[str, Any],
        *,
        epoch: int | None = None,
        step: int | None = None,
        stage: str | None = None,
    ) -> dict[str, Any]:
        """Append one record (rank 0 only) and return it.

        Args:
            metrics: name → value (floats, ints, strings, tensors, small lists).
            epoch: 1-based epoch, if the record belongs to one.
            step: global optimizer step, if any.
            stage: overrides the logger's default stage for this record.
        """
        stage = self.stage if stage is None else stage
        record = {"stage": stage, "epoch": epoch, "step": step, "time": time.time()}
        record.update({k: jsonable(v) for k, v in metrics.items()})
        if not self.enabled:
            return record
        if self.path is not None:
            # Open per record: cheap at per-epoch/per-N-steps rates, and nothing is left buffered.
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, allow_nan=False) + "\n")
                f.flush()
        if self._tb is not None:
            x = step if step is not None else (epoch if epoch is not None else 0)
            for key, value in record.items():
                if key not in ("epoch", "step", "time") and isinstance(value, (int, float)):
                    self._tb.add_scalar(f"{stage}/{key}" if stage else key, value, global_step=x)
            self._tb.flush()
        return record

    def log_epoch(
        self,
        epoch: int,
        metrics: Mapping[str, Any],
        *,
        epochs: int | None = None,
        step: int | None = None,
        stage: str | None = None,
        note: str = "",
    ) -> str:
        """Log an epoch record and print its one-line summary; return the line.

        The line shows the keys ``train/loss``, ``val/loss``, ``val/accuracy``, ``lr`` and
        ``seconds`` when present, e.g.
        ``teacher epoch 3/10  train loss 0.4213  val loss 0.3871  val acc 88.40%  lr 9.51e-04  2.1s``.
        """
        record = self.log(metrics, epoch=epoch, step=step, stage=stage)
        line = format_epoch_line(record, epochs=epochs) + (f"  {note}" if note else "")
        self.info(line)
        return line

    def info(self, message: str) -> None:
        """Print ``message`` on rank 0 unless quiet."""
        if self.enabled and not self.quiet:
            print(message, flush=True)

    def close(self) -> None:
        """Close the TensorBoard writer, if any (the JSON file is never held open)."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def format_epoch_line(record: Mapping[str, Any], *, epochs: int | None = None) -> str:
    """The one-line epoch summary for ``record`` (see :meth:`MetricsLogger.log_epoch`)."""

    def num(key: str, fmt: str) -> str | None:
        v = record.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return format(v, fmt)
        return "nan" if key in record else None

    head = f"{record.get('stage') or ''} epoch {record.get('epoch')}".strip()
    if epochs is not None:
        head += f"/{epochs}"
    parts = [head]
    for key, label, fmt in (
        ("train/loss", "train loss", ".4f"),
        ("val/loss", "val loss", ".4f"),
        ("val/accuracy", "val acc", ".2%"),
        ("lr", "lr", ".2e"),
    ):
        text = num(key, fmt)
        if text is not None:
            parts.append(f"{label} {text}")
    secs = num("seconds", ".1f")
    if secs is not None:
        parts.append(f"{secs}s")
    return "  ".join(parts)


def setup_logging(level: str = "INFO") -> logging.Logger:
    """Send the ``mmdistill`` logger's records to stderr as ``HH:MM:SS LEVEL name: message``.

    Only this package's logger is configured (the root logger and other libraries are left
    alone); calling it again just changes the level. Ranks other than 0 log warnings and errors only.

    Args:
        level: one of DEBUG, INFO, WARNING, ERROR, CRITICAL (case-insensitive).

    Returns:
        The ``mmdistill`` logger.
    """
    name = str(level).upper()
    if name not in _LEVELS:
        raise ConfigError(f"log level must be one of {', '.join(_LEVELS)}, got {level!r}")
    logger = logging.getLogger("mmdistill")
    if not any(getattr(h, "name", None) == _HANDLER_NAME for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    numeric = getattr(logging, name)
    logger.setLevel(numeric if is_main() else max(numeric, logging.WARNING))
    return logger
