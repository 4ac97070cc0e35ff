"""Per-epoch resume state of :func:`~mmdistill.training.loop.fit`, so an interrupted stage
continues from its last completed epoch with the same numbers as an uninterrupted run.

After every epoch, rank 0 writes to the stage's ``resume/`` folder (``<model dir>/resume``):

- ``epoch-<NNNN>.safetensors``: the tensors: model weights (``model/<key>``), the best epoch's
  weights (``best/<key>``, left out while the best epoch is the current one), the flattened
  optimizer state (``optim/...``), the RNG states of torch (``rng/torch``, ``rng/cuda/<i>``),
  NumPy (``rng/numpy``) and the data loaders' generators (``rng/loader/<i>``);
- ``state.json``: everything else (epoch, early-stopping counters, per-epoch history, the
  scheduler's state, Python's ``random`` state, the tensor file's name, and a fingerprint of
  the training settings). It is written last and is the commit point: a kill at any moment
  leaves either the previous epoch's complete state or the new one, never a mix.

Nothing is pickled: tensors go through safetensors, the rest is JSON (Python's ``json``, which
also round-trips ``NaN`` and ``Infinity``). Data order needs no extra state: the samplers shuffle
by ``(seed, epoch)`` (:mod:`mmdistill.data.loaders`).

The recipes delete the folder once the trained model is saved (:func:`clear_resume_state`).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from mmdistill.errors import CheckpointError
from mmdistill.training.distributed import is_main
from mmdistill.training.kill_hook import maybe_test_kill_at
from mmdistill.training.state_io import (
    atomic_save_tensors,
    atomic_write_text,
    capture_rng,
    decode_state,
    drop_stage_records,
    encode_state,
    load_tensor_file,
    restore_rng,
)

log = logging.getLogger(__name__)

__all__ = ["RESUME_DIR", "STATE_FILE", "FitResumer", "ResumeState", "check_fingerprint",
           "clear_resume_state", "fit_fingerprint", "load_resume_state", "maybe_test_kill",
           "save_resume_state"]

RESUME_DIR = "resume"
STATE_FILE = "state.json"
FORMAT_VERSION = 1
# kill_hook.KILL_ENV (test-only): ``<stage>:<epoch>:<point>`` makes the process SIGKILL itself at that point
# of fit() (``logged``: after epoch ``<epoch>``'s metrics record is written, before its resume state
# is; ``saved``: after the resume state is written). The other points: mmdistill.training.kill_hook.


def maybe_test_kill(stage: str, epoch: int, point: str) -> None:
    """SIGKILL this process if :data:`KILL_ENV` names ``stage:epoch:point`` (test-only hook)."""
    maybe_test_kill_at(f"{stage}:{epoch}:{point}")


# ---------------------------------------------------------------------------------------------
# The state of one fit


@dataclass
class ResumeState:
    """What :func:`~mmdistill.training.loop.fit` needs to continue after ``epoch``.

    Attributes:
        epoch: the last completed epoch (1-based).
        model: the model's ``state_dict`` after ``epoch`` (CPU tensors).
        best: the best epoch's ``state_dict``, or None when it is ``model`` (best epoch == epoch)
            or there is none yet.
        optimizer, scheduler: their ``state_dict()``\\ s (scheduler None when there is none).
        best_acc, best_epoch, bad_epochs: early-stopping state.
        history: the per-epoch records so far.
        fingerprint: the training settings the state belongs to (checked on load).
    """

    epoch: int
    model: dict[str, torch.Tensor]
    best: dict[str, torch.Tensor] | None
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    best_acc: float
    best_epoch: int
    bad_epochs: int
    history: list[dict[str, Any]]
    fingerprint: dict[str, Any]
    rng: dict[str, Any] = field(default_factory=dict)  # JSON part; tensors kept in rng_tensors
    rng_tensors: dict[str, torch.Tensor] = field(default_factory=dict)


def fit_fingerprint(model: torch.nn.Module, **settings: Any) -> dict[str, Any]:
    """The settings a resume state is only valid for: ``settings`` plus every parameter's shape."""
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    return {**{k: v for k, v in settings.items()}, "shapes": shapes}


