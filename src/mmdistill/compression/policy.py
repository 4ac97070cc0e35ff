"""Per-branch precision policy for fake (simulated) low-bit weight quantization, and its size model.

A :class:`~mmdistill.models.multimodal.MultimodalModel` has five kinds of **branch**: one per
modality encoder (``image``, ``text``, ``audio``: ``model.encoders[m]``), the ``fusion`` and the
``head``. A :class:`PrecisionPolicy` gives each branch a weight bit width; 16 and 32 mean "leave the
weights in floating point". It is parsed from a plain mapping such as ``{"image": 4, "default": 8}``.

Quantized weights are those of ``nn.Conv1d/2d/3d``, ``nn.Linear``, ``nn.LSTM``/``nn.GRU``/``nn.RNN``
(every ``weight_*`` tensor, never ``bias_*``) and ``nn.Embedding``. Biases, normalization layers and
loose ``nn.Parameter`` tensors (positional embeddings, attention queries) stay fp32: they are a
small share of the weights and quantizing them costs accuracy for little size.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from mmdistill.config.schema_compress import BRANCHES
from mmdistill.errors import ConfigError

LOW_BITS: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
"""Bit widths that are fake-quantized."""

FLOAT_BITS: tuple[int, ...] = (16, 32)
"""Bit widths that leave the weights in floating point (16 counts as fp16 in the size model)."""

VALID_BITS: tuple[int, ...] = LOW_BITS + FLOAT_BITS

QUANTIZABLE_MODULES: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.LSTM, nn.GRU, nn.RNN, nn.Embedding,
)

ZERO_POINT_BYTES = 1
"""Storage of one asymmetric zero point (an integer in ``[0, 2^b - 1]``, b <= 8) in the size model."""

SCALE_BYTES = 4
"""Storage of one fp32 scale in the size model."""


def check_bits(bits: Any, *, key: str = "bits") -> int:
    """Return ``bits`` as an int if it is a supported width (2-8, or 16/32 for floating point).

    Raises:
        ConfigError: naming ``key``, the value and the accepted widths.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in VALID_BITS:
        raise ConfigError(
            f"{key}: bit width must be one of {list(LOW_BITS)} (fake-quantized) or 16/32 (left in floating "
            f"point), got {bits!r}"
        )
    return int(bits)


@dataclass
class PrecisionPolicy:
    """Weight bit width per branch.

    Args:
        bits: branch → bit width for the branches set explicitly.
        default: bit width of every other branch (32: unchanged).
        per_channel: one range per output channel (axis 0 of each weight) instead of per tensor.
        symmetric: symmetric signed grid (no zero point) instead of asymmetric min-max.

    Example:
        >>> PrecisionPolicy.from_dict({"image": 4, "default": 8}).bits_for("text")
        8
    """

    bits: dict[str, int] = field(default_factory=dict)
    default: int = 32
    per_channel: bool = True
    symmetric: bool = False

    def __post_init__(self) -> None:
        problems = []
        for branch, value in self.bits.items():
            if branch not in BRANCHES:
                problems.append(_unknown_branch(branch, key="policy"))
            else:
                try:
                    check_bits(value, key=f"policy.{branch}")
                except ConfigError as exc:
                    problems.extend(exc.problems)
        try:
            check_bits(self.default, key="policy.default")
        except ConfigError as exc:
            problems.extend(exc.problems)
        if problems:
            raise ConfigError(problems)

    @classmethod
    def from_dict(
        cls, mapping: Mapping[str, Any], *, per_channel: bool = True, symmetric: bool = False,
        key: str = "policy",
    ) -> PrecisionPolicy:
        """Parse ``{"image": 4, "text": 8, "default": 32}`` (every problem reported at once).

        Raises:
            ConfigError: not a mapping, unknown branch (with did-you-mean) or unsupported width,
                each naming ``key.<branch>``.
        """
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"{key}: expected a mapping branch → bits such as {{'image': 4, 'default': 8}},"
                              f" got {type(mapping).__name__} {mapping!r}")
        problems: list[str] = []
        bits: dict[str, int] = {}
        default = 32
        for name, value in mapping.items():
            where = f"{key}.{name}"
            if name != "default" and name not in BRANCHES:
                problems.append(_unknown_branch(str(name), key=key))
                continue
            try:
                width = check_bits(value, key=where)
            except ConfigError as exc:
                problems.extend(exc.problems)
                continue
            if name == "default":
                default = width
            else:
                bits[str(name)] = width
        if problems:
            raise ConfigError(problems)
        return cls(bits=bits, default=default, per_channel=per_channel, symmetric=symmetric)

    @classmethod
    def uniform(cls, bits: int, **kwargs: Any) -> PrecisionPolicy:
        """Every branch at ``bits``."""
        return cls(default=check_bits(bits), **kwargs)

    def bits_for(self, branch: str) -> int:
        """Bit width of ``branch`` (its own entry, else :attr:`default`)."""
        if branch not in BRANCHES:
            raise ConfigError(_unknown_branch(branch, key="branch"))
        return self.bits.get(branch, self.default)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"bits": {...}, "default": 32, "per_channel": ..., "symmetric": ...}``."""
        return {"bits": dict(self.bits), "default": self.default, "per_channel": self.per_channel,
                "symmetric": self.symmetric}


def _unknown_branch(name: str, *, key: str) -> str:
    close = difflib.get_close_matches(str(name), [*BRANCHES, "default"], n=1, cutoff=0.5)
    hint = f" did you mean '{close[0]}'?" if close else ""
    return f"{key}.{name}: unknown branch '{name}';{hint} available: {', '.join(BRANCHES)}, default"


def branch_of(module_name: str) -> str:
    """The branch a submodule or parameter name of a MultimodalModel belongs to.

    ``"encoders.text.fwd.0"`` → ``"text"``, ``"fusion.proj.weight"`` → ``"fusion"``, ``"head.fc"`` →
    ``"head"``. Parametrized names (``...parametrizations.weight.original``) map the same way.

    Raises:
        ValueError: the name lies outside every branch (e.g. ``""``, the model itself).
    """
    parts = module_name.split(".")
    if len(parts) >= 2 and parts[0] == "encoders" and parts[1] in BRANCHES[:3]:
        return parts[1]
    if parts[0] in ("fusion", "head"):
        return parts[0]
    raise ValueError(
        f"module '{module_name}' is in no branch: expected a name under encoders.<image|text|audio>, "
        "fusion or head of a MultimodalModel"
    )


def model_branches(model: nn.Module) -> list[str]:
    """The branches ``model`` has: its encoders' modalities in order, then ``fusion`` and ``head``."""
    encoders = getattr(model, "encoders", None)
    if not isinstance(encoders, nn.ModuleDict):
        raise ValueError(
            f"expected a MultimodalModel (with encoders, fusion, head), got {type(model).__name__}"
        )
    return [m for m in encoders if m in BRANCHES] + ["fusion", "head"]


