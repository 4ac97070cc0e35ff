"""Unstructured magnitude pruning: real zeros in the weights, and no speed or size change.

Dense runtimes (PyTorch eager, ONNX Runtime CPU) multiply zeros as fast as any other number and
safetensors stores them as dense tensors, so this is an honest option for sparsity studies, not a
speed-up: the report says ``speedup: None``. For a model that is actually smaller and faster use
:func:`mmdistill.compression.prune.prune_structured`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn
from torch.nn.utils import prune as torch_prune

from mmdistill.compression.policy import BRANCHES
from mmdistill.errors import ConfigError
from mmdistill.models.multimodal import MultimodalModel

Scope = Literal["global", "layer"]
NO_SPEEDUP = "no speed or size change on dense runtimes"


@dataclass
class SparsityReport:
    """Measured sparsity after :func:`prune_unstructured_`.

    Attributes:
        target: the requested fraction of zeros among the pruned weights.
        scope: ``"global"`` (one threshold over all of them) or ``"layer"`` (per tensor).
        overall: measured fraction of zeros over every pruned weight.
        branches: branch → measured fraction of zeros in its pruned weights.
        tensors: parameter name → measured fraction of zeros.
        pruned_elements: number of weight elements considered.
        speedup: always None: zeros in dense tensors change neither speed nor size.
        note: says so in words.
    """

    target: float
    scope: str
    overall: float
    branches: dict[str, float]
    tensors: dict[str, float]
    pruned_elements: int
    speedup: None = None
    note: str = NO_SPEEDUP

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"target": self.target, "scope": self.scope, "overall": self.overall,
                "branches": dict(self.branches), "tensors": dict(self.tensors),
                "pruned_elements": self.pruned_elements, "speedup": None, "note": self.note}


def _branch(name: str) -> str:
    parts = name.split(".")
    return (parts[1] if len(parts) > 1 else "") if parts[0] == "encoders" else parts[0]


def _targets(model: MultimodalModel, branches: list[str]) -> list[tuple[str, nn.Module, str]]:
    """``(qualified name, module, parameter name)`` of every weight matrix/kernel in ``branches``.

    Conv, linear, embedding and RNN weight matrices; biases and norms are left dense.
    """
    out = []
    for mod_name, module in model.named_modules():
        if not mod_name or _branch(mod_name) not in branches:
            continue
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)):
            out.append((f"{mod_name}.weight", module, "weight"))
        elif isinstance(module, nn.RNNBase):
            out += [(f"{mod_name}.{p}", module, p) for p, _ in module.named_parameters(recurse=False)
                    if p.startswith("weight_")]
    return out


def _check(model: MultimodalModel, sparsity: Any, scope: Any, branches: Any) -> list[str]:
    problems = []
    number = isinstance(sparsity, (int, float)) and not isinstance(sparsity, bool)
    if not number or not 0.0 <= float(sparsity) < 1.0:
        problems.append(f"sparsity: must be a number in [0, 1) (the fraction of weights set to 0), "
                        f"got {sparsity!r}")
    if scope not in ("global", "layer"):
        problems.append(f"scope: must be 'global' (one threshold for all weights) or 'layer' (per tensor), "
                        f"got {scope!r}")
    own = [*model.modalities, "fusion", "head"]
    for b in branches if branches is not None else []:
        if b not in own:
            close = difflib.get_close_matches(str(b), BRANCHES, n=1)
            hint = f" did you mean '{close[0]}'?" if close else ""
            problems.append(f"branches: unknown branch '{b}' for this model;{hint} "
                            f"choose from {', '.join(own)}")
    return problems


def prune_unstructured_(
    model: MultimodalModel, *, sparsity: float, scope: Scope = "global", branches: list[str] | None = None
) -> SparsityReport:
    """Zero the smallest-magnitude weights of ``model`` in place (L1 unstructured masks, then baked in).

    ``torch.nn.utils.prune`` computes the masks; ``prune.remove`` then multiplies them into the
    weights, so the model holds plain tensors again (``save_model`` writes them to safetensors, and
    ``load_model`` needs no change). No speed or size change on dense runtimes: ``speedup`` is None.
    Pruned weights are conv, linear, embedding and LSTM/GRU matrices; biases and norms stay dense.

    Args:
        model: the model to sparsify (modified in place).
        sparsity: fraction of the selected weights to set to zero, in ``[0, 1)``.
        scope: ``"global"``: one magnitude threshold over all selected weights (layers end at
            different sparsities); ``"layer"``: every tensor gets ``sparsity``.
        branches: subset of the model's branches (``image``/``text``/``audio``/``fusion``/``head``);
            None means all.

    Returns:
        A :class:`SparsityReport` with the sparsity measured after pruning (weights already zero
        before count as pruned, so a measured value can exceed the target).

    Raises:
        ConfigError: a sparsity outside ``[0, 1)``, an unknown scope or branch.
    """
    problems = _check(model, sparsity, scope, branches)
    if problems:
        raise ConfigError(problems)
    chosen = list(branches) if branches is not None else [*model.modalities, "fusion", "head"]
    targets = _targets(model, chosen)
    if sparsity > 0 and targets:
        pairs = [(module, pname) for _, module, pname in targets]
        if scope == "global":
            torch_prune.global_unstructured(
                pairs, pruning_method=torch_prune.L1Unstructured, amount=float(sparsity)
            )
        else:
            for module, pname in pairs:
                torch_prune.l1_unstructured(module, pname, amount=float(sparsity))
        for module, pname in pairs:
            torch_prune.remove(module, pname)
        for module in {id(m): m for m, _ in pairs}.values():
            if isinstance(module, nn.RNNBase):
                # remove() re-registers the weights without __setattr__: refresh the RNN's flat weight list.
                module._init_flat_weights()
    zeros: dict[str, int] = {}
    sizes: dict[str, int] = {}
    tensors: dict[str, float] = {}
    for name, module, pname in targets:
        w = getattr(module, pname)
        z, n = int((w == 0).sum()), w.numel()
        tensors[name] = z / n
        b = _branch(name)
        zeros[b], sizes[b] = zeros.get(b, 0) + z, sizes.get(b, 0) + n
    total = sum(sizes.values())
    return SparsityReport(
        target=float(sparsity), scope=str(scope), overall=sum(zeros.values()) / total if total else 0.0,
        branches={b: zeros[b] / sizes[b] for b in sizes}, tensors=tensors, pruned_elements=total,
    )
