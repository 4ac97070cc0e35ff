"""Exceptions raised by mmdistill.

Every error a user can cause names the place (file, row, config key), the value received and
the fix. The CLI catches :class:`MMDistillError` and prints the message without a traceback.
"""

from __future__ import annotations


class MMDistillError(Exception):
    """Base class for errors caused by user input; printed without a traceback by the CLI."""


class ConfigError(MMDistillError):
    """The configuration is invalid. ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration ({len(self.problems)} problem(s)):\n{lines}")


class DataError(MMDistillError):
    """A data file, manifest row or sample is unusable.

    Args:
        message: what is wrong and how to fix it.
        path: the file involved, if any.
        row: 1-based manifest row (line number for JSONL, data row for CSV), if any.
    """

    def __init__(self, message: str, *, path: str | None = None, row: int | None = None) -> None:
        self.path = path
        self.row = row
        where = []
        if path is not None:
            where.append(str(path))
        if row is not None:
            where.append(f"row {row}")
        prefix = f"{', '.join(where)}: " if where else ""
        super().__init__(prefix + message)


class CheckpointError(MMDistillError):
    """A checkpoint is missing, unreadable, or does not match the expected architecture."""


class MissingDependencyError(MMDistillError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the optional package '{package}', which is not installed. "
            f"Install it with: pip install 'mmdistill[{extra}]'"
        )


class NonFiniteLossError(MMDistillError):
    """Training produced a NaN or infinite loss (or gradient norm) and stopped at once.

    Attributes:
        stage: the training stage (``teacher``, ``student-kd``, ...).
        epoch: 1-based epoch of the bad step.
        step: 1-based step within the epoch; ``global_step`` counts from the start of the stage.
        terms: each non-finite entry (``loss``, ``loss/<term>``, ``grad_norm``) → its value.
        batch_ids: the sample ids of the bad batch (this rank's part under DDP).
        last_good: where the last good resume state is (``None`` when no epoch completed).
    """

    def __init__(self, message: str, *, stage: str | None, epoch: int, step: int, global_step: int,
                 terms: dict[str, float], batch_ids: list[str], last_good: str | None = None) -> None:
        super().__init__(message)
        self.stage, self.epoch, self.step, self.global_step = stage, epoch, step, global_step
        self.terms, self.batch_ids, self.last_good = dict(terms), list(batch_ids), last_good
