"""The Pareto frontier and the heat-map colours, on hand-built inputs with exact expected answers."""

from __future__ import annotations

import math

import pytest

from mmdistill.report.analysis import MISSING_COLOR, heat_color, pareto_frontier, text_color, value_range


def test_frontier_keeps_exactly_the_undominated_points_in_cost_order() -> None:
    points = [
        ("teacher", 10.0, 0.95),   # most accurate: on the frontier however slow
        ("kd", 2.0, 0.90),         # on
        ("scratch", 2.5, 0.80),    # dominated by kd (cheaper and better)
        ("int8", 1.0, 0.89),       # on: cheapest of the accurate ones
        ("pruned", 1.0, 0.85),     # dominated by int8 (same cost, less accurate)
        ("tiny", 0.5, 0.40),       # on: the cheapest of all
        ("slow-bad", 20.0, 0.10),  # dominated by everything
    ]
    assert pareto_frontier(points) == ["tiny", "int8", "kd", "teacher"]


def test_frontier_keeps_identical_points_and_ignores_missing_costs() -> None:
    points = [("a", 1.0, 0.5), ("b", 1.0, 0.5), ("c", None, 0.99), ("d", 2.0, math.nan), ("e", 3.0, 0.4)]
    assert pareto_frontier(points) == ["a", "b"]
    assert pareto_frontier([]) == []


def test_frontier_of_a_tradeoff_chain_is_the_whole_chain() -> None:
    chain = [(f"m{i}", float(i), 0.1 * i) for i in range(1, 6)]
    assert pareto_frontier(list(reversed(chain))) == [n for n, _, _ in chain]


def test_heat_color_ends_middle_clamping_and_missing() -> None:
    assert heat_color(0.2, 0.2, 0.8) == "#f7fbff"  # lowest: light
    assert heat_color(0.8, 0.2, 0.8) == "#08519c"  # highest: dark blue
    assert heat_color(0.5, 0.2, 0.8) == "#80a6ce"  # halfway, channel by channel (rounded)
    assert heat_color(-5.0, 0.0, 1.0) == heat_color(0.0, 0.0, 1.0)
    assert heat_color(7.0, 0.0, 1.0) == heat_color(1.0, 0.0, 1.0)
    assert heat_color(0.3, 0.3, 0.3) == heat_color(0.5, 0.0, 1.0)  # flat table: the middle colour
    assert heat_color(None, 0.0, 1.0) == MISSING_COLOR
    assert heat_color(math.nan, 0.0, 1.0) == MISSING_COLOR


@pytest.mark.parametrize(("background", "expected"), [("#f7fbff", "#000000"), ("#08519c", "#ffffff")])
def test_text_color_contrasts_with_the_background(background: str, expected: str) -> None:
    assert text_color(background) == expected


def test_value_range_skips_missing_values() -> None:
    assert value_range([0.3, None, 0.9, math.inf, 0.1]) == (0.1, 0.9)
    assert value_range([None]) is None
