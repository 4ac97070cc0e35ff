"""Length, mask and pooling helpers shared by the sequence encoders.

All helpers are branch-free on tensor values (only shapes drive Python control flow), so the
encoders that use them trace and export to ONNX with a dynamic batch and length.
"""

from __future__ import annotations

import torch
from torch import nn

from mmdistill.errors import DataError


def full_lengths(lengths: torch.Tensor | None, batch: int, steps: int, device: torch.device) -> torch.Tensor:
    """Valid lengths clamped to ``[1, steps]``; ``None`` means every row is ``steps`` long.

    Rows of length 0 (the modality is absent for that row) are clamped to 1 so that pooling
    never divides by zero; the model masks those rows out after the encoder anyway.

    Shapes:
        lengths: ``[B]`` integer or None. Returns ``[B]`` int64.
    """
    if lengths is None:
        return torch.full((batch,), steps, dtype=torch.long, device=device)
    return lengths.to(device=device, dtype=torch.long).clamp(1, steps)


def time_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """True at valid positions.

    Shapes:
        lengths: ``[B]``. Returns ``[B, steps]`` bool.
    """
    return torch.arange(steps, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def valid_frames(lengths: torch.Tensor | None, steps: int, ref: torch.Tensor) -> torch.Tensor:
    """Float mask of valid positions, shaped to multiply a channels-first ``[B, C, steps]`` tensor.

    The same mask as ``time_mask(full_lengths(lengths, ...), steps)`` (a length above ``steps``
    marks every step valid either way), built without the upper clamp, whose bound the exported
    graph would read from the input's shape (the text CNN's mask: 12 exported nodes -> 7).

    Shapes:
        lengths: ``[B]`` integer or None (every row ``steps`` long); ref: any ``[B, ...]`` tensor
        giving the batch size, device and float dtype. Returns ``[B, 1, steps]`` of ``ref.dtype``.
    """
    if lengths is None:
        return torch.ones(ref.shape[0], 1, steps, dtype=ref.dtype, device=ref.device)
    if lengths.dtype != torch.long or lengths.device != ref.device:  # else .to() exports a Cast
        lengths = lengths.to(device=ref.device, dtype=torch.long)
    t = torch.arange(steps, device=ref.device)
    return (t < lengths.clamp_min(1).view(-1, 1, 1)).to(ref.dtype)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid positions of the time axis.

    Shapes:
        x: ``[B, T, D]``; mask: ``[B, T]`` bool with at least one True per row. Returns ``[B, D]``.
    """
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def gather_time(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Pick one time step per row.

    Shapes:
        x: ``[B, T, D]``; index: ``[B]`` int64 in ``[0, T)``. Returns ``[B, D]``.
    """
    # expand_as and [:, 0] instead of expand(-1, 1, D) and squeeze(1): the exported graph then
    # needs no shape arithmetic (Where/Equal on -1) and no If node for the squeeze.
    idx = index.view(-1, 1, 1).expand_as(x[:, :1])
    return x.gather(1, idx)[:, 0]


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row's first ``lengths[b]`` steps in place, leaving the padding where it is.

    Running a forward RNN over the result is the backward direction of a packed bidirectional
    RNN, exactly, without ``pack_padded_sequence`` (which ONNX export does not handle well).
    Applying it twice is the identity.

    Shapes:
        x: ``[B, T, D]``; lengths: ``[B]`` in ``[1, T]``. Returns ``[B, T, D]``.
    """
    steps = x.shape[1]
    t = torch.arange(steps, device=x.device).unsqueeze(0)
    last = lengths.unsqueeze(1) - 1
    idx = torch.where(t <= last, last - t, t)
    return x.gather(1, idx.unsqueeze(-1).expand_as(x))


def halve_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Lengths after a stride-2 ``ceil_mode`` pool: position ``j`` is valid iff ``2j < length``.

    Shapes:
        lengths: ``[B]``. Returns ``[B]``.
    """
    return torch.div(lengths + 1, 2, rounding_mode="floor")


def conv1d_stages(in_channels: int, widths: list[int], kernel_size: int) -> nn.ModuleList:
    """Conv1d-BN-ReLU stages (same length: padding ``kernel_size // 2``, no bias before the BN).

    Each stage is ``nn.Sequential(conv, bn, relu)``, so ``stages[i][0]`` is the conv whose output
    width ``widths[i]`` structured pruning changes.
    """
    stages = nn.ModuleList()
    prev = int(in_channels)
    for width in widths:
        stages.append(
            nn.Sequential(
                nn.Conv1d(prev, width, kernel_size, padding=kernel_size // 2, bias=False),
                nn.BatchNorm1d(width),
                nn.ReLU(inplace=True),
            )
        )
        prev = width
    return stages


def check_widths(name: str, channels: list[int]) -> list[int]:
    """Validate a list of layer widths; raises ValueError naming the parameter."""
    widths = [int(c) for c in channels]
    if not widths or any(c < 1 for c in widths):
        raise ValueError(f"{name} must be a non-empty list of positive widths, got {channels!r}")
    return widths


def check_feature_axis(x: torch.Tensor, axis: int, expected: int, what: str, key: str) -> None:
    """Raise :class:`DataError` when the input's feature axis does not match the encoder.

    Only shapes are inspected, so this is free when tracing.
    """
    if x.shape[axis] != expected:
        raise DataError(
            f"{what} has {x.shape[axis]} on axis {axis} (shape {tuple(x.shape)}) but the encoder was built "
            f"for {expected}; make the preprocessing and the model agree (model spec key {key})"
        )


def is_exporting() -> bool:
    """True under ``torch.jit.trace``/ONNX (TorchScript) export or ``torch.export``/dynamo.

    Exporters cannot follow branches on tensor values, so the model then runs every encoder on
    every row and relies on masking alone (which gives the same numbers in eval mode).
    """
    return bool(torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting())
