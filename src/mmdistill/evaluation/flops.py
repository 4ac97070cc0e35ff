"""Multiply-accumulate (MAC) counts that include the recurrent layers other counters miss.

``torch.utils.flop_counter.FlopCounterMode`` counts convolutions, matmuls and attention, but
reports 0 for an ``nn.LSTM`` on CPU (it runs as ``aten.mkldnn_rnn_layer``, which has no formula)
and counts a GRU or a packed LSTM only because those fall back to per-step ``mm``/``addmm``.
torch-pruning's counter goes wrong the other way (546 M instead of about 4.2 M for one LSTM; see
ENVIRONMENT.md). :func:`count_macs` therefore counts every ``nn.LSTM``/``nn.GRU``/``nn.RNN``
analytically with forward hooks and *replaces* whatever the counter saw inside that module, so
the result is the same on every backend and never double-counted.

Conventions (the usual ones for "MACs"):

- One MAC is one multiply plus one add; ``FLOPs / 2`` of the counter's matmul/conv formulas.
  Biases, normalization, activations, pooling and other elementwise work are not counted.
- A recurrent layer costs, per layer and direction, ``gates * (in * H + H * H)`` MACs per time
  step actually run (4 gates for LSTM, 3 for GRU, 1 for a plain RNN; with ``proj_size`` P the
  recurrent term is ``H * P`` and the projection adds ``H * P``). Steps actually run: for a
  padded ``[B, T, ...]`` tensor that is ``B * T`` (padding *is* computed, as in
  :class:`~mmdistill.models.encoders.text.TextLSTM`); for a ``PackedSequence`` only the real
  steps, ``sum(batch_sizes)``.
- An embedding is a table lookup: 0 MACs; the number of looked-up rows is reported apart as
  ``embedding_lookups``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence
from torch.utils.flop_counter import FlopCounterMode

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
_RNN_KIND = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn", "RNN_RELU": "rnn"}
_MATMUL_OPS = {"mm", "addmm", "bmm", "baddbmm", "_scaled_mm"}
_CONV_OPS = {
    "convolution", "_convolution", "cudnn_convolution", "convolution_overrideable", "_slow_conv2d_forward",
}


@dataclass
class MacReport:
    """MACs of one forward pass over one batch.

    Attributes:
        total: MACs of the whole forward pass.
        by_branch: module path (``encoders.image``, ``fusion``, ``head``, ...) → MACs; ``other``
            holds what ran outside every branch. The values sum to ``total``.
        by_op: op kind (``conv``, ``matmul``, ``attention``, ``lstm``, ``gru``, ``rnn``, or the aten
            op name) → MACs; the values sum to ``total``.
        embedding_lookups: embedding rows read (0 MACs each).
        rnn_steps: time steps run summed over rows, layers and directions of every recurrent layer.
        batch_size: rows of the batch, when it could be read from the input.
    """

    total: int
    by_branch: dict[str, int] = field(default_factory=dict)
    by_op: dict[str, int] = field(default_factory=dict)
    embedding_lookups: int = 0
    rnn_steps: int = 0
    batch_size: int | None = None

    @property
    def per_sample(self) -> float | None:
        """``total / batch_size``, or None when the batch size is unknown."""
        return None if not self.batch_size else self.total / self.batch_size

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (with ``per_sample``)."""
        return {
            "total": self.total,
            "per_sample": self.per_sample,
            "batch_size": self.batch_size,
            "by_branch": dict(self.by_branch),
            "by_op": dict(self.by_op),
            "embedding_lookups": self.embedding_lookups,
            "rnn_steps": self.rnn_steps,
        }


def rnn_macs(module: nn.RNNBase, steps: int) -> int:
    """Analytic MACs of ``module`` (LSTM, GRU or RNN) over ``steps`` row-time-steps.

    Args:
        module: the recurrent layer; its mode, sizes, layers, directions and ``proj_size`` are read.
        steps: time steps run, summed over the rows of the batch (``B * T`` when padded).

    Returns:
        ``steps * sum over layers and directions of (gates * H * (in + R) + proj)`` with ``R = P``
        (projected) or ``H``, ``proj = H * P`` when ``proj_size = P > 0`` else 0.
    """
    gates = _GATES[module.mode]
    hidden, proj = int(module.hidden_size), int(getattr(module, "proj_size", 0) or 0)
    out_width = proj or hidden
    directions = 2 if module.bidirectional else 1
    per_step = 0
    for layer in range(int(module.num_layers)):
        width_in = int(module.input_size) if layer == 0 else out_width * directions
        per_step += directions * (gates * hidden * (width_in + out_width) + hidden * proj)
    return int(steps) * per_step


def _rnn_steps(inputs: tuple[Any, ...]) -> int:
    """Row-time-steps run by a recurrent layer for its forward inputs (see module docstring)."""
    x = inputs[0]
    if isinstance(x, PackedSequence):
        return int(x.batch_sizes.sum())
    if x.dim() == 2:  # unbatched [T, in]
        return int(x.shape[0])
    return int(x.shape[0]) * int(x.shape[1])  # B * T whether batch_first or not


def _op_kind(op: Any) -> str:
    name = str(getattr(op, "_opname", op)).split(".")[-1]
    if name in _MATMUL_OPS:
        return "matmul"
    if name in _CONV_OPS:
        return "conv"
    if "attention" in name:
        return "attention"
    return name