def _cpu_state(module_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors that share storage (tied weights, views).
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module_state.items()}


def save_resume_state(directory: Path, state: ResumeState) -> Path:
    """Write ``state`` into ``directory`` atomically (tensor file first, ``state.json`` last).

    Returns:
        The path of ``state.json``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for k, v in _cpu_state(state.model).items():
        tensors[f"model/{k}"] = v
    if state.best is not None:
        for k, v in _cpu_state(state.best).items():
            tensors[f"best/{k}"] = v
    optimizer = encode_state(state.optimizer, "optim", tensors)
    scheduler = encode_state(state.scheduler, "sched", tensors) if state.scheduler is not None else None
    tensors.update(state.rng_tensors)
    name = f"epoch-{state.epoch:04d}.safetensors"
    atomic_save_tensors(directory / name, tensors, {"epoch": str(state.epoch)})
    meta = {
        "version": FORMAT_VERSION,
        "epoch": state.epoch,
        "tensors": name,
        "best_acc": state.best_acc,
        "best_epoch": state.best_epoch,
        "bad_epochs": state.bad_epochs,
        "has_best": state.best is not None,
        "history": state.history,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "rng": state.rng,
        "fingerprint": state.fingerprint,
    }
    path = directory / STATE_FILE
    atomic_write_text(path, json.dumps(meta, indent=1))
    for old in directory.glob("epoch-*.safetensors"):  # the previous epoch's, no longer referenced
        if old.name != name:
            old.unlink(missing_ok=True)
    return path


def load_resume_state(directory: Path) -> ResumeState | None:
    """Read the state saved in ``directory``; None when there is none.

    Raises:
        CheckpointError: the state is unreadable or inconsistent (naming the file and the fix).
    """
    path = directory / STATE_FILE
    if not path.is_file():
        return None
    fix = f"delete {directory} to start this stage over (or run without --resume)"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if meta.get("version") != FORMAT_VERSION:
            raise CheckpointError(f"{path}: resume state format {meta.get('version')!r}, expected "
                                  f"{FORMAT_VERSION}; {fix}")
        name = str(meta["tensors"])
        if not re.fullmatch(r"epoch-\d{4,}\.safetensors", name):  # a plain file name, never a path
            raise CheckpointError(f"{path}: tensor file {name!r} is not of the form epoch-NNNN.safetensors; "
                                  f"{fix}")
        tensors = load_tensor_file(directory / name, fix=fix)
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        raise CheckpointError(f"{path}: unreadable resume state ({exc}); {fix}") from exc
    model = {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
    best = {k.removeprefix("best/"): v for k, v in tensors.items() if k.startswith("best/")}
    return ResumeState(
        epoch=int(meta["epoch"]),
        model=model,
        best=best if meta["has_best"] else None,
        optimizer=decode_state(meta["optimizer"], tensors),
        scheduler=decode_state(meta["scheduler"], tensors) if meta["scheduler"] is not None else None,
        best_acc=float(meta["best_acc"]),
        best_epoch=int(meta["best_epoch"]),
        bad_epochs=int(meta["bad_epochs"]),
        history=list(meta["history"]),
        fingerprint=meta["fingerprint"],
        rng=meta["rng"],
        rng_tensors={k: v for k, v in tensors.items() if k.startswith("rng/")},
    )


def check_fingerprint(state: ResumeState, expected: Mapping[str, Any], directory: Path) -> None:
    """Refuse a state written by a different training (other settings or architecture).

    Raises:
        CheckpointError: naming the differing settings, the folder and the fix.
    """
    saved = json.loads(json.dumps(state.fingerprint))
    wanted = json.loads(json.dumps(dict(expected)))
    diff = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
    if diff:
        shown = ", ".join("parameter shapes differ" if k == "shapes"
                          else f"{k}: saved {saved.get(k)!r}, now {wanted.get(k)!r}" for k in diff)
        raise CheckpointError(
            f"{directory / STATE_FILE}: the resume state belongs to a different training ({shown}); "
            f"delete {directory} to start this stage over, or resume with the run's own config"
        )


def clear_resume_state(directory: Path) -> bool:
    """Delete a resume folder (after its stage saved its model); True if there was one."""
    if directory.is_dir():
        shutil.rmtree(directory)
        return True
    return False


# ---------------------------------------------------------------------------------------------
# The glue fit() uses


class FitResumer:
    """Saves :func:`~mmdistill.training.loop.fit`'s state after every epoch and restores it.

    Args:
        directory: the stage's resume folder (``<model dir>/resume``).
        stage: the stage name (logs and the test hook).
        fingerprint: see :func:`fit_fingerprint`; a saved state must match it.
        generators: the data loaders' generators (see :func:`loader_generators`).
    """

    def __init__(self, directory: Path, *, stage: str, fingerprint: dict[str, Any],
                 generators: list[torch.Generator]) -> None:
        self.directory = Path(directory)
        self.stage = stage
        self.fingerprint = fingerprint
        self.generators = generators

    def begin(self, net: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, *,
              resume: bool, metrics: Path | None = None) -> ResumeState | None:
        """Restore the saved state into ``net``/``optimizer``/``scheduler``/RNGs when ``resume``.

        Without ``resume`` a stale state is deleted (a fresh start never continues an old one).
        Either way, the stage's records past the starting epoch are dropped from ``metrics``
        (rank 0), since the stage is about to log those epochs again.

        Returns:
            The restored state, or None when starting at epoch 1.
        """
        state = self._restore(net, optimizer, scheduler, resume=resume)
        if is_main():
            drop_stage_records(metrics, self.stage, state.epoch if state is not None else 0)
        return state

    def _restore(self, net: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, *,
                 resume: bool) -> ResumeState | None:
        if not resume:
            if (self.directory / STATE_FILE).is_file() and is_main():
                log.warning("%s: discarding the resume state in %s (not resuming)", self.stage,
                            self.directory)
                clear_resume_state(self.directory)
            return None
        state = load_resume_state(self.directory)
        if state is None:
            log.info("%s: no resume state in %s, starting at epoch 1", self.stage, self.directory)
            return None
        check_fingerprint(state, self.fingerprint, self.directory)
        net.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        if scheduler is not None and state.scheduler is not None:
            scheduler.load_state_dict(state.scheduler)
        restore_rng(state.rng, state.rng_tensors, self.generators)
        if state.best is None:  # the best epoch was the last completed one
            state.best = {k: v.clone() for k, v in state.model.items()}
        log.info("%s: resuming after epoch %d (best epoch %d) from %s", self.stage, state.epoch,
                 state.best_epoch, self.directory)
        return state

    def save(self, epoch: int, net: torch.nn.Module, best_state: dict[str, torch.Tensor] | None,
             optimizer: torch.optim.Optimizer, scheduler: Any, *, best_acc: float, best_epoch: int,
             bad_epochs: int, history: list[dict[str, Any]]) -> None:
        """Write the state after ``epoch`` (rank 0 only; other ranks return at once)."""
        maybe_test_kill(self.stage, epoch, "logged")
        if not is_main():
            return
        rng_tensors: dict[str, torch.Tensor] = {}
        rng = capture_rng(self.generators, rng_tensors)
        state = ResumeState(
            epoch=epoch, model=net.state_dict(), best=best_state if best_epoch != epoch else None,
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict() if scheduler is not None else None,
            best_acc=best_acc, best_epoch=best_epoch, bad_epochs=bad_epochs, history=history,
            fingerprint=self.fingerprint, rng=rng, rng_tensors=rng_tensors,
        )
        save_resume_state(self.directory, state)
        maybe_test_kill(self.stage, epoch, "saved")
