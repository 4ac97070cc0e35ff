"""Structured channel pruning of a :class:`MultimodalModel` with torch-pruning's dependency graph.

The model physically shrinks (conv/linear/BN/LayerNorm widths), and the new widths are written
back into ``model.spec`` so that :func:`mmdistill.models.checkpoint.load_model` rebuilds the pruned
model from ``model.safetensors`` + ``model.json`` alone, without pickle. Which widths can change is
listed in :mod:`mmdistill.compression.prune_spec`. Recovery fine-tuning is not done here: rerun the
distillation recipe on the pruned student.
"""

from __future__ import annotations

import copy
import difflib
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from mmdistill.compression.policy import BRANCHES
from mmdistill.compression.prune_spec import (
    Knob,
    branch_macs,
    frozen_out_layers,
    knobs_for,
    out_width,
    pruned_spec,
    rebuild_from_spec,
    widths,
)
from mmdistill.data.batch import IGNORE_LABEL, Batch
from mmdistill.errors import CheckpointError, ConfigError, DataError, MissingDependencyError
from mmdistill.models.checkpoint import count_parameters
from mmdistill.models.multimodal import MultimodalModel
from mmdistill.models.outputs import ModelOutput

ImportanceName = Literal["magnitude", "taylor"]
LossFn = Callable[[ModelOutput, Batch], torch.Tensor]
IMPORTANCES: tuple[str, ...] = ("magnitude", "taylor")


