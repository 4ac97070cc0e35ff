"""Small pure computations behind the report: the Pareto frontier and heat-map colours."""

from __future__ import annotations

import math
from collections.abc import Sequence

# Heat-map scale: light (lowest value of the table) to dark blue (highest), like matplotlib's "Blues".
LOW_RGB = (247, 251, 255)
HIGH_RGB = (8, 81, 156)
MISSING_COLOR = "#e6e6e6"  # a cell with no value (model does not accept that subset, not measured)


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def pareto_frontier(points: Sequence[tuple[str, float | None, float | None]]) -> list[str]:
    """Names of the points no other point beats: lower or equal cost *and* higher or equal accuracy.

    A point is dominated when another has ``cost <= its cost`` and ``accuracy >= its accuracy`` with
    at least one of the two strictly better. Identical points are all kept. Points whose cost or
    accuracy is missing or not finite are ignored.

    Args:
        points: ``(name, cost, accuracy)``, cost being latency (ms) or size (bytes); lower is better.

    Returns:
        The frontier's names, ordered by increasing cost (then decreasing accuracy).
    """
    valid = [(n, float(c), float(a)) for n, c, a in points if _finite(c) and _finite(a)]

    def dominated(p: tuple[str, float, float]) -> bool:
        return any(q[1] <= p[1] and q[2] >= p[2] and (q[1] < p[1] or q[2] > p[2]) for q in valid)

    front = [p for p in valid if not dominated(p)]
    return [n for n, _, _ in sorted(front, key=lambda p: (p[1], -p[2]))]


def heat_color(value: float | None, lo: float, hi: float) -> str:
    """Background colour of a heat-map cell: ``lo`` → light, ``hi`` → dark blue, linear in between.

    Values outside ``[lo, hi]`` are clamped; when ``lo == hi`` every value gets the middle colour;
    ``None`` or a non-finite value gets :data:`MISSING_COLOR`.

    Returns:
        A ``#rrggbb`` colour.
    """
    if not _finite(value):
        return MISSING_COLOR
    t = 0.5 if hi <= lo else min(max((float(value) - lo) / (hi - lo), 0.0), 1.0)  # type: ignore[arg-type]
    rgb = (round(a + (b - a) * t) for a, b in zip(LOW_RGB, HIGH_RGB, strict=True))
    return "#" + "".join(f"{c:02x}" for c in rgb)


def text_color(background: str) -> str:
    """Black or white, whichever reads better on ``background`` (``#rrggbb``)."""
    r, g, b = (int(background[i:i + 2], 16) for i in (1, 3, 5))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b  # ITU-R BT.709 weights, 0..255
    return "#000000" if luminance > 140 else "#ffffff"


def value_range(values: Sequence[float | None]) -> tuple[float, float] | None:
    """``(min, max)`` of the finite values, or None when there is none."""
    finite = [float(v) for v in values if _finite(v)]  # type: ignore[arg-type]
    return (min(finite), max(finite)) if finite else None
