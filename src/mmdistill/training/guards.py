"""Stop training at the first non-finite loss or gradient norm, naming where and on what.

:func:`~mmdistill.training.loop.train_one_epoch` calls :func:`check_step` after every forward
(before ``backward``) and :func:`check_grad_norm` after clipping (before ``optimizer.step``), so
a NaN never reaches the weights: the model in memory and every file on disk (the per-epoch resume
state, earlier checkpoints) stay as they were after the last good step. The error
(:class:`~mmdistill.errors.NonFiniteLossError`) names the stage, epoch, step, every non-finite
``loss`` / ``loss/<term>`` entry with its value, and the batch's sample ids;
:func:`add_last_good` appends where the last good resume state is.

Under torchrun each rank checks its own loss, then one 1-element all-reduce per step tells every
rank whether any rank saw a bad value, so all ranks stop at the same step instead of the healthy
ones waiting forever in DDP's gradient all-reduce.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from mmdistill.errors import NonFiniteLossError
from mmdistill.training.distributed import all_reduce_sum, is_distributed, rank

MAX_IDS_SHOWN = 20
"""At most this many sample ids are written into the message (all are on the exception)."""


@dataclass(frozen=True)
class StepPlace:
    """Where a training step is: stage, 1-based epoch, step in the epoch, step in the stage, lr."""

    stage: str | None
    epoch: int
    step: int
    global_step: int
    lr: float
    ids: Sequence[str]


def loss_entries(out: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """The ``loss`` and ``loss/<term>`` entries of a step's output as floats (one device sync).

    A non-scalar term counts as non-finite if any element is; its value is then its first
    non-finite element.
    """
    keys = [k for k in out if k == "loss" or k.startswith("loss/")]
    if not keys:
        return {}
    values = []
    for k in keys:  # no sync per term: the one sync is the .cpu() below
        v = out[k].detach().float().reshape(-1)
        bad = ~torch.isfinite(v)
        first_bad = v[bad.int().argmax()] if v.numel() else v.sum()
        values.append(torch.where(bad.any(), first_bad, v.sum()))
    return dict(zip(keys, torch.stack(values).cpu().tolist(), strict=True))


def _ids(ids: Sequence[str]) -> str:
    shown = [str(i) for i in ids[:MAX_IDS_SHOWN]]
    more = f" ... ({len(ids)} in all)" if len(ids) > MAX_IDS_SHOWN else ""
    return f"{shown}{more}"


def _raise(place: StepPlace, bad: dict[str, float], head: str, finite: dict[str, float]) -> None:
    where = f"{place.stage}: " if place.stage else ""
    ok = ", ".join(f"{k}={v:.4g}" for k, v in finite.items())
    msg = (
        f"{where}training diverged: {head} at epoch {place.epoch}, step {place.step}; lower the learning "
        f"rate (now {place.lr:.3g}), enable grad_clip, or check the inputs of this batch. "
        f"Non-finite: {', '.join(f'{k}={v}' for k, v in bad.items())}"
        f"{f' (finite: {ok})' if ok else ''}; step {place.global_step} of the stage; "
        f"batch ids: {_ids(place.ids)}. Stopped before the optimizer step: no weight was updated "
        "with this batch"
    )
    raise NonFiniteLossError(msg, stage=place.stage, epoch=place.epoch, step=place.step,
                             global_step=place.global_step, terms=bad, batch_ids=list(place.ids))


def check_step(out: Mapping[str, torch.Tensor], place: StepPlace) -> dict[str, float]:
    """Raise :class:`NonFiniteLossError` if any ``loss`` / ``loss/<term>`` entry is NaN or inf.

    Under torchrun every rank must call this at every step (it all-reduces a flag): a rank whose
    own values are finite raises too when another rank's are not.

    Returns:
        every loss entry as a float (for logging), when all are finite.
    """
    values = loss_entries(out)
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if is_distributed():
        if all_reduce_sum(1.0 if bad else 0.0) > 0 and not bad:
            where = f"{place.stage}: " if place.stage else ""
            raise NonFiniteLossError(
                f"{where}training diverged on another rank at epoch {place.epoch}, step {place.step}; this "
                f"rank ({rank()}) stopped with it. The rank that saw it names the loss term and batch ids",
                stage=place.stage, epoch=place.epoch, step=place.step, global_step=place.global_step,
                terms={}, batch_ids=list(place.ids),
            )
    if bad:
        first = next(iter(bad))
        head = (f"loss is {bad['loss']}" if "loss" in bad
                else f"loss term {first} is {bad[first]} (the total loss is {values.get('loss')})")
        _raise(place, bad, head, {k: v for k, v in values.items() if k not in bad})
    return values


def check_grad_norm(norm: float, loss: float, place: StepPlace) -> None:
    """Raise :class:`NonFiniteLossError` if the (pre-clip) gradient norm is NaN or inf.

    The norm is the same on every rank (gradients are all-reduced first), so all ranks stop together.
    """
    if not math.isfinite(norm):
        head = f"the gradient norm is {norm} although the loss, {loss:.4g}, is finite"
        _raise(place, {"grad_norm": norm}, head, {"loss": loss})


def add_last_good(err: NonFiniteLossError, resume_dir: Path | None, last_epoch: int) -> NonFiniteLossError:
    """A copy of ``err`` whose message also says where the last good resume state is kept."""
    if resume_dir is None:
        tail = "no resume state is kept for this training (fit was called without resume_dir)"
        last_good = None
    elif last_epoch < 1:
        tail = f"no epoch had completed, so {resume_dir} holds no resume state to keep"
        last_good = None
    else:
        last_good = str(Path(resume_dir) / "state.json")
        tail = (f"the last good state, after epoch {last_epoch}, is kept untouched in {resume_dir} "
                "(`mmdistill run --resume RUN_DIR` starts from it; changed settings start the stage over)")
    return NonFiniteLossError(f"{err}. {tail[0].upper()}{tail[1:]}", stage=err.stage, epoch=err.epoch,
                              step=err.step, global_step=err.global_step, terms=err.terms,
                              batch_ids=err.batch_ids, last_good=last_good)
