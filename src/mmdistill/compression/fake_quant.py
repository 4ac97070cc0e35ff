"""Uniform b-bit fake quantization of weights, applied per branch, and the accuracy-vs-bits sweep.

This is the in-PyTorch **sensitivity analysis**: weights are rounded to a b-bit grid and stored
back as fp32 (simulated quantization), so any bit width from 2 to 8 can be tried on any branch.
It makes nothing faster; the deployable int8 path is ONNX Runtime (see docs/quantization.md).

Asymmetric (min-max) quantization of a tensor (or of each output channel, axis 0) with range
``[lo, hi]`` at b bits::

    s = (hi - lo) / (2^b - 1)          z = round(-lo / s)
    q = clamp(round(w / s) + z, 0, 2^b - 1)          w_hat = (q - z) * s

Symmetric: ``s = max|w| / (2^(b-1) - 1)``, ``q = clamp(round(w / s), -(2^(b-1) - 1), 2^(b-1) - 1)``,
``w_hat = q * s``. A constant group (``s = 0``) is returned unchanged: it is exactly representable.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from mmdistill.compression.policy import (
    FLOAT_BITS,
    PrecisionPolicy,
    check_bits,
    model_branches,
    quantizable_weights,
    quantized_branches,
    weight_bits_size,
)
from mmdistill.errors import ConfigError


def _reduce_dims(w: torch.Tensor, per_channel: bool) -> tuple[int, ...]:
    # Per channel: reduce over every axis but 0 (the output channel / row / gate unit).
    if per_channel and w.ndim >= 2:
        return tuple(range(1, w.ndim))
    return tuple(range(w.ndim))


def quant_params(
    w: torch.Tensor, bits: int, *, per_channel: bool = True, symmetric: bool = False
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Scale, zero point and integer range of ``w`` at ``bits`` (b in 2..8).

    Returns:
        ``(scale, zero_point, q_min, q_max)``; scale and zero point broadcast against ``w``
        (shape ``[C, 1, ...]`` per channel, ``[1, ...]`` per tensor); zero point is 0 when symmetric.
    """
    dims = _reduce_dims(w, per_channel)
    if symmetric:
        q_max = 2 ** (bits - 1) - 1
        scale = w.abs().amax(dim=dims, keepdim=True) / q_max
        return scale, torch.zeros_like(scale), -q_max, q_max
    q_max = 2**bits - 1
    lo = w.amin(dim=dims, keepdim=True)
    hi = w.amax(dim=dims, keepdim=True)
    scale = (hi - lo) / q_max
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.round(-lo / safe)
    return scale, zero, 0, q_max


def quantize_weight(
    w: torch.Tensor, bits: int, *, per_channel: bool = True, symmetric: bool = False
) -> torch.Tensor:
    """Fake-quantize ``w`` to a uniform ``bits``-bit grid (see the module docstring for the formula).

    Args:
        w: a weight tensor (any shape; per channel uses axis 0, a 1-D tensor is per tensor).
        bits: 2..8 to quantize; 16 or 32 return ``w`` itself (left in floating point).
        per_channel: one range per slice along axis 0 instead of one for the whole tensor.
        symmetric: symmetric signed grid around 0 instead of asymmetric min-max.

    Returns:
        A new tensor of ``w``'s shape and dtype holding at most ``2^bits`` distinct values per
        channel (``2^bits - 1`` when symmetric); constant channels are returned unchanged.

    Raises:
        ConfigError: ``bits`` is not 2..8, 16 or 32.
    """
    bits = check_bits(bits)
    if bits in FLOAT_BITS:
        return w
    if w.numel() == 0:
        return w.clone()
    x = w.detach().float()
    scale, zero, q_min, q_max = quant_params(x, bits, per_channel=per_channel, symmetric=symmetric)
    nonzero = scale > 0
    safe = torch.where(nonzero, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(x / safe) + zero, q_min, q_max)
    w_hat = torch.where(nonzero, (q - zero) * safe, x)
    return w_hat.to(w.dtype)


def clip_mask(
    w: torch.Tensor, bits: int, *, per_channel: bool = True, symmetric: bool = False
) -> torch.Tensor:
    """Bool mask of the entries of ``w`` inside the representable range ``[(q_min - z) s, (q_max - z) s]``.

    With min-max ranges almost everything is inside; the asymmetric grid can clip the extremes by
    up to ``s / 2`` because the zero point is rounded. Used by the STE that zeroes gradients there.
    """
    bits = check_bits(bits)
    if bits in FLOAT_BITS:
        return torch.ones_like(w, dtype=torch.bool)
    x = w.detach().float()
    scale, zero, q_min, q_max = quant_params(x, bits, per_channel=per_channel, symmetric=symmetric)
    lo, hi = (q_min - zero) * scale, (q_max - zero) * scale
    return ((x >= lo) & (x <= hi)) | (scale == 0)


