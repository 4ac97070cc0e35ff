"""Constructor-argument checks and the dtype rule shared by the loss families.

Invalid values raise :class:`~mmdistill.errors.ConfigError` naming the kwarg, the value and the
valid range; legal but suspicious ones only warn.
"""

from __future__ import annotations

import math
import warnings
from numbers import Real

import torch

from mmdistill.errors import ConfigError

MAX_SENSIBLE_TEMPERATURE = 20.0
"""Above this a softmax is almost uniform and the distillation signal fades; we warn, not fail."""


def number(name: str, value: object) -> float:
    """``value`` as a finite float; bools, strings and NaN/inf are rejected."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ConfigError(f"`{name}` must be a finite number, got {value!r}")
    return float(value)


def temperature(value: object, name: str = "temperature") -> float:
    """A softmax temperature: > 0, with a warning above :data:`MAX_SENSIBLE_TEMPERATURE`."""
    t = number(name, value)
    if t <= 0:
        raise ConfigError(f"`{name}` must be > 0, got {value!r}")
    if t > MAX_SENSIBLE_TEMPERATURE:
        warnings.warn(
            f"`{name}` = {t:g} is unusually high (> {MAX_SENSIBLE_TEMPERATURE:g}): the softened "
            "distributions are nearly uniform and carry little signal; typical values are 1-8",
            UserWarning,
            stacklevel=3,
        )
    return t


def fraction(value: object, name: str) -> float:
    """A mixing weight in ``[0, 1]``."""
    x = number(name, value)
    if not 0.0 <= x <= 1.0:
        raise ConfigError(f"`{name}` must be in [0, 1], got {value!r}")
    return x


def non_negative(value: object, name: str) -> float:
    """A loss weight ``>= 0``."""
    x = number(name, value)
    if x < 0:
        raise ConfigError(f"`{name}` must be >= 0, got {value!r}")
    return x


def dim(value: object, name: str) -> int:
    """A feature width: a positive int."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"`{name}` must be a positive integer, got {value!r}")
    return int(value)



def upcast(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tensors in one common float dtype of at least float32 (float64 stays float64).

    Losses compute softmaxes, norms and Gram matrices, whose tails fp16/bf16 lose; promoting to a
    shared dtype also lets a float16 teacher cache meet a float32 student.
    """
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return tuple(t.to(dtype) for t in tensors)
