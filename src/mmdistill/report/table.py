"""The report's tables as plain data, rendered the same way to HTML and to Markdown.

A :class:`Table` holds text cells; a cell may carry a number for heat-map colouring (HTML only) and a
``tone`` (``"ship"``, ``"warn"``) that both renderers show. Builders live in
:mod:`mmdistill.report.tables`; the number formats used everywhere are here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

DASH = "–"  # a value the run did not measure
_NUMERIC = re.compile(r"^[+-]?[\d.,]+(e[+-]?\d+)?( ?(%|[kMG]|KiB|MiB|GiB|B|x))?$")


def is_numeric(text: str) -> bool:
    """Whether a cell's text is a formatted number (right-aligned) or :data:`DASH`."""
    return text == DASH or bool(_NUMERIC.match(text))


@dataclass(frozen=True)
class Cell:
    """One table cell: display ``text``, optional heat-map ``value`` and ``tone`` (css class)."""

    text: str
    value: float | None = None
    tone: str | None = None


@dataclass
class Table:
    """A titled table: ``columns`` headers and ``rows`` of :class:`Cell` (one per column).

    ``heat`` is ``(lo, hi)`` when cells with a ``value`` are to be coloured on that scale.
    """

    key: str
    title: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    note: str = ""
    heat: tuple[float, float] | None = None

    def drop_empty_columns(self, keep: int = 1) -> Table:
        """Remove columns (after the first ``keep``) in which every cell is :data:`DASH`."""
        if not self.rows:
            return self
        idx = [i for i in range(len(self.columns))
               if i < keep or any(r[i].text != DASH for r in self.rows)]
        self.columns = [self.columns[i] for i in idx]
        self.rows = [[r[i] for i in idx] for r in self.rows]
        return self


def finite(x: Any) -> bool:
    """True for an int or float (not bool) that is finite."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def pct(x: Any, digits: int = 2) -> str:
    """``0.1685`` → ``"16.85%"``; missing → :data:`DASH`."""
    return f"{100 * x:.{digits}f}%" if finite(x) else DASH


def num(x: Any, fmt: str = ".3f") -> str:
    """A number in format ``fmt``; missing → :data:`DASH`."""
    return format(x, fmt) if finite(x) else DASH


def points(x: Any) -> str:
    """An accuracy difference (fraction) in signed points: ``0.041`` → ``"+4.1"``."""
    return f"{100 * x:+.1f}" if finite(x) else DASH


def count(x: Any) -> str:
    """An integer with thousands separators."""
    return f"{int(x):,}" if finite(x) else DASH


def si(x: Any) -> str:
    """A large count in k/M/G: ``1503872`` → ``"1.50 M"``."""
    if not finite(x):
        return DASH
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.2f} {unit}"
    return f"{x:g}"


def size(x: Any) -> str:
    """Bytes in B/KiB/MiB/GiB."""
    if not finite(x):
        return DASH
    for div, unit in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if x >= div:
            return f"{x / div:.1f} {unit}"
    return f"{int(x)} B"


def text(x: Any) -> str:
    """Any value as text; None → :data:`DASH`, lists joined with ``", "``."""
    if x is None:
        return DASH
    if isinstance(x, (list, tuple)):
        return ", ".join(str(v) for v in x) or DASH
    return str(x)
