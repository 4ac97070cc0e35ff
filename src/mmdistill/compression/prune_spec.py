"""Which widths of a :class:`MultimodalModel` structured pruning may change, and the spec round trip.

Each spec kwarg that sets a width (``channels[i]``, ``out_dim``, ``dim``, ``hidden``) is a **knob**:
the layers whose output width it sets (the *roots*) are pruned to one common width, and after
pruning the width is read back from the first root into the spec. Widths not listed here stay
fixed: LSTM/GRU/embedding widths (torch-pruning cannot prune them), the last conv of a CRNN (it
sets the GRU's input width), the transformer's ``dim`` (shared by every block), the classifier
output and the gates of the gated fusion (width 1). So a pruned model always rebuilds from its
spec alone; :func:`rebuild_from_spec` checks that it does.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mmdistill.data.batch import Batch
from mmdistill.errors import CheckpointError, ConfigError
from mmdistill.evaluation.flops import count_macs
from mmdistill.models.builders import build_model
from mmdistill.models.multimodal import MultimodalModel


@dataclass
class Knob:
    """One width in the spec and the layers whose output width it sets.

    Attributes:
        branch: ``image``/``text``/``audio``/``fusion``/``head``.
        path: where the width lives in the spec, e.g. ``("encoders", "image", "kwargs", "channels", 0)``.
        roots: ``nn.Linear``/``nn.Conv*d`` layers pruned to the same output width.
        multiple: the kept width must be a multiple of this (attention heads).
        heads: roots whose output is split into this many equal heads, pruned evenly per head.
    """

    branch: str
    path: tuple[str | int, ...]
    roots: list[nn.Module]
    multiple: int = 1
    heads: dict[nn.Module, int] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Dotted spec key, e.g. ``encoders.image.kwargs.channels[0]``."""
        out = ""
        for part in self.path:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
        return out


def out_width(layer: nn.Module) -> int:
    """Output width of a linear or conv layer."""
    return int(layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels)


def _encoder_knobs(m: str, name: str, enc: nn.Module) -> list[Knob]:
    base = ("encoders", m, "kwargs")
    knobs: list[Knob] = []
    if name == "cnn":
        knobs += [Knob(m, (*base, "channels", i), [s[0]]) for i, s in enumerate(enc.stages)]
    elif name in ("conv1d", "textcnn"):
        knobs += [Knob(m, (*base, "channels", i), [c[0]]) for i, c in enumerate(enc.convs)]
    elif name == "crnn":
        # The last stage's width times the pooled mel bands is the GRU's input width: GRUs are not prunable.
        knobs += [Knob(m, (*base, "channels", i), [c[0]]) for i, c in enumerate(list(enc.convs)[:-1])]
    elif name == "mlp":
        linears = [layer for layer in enc.net if isinstance(layer, nn.Linear)]
        return [Knob(m, (*base, "hidden", i), [layer]) for i, layer in enumerate(linears)]
    if name in ("cnn", "conv1d", "crnn", "lstm", "transformer", "textcnn"):
        knobs.append(Knob(m, (*base, "out_dim"), [enc.proj]))
    return knobs


def _fusion_knobs(name: str, fusion: nn.Module) -> list[Knob]:
    path = ("fusion", "kwargs", "dim")
    if name == "concat":
        return [Knob("fusion", path, [fusion.proj])]
    if name in ("sum", "gated"):
        return [Knob("fusion", path, list(fusion.projs.values()))]
    if name == "attention":
        heads = int(fusion.heads)
        # One `dim` sets the token width, the key/value width (split into heads) and the output width.
        return [Knob("fusion", path, [*fusion.projs.values(), fusion.key, fusion.value, fusion.out],
                     multiple=heads, heads={fusion.key: heads, fusion.value: heads})]
    return []


def _head_knobs(name: str, head: nn.Module) -> list[Knob]:
    path = ("head", "kwargs", "hidden")
    if name == "mlp":
        return [Knob("head", path, [head.net[0]])]
    if name == "multitask":
        roots = [sub.net[0] for sub in head.heads.values() if hasattr(sub, "net")]
        return [Knob("head", path, roots)] if roots else []
    return []


def knobs_for(model: MultimodalModel) -> list[Knob]:
    """Every prunable width of ``model``, in forward order; names come from ``model.spec``."""
    spec = model.spec or {}
    knobs: list[Knob] = []
    for m, enc in model.encoders.items():
        knobs += _encoder_knobs(m, spec["encoders"][m]["name"], enc)
    knobs += _fusion_knobs(spec["fusion"]["name"], model.fusion)
    knobs += _head_knobs(spec["head"]["name"], model.head)
    return knobs


