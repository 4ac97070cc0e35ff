"""Number phrases for the built-in ``mmdigits`` dataset (used at build time only).

A clean phrase names its digit exactly: a number word (English or another language through
``num2words``), a digit string, a small sum or product ("3+4", "ten minus three") or a description
("the number after six"). A heavily degraded phrase gives only partial information: an ambiguous
description whose candidate set holds 2-4 digits ("an odd number below five" → {1, 3}) or a word
with most letters garbled ("s*v*n").
"""

from __future__ import annotations

import random

from mmdistill.data.datasets.degrade import DEFAULT_PARAMS, DegradeParams, typo

FOREIGN_LANGS = ("de", "fr", "es", "it", "pt", "nl")
# Relative weights of the clean phrase kinds.
# Sums and descriptions are kept rare: a quick bag-of-n-grams model cannot compute them, which
# would make "clean" text unreliable for reasons the degradation design does not control.
CLEAN_KINDS = {"word": 0.38, "foreign": 0.2, "digits": 0.2, "arith": 0.14, "desc": 0.08}
# Named digit sets used by ambiguous phrases, beside parity/range constraints.
NAMED_SETS = {
    "a prime number": (2, 3, 5, 7),
    "a perfect square": (0, 1, 4, 9),
    "a power of two": (1, 2, 4, 8),
    "a positive multiple of three": (3, 6, 9),
}


def _words(lang: str = "en") -> list[str]:
    from num2words import num2words

    return [num2words(n, lang=lang) for n in range(21)]


def _num(n: int, rng: random.Random) -> str:
    """A number as digits or as an English word, at random."""
    return str(n) if rng.random() < 0.5 else _words()[n]


def _arith(d: int, rng: random.Random) -> str:
    ops: list[tuple[int, str, int]] = []
    a = rng.randint(0, d)
    ops.append((a, "+", d - a))
    b = rng.randint(0, 9 - d if d < 9 else 3)
    ops.append((d + b, "-", b))
    # x = 1 always divides, so there is at least one product (for d = 0 every x * 0).
    ops += [(x, "*", d // x) for x in range(1, 10) if d % x == 0 and d // x <= 9]
    if d <= 4:
        m = rng.randint(1, 2)
        ops.append((d * m, "/", m))
    x, op, y = rng.choice(ops)
    if d == 0 and op == "*" and rng.random() < 0.5:
        x, y = y, x
    form = rng.random()
    if form < 0.4:
        return f"{x}{op}{y}" if rng.random() < 0.5 else f"{x} {op} {y}"
    name = {"+": "plus", "-": "minus", "*": "times", "/": "divided by"}[op]
    phrase = f"{_num(x, rng)} {name} {_num(y, rng)}"
    return f"what is {phrase}?" if form > 0.8 else phrase


def _desc(d: int, rng: random.Random) -> str:
    w = _words()
    forms = []
    if d >= 1:
        forms += [f"the number after {w[d - 1]}", f"one more than {_num(d - 1, rng)}"]
    forms += [f"the number before {w[d + 1]}", f"one less than {_num(d + 1, rng)}", f"half of {w[2 * d]}"]
    if d >= 2:
        forms.append(f"two more than {_num(d - 2, rng)}")
    if d % 2 == 0:
        forms.append(f"twice {w[d // 2]}")
    return rng.choice(forms)


def clean_phrase(d: int, rng: random.Random) -> tuple[str, str]:
    """A phrase that names digit ``d`` exactly; returns ``(text, kind)``."""
    kind = rng.choices(list(CLEAN_KINDS), weights=list(CLEAN_KINDS.values()))[0]
    if kind == "word":
        word = _words()[d]
        text = rng.choice([word, word.capitalize(), word.upper(), f"the number {word}", f"it's {word}",
                           f"digit {word}"])
    elif kind == "foreign":
        text = _words(rng.choice(FOREIGN_LANGS))[d]
    elif kind == "digits":
        text = rng.choice([f"{d}", f"the digit {d}", f"#{d}", f"number {d}", f"0{d}", f"{d}.0"])
    elif kind == "arith":
        text = _arith(d, rng)
    else:
        text = _desc(d, rng)
    return text, kind


def _range_sets(sizes: tuple[int, ...]) -> list[tuple[str, tuple[int, ...], int, int]]:
    """Every (parity, lo, hi) constraint whose candidate set size is in ``sizes``."""
    out = []
    for parity in ("odd", "even", "any"):
        for lo in range(10):
            for hi in range(lo, 10):
                cands = tuple(n for n in range(lo, hi + 1)
                              if parity == "any" or (n % 2 == 1) == (parity == "odd"))
                # Only tight constraints: the bounds must themselves be candidates.
                if len(cands) in sizes and cands[0] == lo and cands[-1] == hi:
                    out.append((parity, cands, lo, hi))
    return out


def partial_phrase(d: int, rng: random.Random, sizes: tuple[int, ...]) -> tuple[str, list[int]]:
    """An ambiguous phrase true of ``d`` and of 1-3 other digits; returns ``(text, candidates)``."""
    options: list[tuple[str, tuple[int, ...]]] = [(n, c) for n, c in NAMED_SETS.items() if d in c]
    for parity, cands, lo, hi in _range_sets(sizes):
        if d not in cands:
            continue
        noun = {"odd": "an odd number", "even": "an even number", "any": "a digit"}[parity]
        forms = [f"{noun} from {_num(lo, rng)} to {_num(hi, rng)}"]
        if lo == 0 or (lo == 1 and parity == "odd"):
            forms.append(f"{noun} below {_num(hi + 1, rng)}")
        if hi == 9 or (hi == 8 and parity == "even"):
            forms.append(f"{noun} greater than {_num(lo - 1, rng)}")
        if lo > 0 and hi < 9:
            forms.append(f"{noun} greater than {_num(lo - 1, rng)} and less than {_num(hi + 1, rng)}")
        options.append((rng.choice(forms), cands))
    text, cands = rng.choice(options)
    return text, list(cands)


def make_phrase(
    d: int, heavy: str | None, rng: random.Random, params: DegradeParams = DEFAULT_PARAMS
) -> tuple[str, str, list[int]]:
    """The final stored phrase for a sample of digit ``d``.

    Args:
        d: the label.
        heavy: ``None`` (clean, sometimes one typo), ``"partial"`` or ``"typos"``.
        rng: the builder's seeded stream.
        params: the text knobs.

    Returns:
        ``(text, kind, candidates)``: kind is the clean kind, ``"partial"`` or ``"typos"``;
        candidates lists the digits the phrase is consistent with (just ``[d]`` when clean).
    """
    if heavy == "partial":
        text, cands = partial_phrase(d, rng, params.text_partial_sizes)
        return text, "partial", cands
    if heavy == "typos":
        word = _words()[d]
        text = typo(rng.choice([word, f"the number {word}"]), rng, params.text_heavy_typo_rate)
        return text, "typos", [d]
    text, kind = clean_phrase(d, rng)
    if rng.random() < params.text_light_typo_prob:
        text = typo(text, rng)
    return text, kind, [d]