@torch.no_grad()
def quantize_weights_(model: nn.Module, policy: PrecisionPolicy) -> int:
    """Fake-quantize, in place, the Conv/Linear/RNN/Embedding weights of each branch at its bits.

    Biases, normalization layers and loose parameters are left as they are. Branches at 16/32
    bits are untouched.

    Args:
        model: a MultimodalModel (``encoders``, ``fusion``, ``head``).
        policy: branch → bits (and per-channel / symmetric).

    Returns:
        The number of weight tensors quantized.
    """
    count = 0
    for _, bits, sub in quantized_branches(model, policy):
        for _, module, name in quantizable_weights(sub):
            weight = getattr(module, name)
            weight.copy_(quantize_weight(weight, bits, per_channel=policy.per_channel,
                                         symmetric=policy.symmetric))
            count += 1
        # RNNs cache flat weight views; re-sync them after the in-place write (cuDNN path on GPU).
        for m in sub.modules():
            if isinstance(m, nn.RNNBase):
                m.flatten_parameters()
    return count


def bit_sweep(
    model: nn.Module,
    evaluate: Callable[[nn.Module], float],
    *,
    bits: Sequence[int] = (2, 3, 4, 5, 6, 8),
    branches: Sequence[str] | None = None,
    per_channel: bool = True,
    symmetric: bool = False,
) -> list[dict[str, Any]]:
    """Accuracy and size versus weight bits, per branch alone and for the whole model.

    For every branch in ``branches`` (others left fp32) and for ``"all"`` (every branch at the same
    bits), and every width in ``bits``, a deep copy of ``model`` is fake-quantized and scored with
    ``evaluate``. ``model`` itself is never modified.

    Args:
        model: a MultimodalModel, typically in eval mode.
        evaluate: model → accuracy (any score where higher is better, e.g. in ``[0, 1]``).
        bits: widths to try (2..8; 16/32 allowed but only as a size reference).
        branches: defaults to the model's branches (its modalities, ``fusion``, ``head``).
        per_channel: per-output-channel ranges.
        symmetric: symmetric grid.

    Returns:
        JSON-ready rows: first the fp32 reference ``{"branch": "none", "bits": 32, ...}``, then one per
        (branch, bits) with keys ``branch, bits, per_channel, symmetric, accuracy, fp32_accuracy,
        drop`` (fp32 minus quantized accuracy), ``size_bytes, fp32_size_bytes, size_ratio`` and
        ``tensors`` (weights quantized).

    Raises:
        ConfigError: an unknown branch or unsupported width.
    """
    widths = [check_bits(b, key="bits") for b in bits]
    available = model_branches(model)
    chosen = list(branches) if branches is not None else list(available)
    missing = [b for b in chosen if b not in available]
    if missing:
        raise ConfigError(f"branches: {missing} not in this model; it has {available}")
    base_acc = float(evaluate(model))
    base_policy = PrecisionPolicy(per_channel=per_channel, symmetric=symmetric)
    base_size = weight_bits_size(model, base_policy)
    rows: list[dict[str, Any]] = [_row("none", 32, base_policy, base_acc, base_acc, base_size, base_size, 0)]
    for branch in [*chosen, "all"]:
        for width in widths:
            if branch == "all":
                policy = PrecisionPolicy(default=width, per_channel=per_channel, symmetric=symmetric)
            else:
                policy = PrecisionPolicy(bits={branch: width}, per_channel=per_channel, symmetric=symmetric)
            candidate = copy.deepcopy(model)
            tensors = quantize_weights_(candidate, policy)
            acc = float(evaluate(candidate))
            size = weight_bits_size(model, policy)
            rows.append(_row(branch, width, policy, acc, base_acc, size, base_size, tensors))
    return rows


def _row(branch: str, bits: int, policy: PrecisionPolicy, acc: float, base_acc: float, size: int,
         base_size: int, tensors: int) -> dict[str, Any]:
    return {
        "branch": branch,
        "bits": int(bits),
        "per_channel": policy.per_channel,
        "symmetric": policy.symmetric,
        "accuracy": acc,
        "fp32_accuracy": base_acc,
        "drop": base_acc - acc if math.isfinite(acc) and math.isfinite(base_acc) else float("nan"),
        "size_bytes": int(size),
        "fp32_size_bytes": int(base_size),
        "size_ratio": size / base_size if base_size else float("nan"),
        "tensors": int(tensors),
    }


def choose_qat_bits(rows: Sequence[dict[str, Any]], max_ptq_drop: float) -> int | None:
    """The widest width at which post-training quantization of the whole model drops too much.

    That is where QAT is worth its fine-tuning: wider widths lose at most ``max_ptq_drop`` under
    plain PTQ, narrower ones are harder still.

    Args:
        rows: :func:`bit_sweep` rows (only ``branch == "all"`` rows are read).
        max_ptq_drop: tolerated drop in accuracy **points** (1.0 = one percentage point).

    Returns:
        That bit width, or None when PTQ stays within ``max_ptq_drop`` at every swept width.
    """
    over = [int(r["bits"]) for r in rows
            if r["branch"] == "all" and math.isfinite(r["drop"]) and 100.0 * r["drop"] > max_ptq_drop]
    return max(over) if over else None