def frozen_out_layers(model: MultimodalModel) -> list[nn.Module]:
    """Layers whose output width the contract fixes: the classifier outputs and the fusion's gates."""
    frozen: list[nn.Module] = []
    # Every layer of the head that produces logits: a head's last linear, per sub-head for multitask.
    subheads = list(model.head.heads.values()) if hasattr(model.head, "heads") else [model.head]
    for sub in subheads:
        linears = [x for x in sub.modules() if isinstance(x, nn.Linear)]
        if linears:
            frozen.append(linears[-1])
    gates = getattr(model.fusion, "gates", None)
    if isinstance(gates, nn.ModuleDict):
        frozen += list(gates.values())
    return frozen


def widths(model: MultimodalModel, knobs: list[Knob] | None = None) -> dict[str, int]:
    """Spec key → current width of the knob's first root."""
    return {k.key: out_width(k.roots[0]) for k in (knobs if knobs is not None else knobs_for(model))}


def pruned_spec(model: MultimodalModel, knobs: list[Knob]) -> dict[str, Any]:
    """A copy of ``model.spec`` with every knob's width read back from its pruned roots.

    Raises:
        CheckpointError: a knob's roots ended at different widths (the spec has one number for them).
    """
    spec = copy.deepcopy(model.spec)
    assert spec is not None
    for knob in knobs:
        got = sorted({out_width(r) for r in knob.roots})
        if len(got) != 1:
            raise CheckpointError(f"pruning left the layers behind spec key {knob.key} at different widths "
                                  f"{got}; the spec holds one width for them. This is a bug in mmdistill's "
                                  "pruning: report it with the model spec")
        node: Any = spec
        for part in knob.path[:-2]:
            node = node[part]
        if isinstance(knob.path[-1], int):
            if knob.path[-2] not in node:
                raise CheckpointError(
                    f"spec key {knob.key.rsplit('[', 1)[0]} is not set, so the pruned widths cannot be "
                    "written back; write every width into the spec (as mmdistill.models.builders.model_spec "
                    "does)"
                )
            # A width list (``channels``/``hidden``) may be a tuple in a hand-written spec: write a list.
            node[knob.path[-2]] = list(node[knob.path[-2]])
            node[knob.path[-2]][knob.path[-1]] = got[0]
        else:
            node[knob.path[-2]][knob.path[-1]] = got[0]
    return spec


def rebuild_from_spec(pruned: MultimodalModel, spec: dict[str, Any]) -> MultimodalModel:
    """``build_model(spec)`` loaded with ``pruned``'s weights; checks every shape matches.

    Raises:
        CheckpointError: the spec builds a tensor of another shape than the pruned module holds,
            so ``load_model`` could not rebuild the pruned model from ``model.json``.
    """
    try:
        fresh = build_model(spec)
    except ConfigError as exc:
        raise CheckpointError(f"the pruned spec does not build a model: {exc}") from exc
    want = pruned.state_dict()
    have = fresh.state_dict()
    problems = [f"{k}: pruned {list(v.shape)} vs spec {list(have[k].shape) if k in have else 'missing'}"
                for k, v in want.items() if k not in have or have[k].shape != v.shape]
    problems += [f"{k}: only in the spec's model" for k in have if k not in want]
    if problems:
        raise CheckpointError(
            "the pruned model cannot be rebuilt from its rewritten spec (model.json): "
            f"{'; '.join(problems[:5])}. A layer was pruned whose width the spec cannot express; "
            "prune that branch with ratio 0 and report the model spec as a bug"
        )
    fresh.load_state_dict(want, strict=True)
    return fresh.train(pruned.training)


def branch_macs(model: MultimodalModel, batch: Batch) -> dict[str, int]:
    """Multiply-accumulates per sample of one eval forward, per branch and ``"total"``.

    A view of :func:`mmdistill.evaluation.flops.count_macs` (conv/linear/matmul/attention from
    ``FlopCounterMode``, LSTM/GRU analytic, padded steps included) with the branch keys of this
    module: ``encoders.<m>`` → ``<m>``, ``fusion``, ``head``. ``"total"`` also holds whatever ran
    outside every branch (nothing, for a :class:`MultimodalModel`). Not counted: embedding lookups,
    norms and element-wise ops. ``batch`` must hold at least one of the model's modalities.

    Shapes:
        batch: per :mod:`mmdistill.data.batch` with ``B`` rows; every count is the batch's divided by ``B``.
    """
    rows = next(int(batch[m].shape[0]) for m in model.modalities if isinstance(batch.get(m), torch.Tensor))
    report = count_macs(model, batch)
    out = {name.removeprefix("encoders."): macs for name, macs in report.by_branch.items() if name != "other"}
    out["total"] = report.total
    return {k: v // rows for k, v in out.items()}