@dataclass
class PruneReport:
    """What :func:`prune_structured` did.

    Attributes:
        model: the new, pruned model (its ``spec`` holds the pruned widths); the input is unchanged.
        params_before: parameter elements before pruning.
        params_after: parameter elements after pruning.
        macs_before: multiply-accumulates per sample on the example batch, per branch and
            ``"total"`` (see :func:`~mmdistill.compression.prune_spec.branch_macs`: LSTM/GRU
            counted analytically, embeddings 0; pruning never changes either).
        macs_after: the same after pruning.
        channels: branch → spec key → ``[before, after]`` width, for every prunable width.
        ratios: branch → fraction of channels removed per prunable width.
        importance: ``"magnitude"`` or ``"taylor"``.
        round_to: kept widths were rounded down to a multiple of this (None: no rounding).
    """

    model: MultimodalModel
    params_before: int
    params_after: int
    macs_before: dict[str, int]
    macs_after: dict[str, int]
    channels: dict[str, dict[str, list[int]]]
    ratios: dict[str, float]
    importance: str
    round_to: int | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (everything but the model)."""
        return {
            "params_before": self.params_before, "params_after": self.params_after,
            "params_ratio": self.params_after / max(self.params_before, 1),
            "macs_before": dict(self.macs_before), "macs_after": dict(self.macs_after),
            "channels": copy.deepcopy(self.channels), "ratios": dict(self.ratios),
            "importance": self.importance, "round_to": self.round_to,
            "macs_note": "per sample on the example batch; LSTM/GRU counted analytically, embeddings as 0",
        }


def _import_tp() -> Any:
    try:
        import torch_pruning as tp
    except ImportError as exc:
        raise MissingDependencyError("torch-pruning", "prune", "structured pruning") from exc
    return tp


def _fixed_rnn_pruner(tp: Any) -> Any:
    """A torch-pruning handler for ``nn.GRU`` that reports its widths and refuses to change them.

    torch-pruning knows no GRU; without widths its concat index mapping fails on the CRNN encoder.
    In and out pruning are distinct methods, so the GRU couples nothing through itself.
    """

    class FixedRNNPruner(tp.pruner.BasePruningFunc):
        def _refuse(self, layer: nn.Module, idxs: Any) -> nn.Module:
            raise CheckpointError(
                f"structured pruning reached a {type(layer).__name__}, whose widths mmdistill keeps fixed; "
                "prune that branch with ratio 0 and report the model spec as a bug"
            )

        def prune_out_channels(self, layer: nn.Module, idxs: Any) -> nn.Module:
            return self._refuse(layer, idxs)

        def prune_in_channels(self, layer: nn.Module, idxs: Any) -> nn.Module:
            return self._refuse(layer, idxs)

        def get_out_channels(self, layer: nn.Module) -> int:
            return int(layer.hidden_size) * (2 if layer.bidirectional else 1)

        def get_in_channels(self, layer: nn.Module) -> int:
            return int(layer.input_size)

    return FixedRNNPruner()


def _check_ratio(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"{key}: must be a number in [0, 1) (the fraction of channels removed), got "
                          f"{value!r}; use 0 to leave a branch as it is and e.g. 0.5 to halve its widths")
    return float(value)


def resolve_ratios(
    model: MultimodalModel, ratio: float, branch_ratios: dict[str, float] | None = None
) -> dict[str, float]:
    """Per-branch pruning ratio: ``branch_ratios`` over the global ``ratio``.

    Returns:
        branch → ratio for the model's branches (its modalities, ``fusion``, ``head``).

    Raises:
        ConfigError: a ratio outside ``[0, 1)``, an unknown branch (with did-you-mean), or a
            modality the model has no encoder for.
    """
    branches = [*model.modalities, "fusion", "head"]
    out = dict.fromkeys(branches, _check_ratio("ratio", ratio))
    problems: list[str] = []
    for name, value in (branch_ratios or {}).items():
        if name not in BRANCHES:
            close = difflib.get_close_matches(str(name), BRANCHES, n=1)
            hint = f" did you mean '{close[0]}'?" if close else ""
            problems.append(f"branch_ratios: unknown branch '{name}';{hint} branches: {', '.join(BRANCHES)}")
        elif name not in branches:
            problems.append(f"branch_ratios: the model has no '{name}' encoder; its branches are "
                            f"{', '.join(branches)}: remove '{name}'")
        else:
            try:
                out[name] = _check_ratio(f"branch_ratios['{name}']", value)
            except ConfigError as exc:
                problems += exc.problems
    if problems:
        raise ConfigError(problems)
    return out


def _target(knob: Knob, width: int, ratio: float, round_to: int | None) -> int:
    """Kept width: ``width - floor(width * ratio)`` rounded down to the knob's multiple and ``round_to``.

    A width of at least one multiple keeps at least one (``round_to=16``: 16 stays 16 at any ratio,
    24 becomes 16), so a block-aligned model can be pruned whatever its smallest layer.
    """
    keep = width - int(width * ratio)
    multiple = math.lcm(knob.multiple, round_to or 1)
    keep -= keep % multiple
    if keep < 1 and width >= multiple:
        keep = multiple
    if keep < 1:
        extra = f", round_to={round_to}" if round_to else ""
        heads = f" (a multiple of {knob.multiple} heads)" if knob.multiple > 1 else ""
        raise ConfigError(
            f"branch_ratios['{knob.branch}']: pruning {knob.key} (width {width}) with ratio {ratio}{extra} "
            f"would leave 0 channels{heads}; lower the ratio for '{knob.branch}' or use a smaller round_to"
        )
    return keep


def _trace_batch(model: MultimodalModel, batch: Batch) -> Batch:
    """``batch`` with every row present, so tracing and MAC counting run every encoder."""
    missing = [m for m in model.modalities if not isinstance(batch.get(m), torch.Tensor)]
    if missing:
        raise DataError(f"example_batch has no {missing} tensor(s); pass a batch holding every modality the "
                        f"model has ({model.modalities}) so that each encoder is traced and pruned")
    present = {m: torch.ones(int(batch[m].shape[0]), dtype=torch.bool, device=batch[m].device)
               for m in model.modalities}
    return {**batch, "present": present}


def _default_loss(out: ModelOutput, batch: Batch) -> torch.Tensor:
    return F.cross_entropy(out.logits, batch["label"], ignore_index=IGNORE_LABEL)


def _accumulate_grads(model: nn.Module, batches: Iterable[Batch], loss_fn: LossFn) -> None:
    """Sum ``d loss / d param`` over ``batches`` (eval mode) into ``.grad`` for Taylor importance."""
    model.zero_grad(set_to_none=True)
    count = 0
    for batch in batches:
        loss_fn(model(batch), batch).backward()
        count += 1
    if count == 0:
        raise ConfigError("taylor_batches: is empty; pass a few labelled batches "
                          "(or None to use example_batch)")
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    if unused:
        more = " ..." if len(unused) > 3 else ""
        warnings.warn(f"taylor importance: no gradient reached {unused[:3]}{more}; they count as "
                      "unimportant. Pass taylor_batches that hold every modality", stacklevel=3)
    for p in model.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)


def _lowest(imp: torch.Tensor, n: int, heads: int) -> list[int]:
    """Indices of the ``n`` least important channels; with ``heads`` > 1, ``n / heads`` per head."""
    if heads == 1:
        return torch.argsort(imp)[:n].tolist()
    size, per = imp.numel() // heads, n // heads
    order = [torch.argsort(imp[h * size:(h + 1) * size])[:per] for h in range(heads)]
    return [h * size + int(i) for h in range(heads) for i in order[h]]


def _group(dg: Any, root: nn.Module, idxs: list[int], frozen: set[nn.Module]) -> Any:
    """torch-pruning's group for pruning ``idxs`` of ``root``'s outputs, minus frozen outputs.

    Width-1 gates broadcast against the fused channels, so torch-pruning couples their outputs
    through the broadcast; theirs and the classifier's output widths must not shrink.
    """
    group = dg.get_pruning_group(root, dg.get_pruner_of_module(root).prune_out_channels, idxs)
    group._group = [it for it in group._group
                    if not (it.dep.target.module in frozen and dg.is_out_channel_pruning_fn(it.dep.handler))]
    return group


def _prune_knob(dg: Any, knob: Knob, target: int, scorer: Any, frozen: set[nn.Module]) -> None:
    """Prune every root of ``knob`` (and what depends on it) to ``target`` output channels."""
    for root in knob.roots:
        width = out_width(root)
        if width == target:  # already pruned through a coupled root (e.g. summed projections)
            continue
        imp = scorer(_group(dg, root, list(range(width)), frozen))
        _group(dg, root, _lowest(imp, width - target, knob.heads.get(root, 1)), frozen).prune()


def prune_structured(
    model: MultimodalModel,
    example_batch: Batch,
    *,
    ratio: float = 0.5,
    branch_ratios: dict[str, float] | None = None,
    importance: ImportanceName = "magnitude",
    taylor_batches: Iterable[Batch] | None = None,
    loss_fn: LossFn | None = None,
    round_to: int | None = None,
) -> PruneReport:
    """Remove channels from a copy of ``model`` and rewrite its spec; ``model`` is not changed.

    Every prunable width (see :mod:`mmdistill.compression.prune_spec`) keeps
    ``width - floor(width * ratio)`` channels, rounded down to a multiple of ``round_to`` (and of
    the heads for attention fusion). Channels are ranked per width by torch-pruning's group
    importance over all coupled layers (L2 magnitude, or first-order Taylor ``|w * dL/dw|`` from
    ``taylor_batches``). LSTM/GRU/embedding widths, the classifier output and fusion gates are
    fixed. The result is ``build_model(new_spec)`` loaded with the pruned weights, so saving and
    loading it round-trips exactly.

    Args:
        model: a model built by :func:`~mmdistill.models.builders.build_model` (it has a spec).
        example_batch: a batch holding every modality of the model (for tracing and MAC counts).
        ratio: fraction of channels removed in every branch, in ``[0, 1)``.
        branch_ratios: per-branch overrides (``image``, ``text``, ``audio``, ``fusion``, ``head``);
            0 leaves that branch untouched.
        importance: ``"magnitude"`` or ``"taylor"``.
        taylor_batches: labelled batches for Taylor importance (default: ``[example_batch]``).
        loss_fn: ``(ModelOutput, batch) -> scalar`` for Taylor (default: cross-entropy on ``label``).
        round_to: keep widths at a multiple of this (e.g. 8 for SIMD-friendly kernels).

    Returns:
        A :class:`PruneReport` whose ``model`` is the pruned copy (same train/eval mode as ``model``).

    Raises:
        MissingDependencyError: torch-pruning is not installed (extra ``prune``).
        ConfigError: bad ratio, branch name, importance or round_to, or a width that would reach 0.
        DataError: ``example_batch`` lacks one of the model's modalities.
        CheckpointError: ``model`` has no spec, or the pruned widths do not rebuild from the spec.

    Shapes:
        example_batch: per :mod:`mmdistill.data.batch`; the pruned model's logits stay ``[B, K]``.
    """
    tp = _import_tp()
    if getattr(model, "spec", None) is None:
        raise CheckpointError("prune_structured: the model has no spec, so its pruned widths cannot be "
                              "saved; build it with mmdistill.models.builders.build_model")
    ratios = resolve_ratios(model, ratio, branch_ratios)
    if importance not in IMPORTANCES:
        close = difflib.get_close_matches(str(importance), IMPORTANCES, n=1)
        hint = f" did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"importance: unknown '{importance}';{hint} choose one of {', '.join(IMPORTANCES)}")
    if round_to is not None and (isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1):
        raise ConfigError(f"round_to: must be None or a positive integer, got {round_to!r}")
    batch = _trace_batch(model, example_batch)

    work = copy.deepcopy(model).eval()
    for p in work.parameters():
        p.requires_grad_(True)  # torch-pruning traces through autograd; a frozen teacher has none
    knobs = knobs_for(work)
    before = widths(work, knobs)
    targets = {k.key: _target(k, before[k.key], ratios[k.branch], round_to)
               for k in knobs if ratios[k.branch] > 0}
    for branch in branch_ratios or {}:
        if ratios[branch] > 0 and not any(k.branch == branch for k in knobs):
            entry = model.spec["encoders"][branch] if branch in model.modalities else model.spec[branch]
            warnings.warn(f"branch_ratios['{branch}']: {branch} '{entry['name']}' has no width that can be "
                          "pruned; it is left as it is", stacklevel=2)

    macs_before = branch_macs(work, batch)
    with torch.enable_grad():  # torch-pruning traces through autograd, also when called under no_grad
        dg = tp.DependencyGraph().build_dependency(
            work, example_inputs=batch, forward_fn=lambda m, x: m(x).logits, verbose=False,
            customized_pruners={nn.GRU: _fixed_rnn_pruner(tp)},
        )
        if importance == "taylor":
            batches = taylor_batches if taylor_batches is not None else [batch]
            _accumulate_grads(work, batches, loss_fn or _default_loss)
            scorer = tp.importance.GroupTaylorImportance()
        else:
            scorer = tp.importance.GroupMagnitudeImportance(p=2)
    frozen = set(frozen_out_layers(work))
    for knob in knobs:
        if knob.key in targets:
            _prune_knob(dg, knob, targets[knob.key], scorer, frozen)
    work.zero_grad(set_to_none=True)
    pruned = rebuild_from_spec(work, pruned_spec(work, knobs)).train(model.training)
    for p_new, p_old in zip(pruned.parameters(), model.parameters(), strict=True):
        p_new.requires_grad_(p_old.requires_grad)

    after = widths(work, knobs)
    channels: dict[str, dict[str, list[int]]] = {}
    for k in knobs:
        channels.setdefault(k.branch, {})[k.key] = [before[k.key], after[k.key]]
    return PruneReport(
        model=pruned, params_before=count_parameters(model), params_after=count_parameters(pruned),
        macs_before=macs_before, macs_after=branch_macs(pruned, batch), channels=channels, ratios=ratios,
        importance=importance, round_to=round_to,
    )