def modules_for(model: nn.Module, branch: str) -> nn.Module | None:
    """The submodule of ``branch`` (``model.encoders[m]``, ``model.fusion`` or ``model.head``).

    Returns None for a modality the model lacks.

    Raises:
        ConfigError: unknown branch name (with did-you-mean).
    """
    if branch not in BRANCHES:
        raise ConfigError(_unknown_branch(branch, key="branch"))
    if branch in ("fusion", "head"):
        return getattr(model, branch)
    encoders = model.encoders
    return encoders[branch] if branch in encoders else None


def quantized_branches(model: nn.Module, policy: PrecisionPolicy) -> Iterator[tuple[str, int, nn.Module]]:
    """``(branch, bits, submodule)`` for every branch ``model`` has that ``policy`` puts below 16 bits."""
    for branch in model_branches(model):
        bits = policy.bits_for(branch)
        sub = modules_for(model, branch)
        if sub is not None and bits not in FLOAT_BITS:
            yield branch, bits, sub


def weight_names(module: nn.Module) -> list[str]:
    """Names of the quantizable weight tensors held directly by ``module`` (not its children)."""
    if not isinstance(module, QUANTIZABLE_MODULES):
        return []
    if isinstance(module, nn.RNNBase):
        return [n for n in module._flat_weights_names if n.startswith("weight_")]
    return ["weight"]


def quantizable_weights(root: nn.Module) -> Iterator[tuple[str, nn.Module, str]]:
    """Yield ``(module_path, module, weight_name)`` for every quantizable weight under ``root``."""
    for path, module in root.named_modules():
        for name in weight_names(module):
            if getattr(module, name, None) is not None:
                yield path, module, name


def weight_bits_size(model: nn.Module, policy: PrecisionPolicy) -> int:
    """Bytes of the model's state if each branch's weights were stored at the policy's bits.

    Quantizable weights at b <= 8 bits cost ``ceil(numel * b / 8)`` bytes (bit-packed) plus one fp32
    scale (and, asymmetric, one 1-byte zero point) per output channel, or per tensor; at 16 bits 2
    bytes per element (fp16 storage; the fake quantizer leaves them fp32, an error of ~5e-4
    relative); at 32 bits 4. Everything else in ``state_dict`` (biases, norms, buffers, loose
    parameters) counts at its own dtype size.

    Shapes:
        Any MultimodalModel; parametrized (QAT) models count their latent weights once.
    """
    quantized: dict[int, int] = {}  # id(tensor) → bits, for the weights the policy covers
    for branch in model_branches(model):
        sub = modules_for(model, branch)
        if sub is None:
            continue
        for _, module, name in quantizable_weights(sub):
            quantized[id(_latent(module, name))] = policy.bits_for(branch)
    total = 0
    seen: set[int] = set()
    for tensor in model.state_dict(keep_vars=True).values():
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        bits = quantized.get(id(tensor))
        if bits is None or bits == 32:
            total += tensor.numel() * tensor.element_size()
        elif bits == 16:
            total += tensor.numel() * 2
        else:
            groups = int(tensor.shape[0]) if policy.per_channel and tensor.ndim >= 1 else 1
            per_group = SCALE_BYTES + (0 if policy.symmetric else ZERO_POINT_BYTES)
            total += math.ceil(tensor.numel() * bits / 8) + groups * per_group
    return int(total)


def _latent(module: nn.Module, name: str) -> Any:
    """The stored tensor behind ``module.<name>`` (the ``original`` of a parametrized weight)."""
    params = getattr(module, "parametrizations", None)
    if params is not None and name in params:
        return params[name].original
    return getattr(module, name)