def default_branches(model: nn.Module) -> list[str]:
    """Branch module paths: per-modality encoders, fusion and head of a multimodal model, else
    the model's direct children."""
    encoders = getattr(model, "encoders", None)
    if isinstance(encoders, nn.ModuleDict):
        extra = [n for n in ("fusion", "head") if isinstance(getattr(model, n, None), nn.Module)]
        return [f"encoders.{m}" for m in encoders] + extra
    return [name for name, _ in model.named_children()]


def _batch_size(inputs: Any) -> int | None:
    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0]) if inputs.dim() else None
    if isinstance(inputs, dict):
        label = inputs.get("label")
        if isinstance(label, torch.Tensor):
            return int(label.shape[0])
        values = list(inputs.values())
    elif isinstance(inputs, (tuple, list)):
        values = list(inputs)
    else:
        return None
    for value in values:
        if isinstance(value, torch.Tensor) and value.dim():
            return int(value.shape[0])
    return None


class _Tally:
    """Running per-op MAC tally: the counter's FLOPs / 2, with recurrent layers replaced."""

    def __init__(self, mode: FlopCounterMode) -> None:
        self.mode = mode
        self.adjust: dict[str, int] = defaultdict(int)  # op kind → MACs to add (negative = remove)

    def by_op(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for op, flops in self.mode.get_flop_counts().get("Global", {}).items():
            out[_op_kind(op)] += int(flops) // 2
        for kind, macs in self.adjust.items():
            out[kind] += macs
        return {k: v for k, v in out.items() if v}

    def total(self) -> int:
        return sum(self.by_op().values())


def count_macs(model: nn.Module, inputs: Any, *, branches: Sequence[str] | None = None) -> MacReport:
    """Count the MACs of one inference forward pass of ``model`` over ``inputs``.

    The model runs once in eval mode under ``torch.no_grad`` (its train/eval flag is restored).
    Counting conventions are in the module docstring.

    Args:
        model: any module; a :class:`~mmdistill.models.multimodal.MultimodalModel` is called as
            ``model(batch)``.
        inputs: a batch dict or tensor (``model(inputs)``), or a tuple of positional arguments.
        branches: module paths to attribute MACs to (must not nest); default
            :func:`default_branches`.

    Returns:
        A :class:`MacReport`; ``by_branch`` and ``by_op`` each sum to ``total``.

    Raises:
        ValueError: a branch path is not a submodule of ``model``, or two branches nest.

    Shapes:
        ``inputs`` as ``model`` expects them; MACs grow with the batch size and padded length.
    """
    names = list(default_branches(model) if branches is None else branches)
    modules = dict(model.named_modules())
    unknown = [n for n in names if n not in modules or not n]
    if unknown:
        raise ValueError(f"branches {unknown} are not submodules of {type(model).__name__}; "
                         f"pick from {[n for n in modules if n][:20]}")
    nested = [(a, b) for a in names for b in names if a != b and b.startswith(a + ".")]
    if nested:
        raise ValueError(f"branches must not nest, got {nested[0][0]!r} containing {nested[0][1]!r}")

    mode = FlopCounterMode(display=False)
    tally = _Tally(mode)
    by_branch: dict[str, int] = defaultdict(int)
    stats = {"lookups": 0, "steps": 0}
    starts: dict[int, list[Any]] = defaultdict(list)  # id(module) → stack of snapshots (re-entrant)

    def rnn_pre(mod: nn.Module, args: tuple[Any, ...]) -> None:
        starts[id(mod)].append(tally.by_op())

    def rnn_post(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        before, after = starts[id(mod)].pop(), tally.by_op()
        for kind in set(before) | set(after):  # drop what the counter saw inside (fallback mm's)
            tally.adjust[kind] -= after.get(kind, 0) - before.get(kind, 0)
        steps = _rnn_steps(args)
        directions = 2 if mod.bidirectional else 1
        stats["steps"] += steps * directions * int(mod.num_layers)
        tally.adjust[_RNN_KIND[mod.mode]] += rnn_macs(mod, steps)

    def embed_post(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        stats["lookups"] += int(args[0].numel())

    def branch_pre(name: str) -> Any:
        def hook(mod: nn.Module, args: tuple[Any, ...]) -> None:
            starts[id(mod)].append(tally.total())
        return hook

    def branch_post(name: str) -> Any:
        def hook(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            by_branch[name] += tally.total() - starts[id(mod)].pop()
        return hook

    handles = []
    for mod in model.modules():
        if isinstance(mod, nn.RNNBase):
            # Registered first so a branch that *is* an RNN sees the adjusted tally in its post-hook.
            handles.append(mod.register_forward_pre_hook(rnn_pre))
            handles.append(mod.register_forward_hook(rnn_post))
        elif isinstance(mod, (nn.Embedding, nn.EmbeddingBag)):
            handles.append(mod.register_forward_hook(embed_post))
    for name in names:
        handles.append(modules[name].register_forward_pre_hook(branch_pre(name), prepend=True))
        handles.append(modules[name].register_forward_hook(branch_post(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), mode:
            if isinstance(inputs, tuple):
                model(*inputs)
            else:
                model(inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    by_op = tally.by_op()
    total = sum(by_op.values())
    branch_totals = {n: int(by_branch.get(n, 0)) for n in names}
    branch_totals["other"] = total - sum(branch_totals.values())
    return MacReport(
        total=total, by_branch=branch_totals, by_op=by_op, embedding_lookups=stats["lookups"],
        rnn_steps=stats["steps"], batch_size=_batch_size(inputs),
    )
