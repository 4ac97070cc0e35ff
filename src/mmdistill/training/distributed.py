"""Data-parallel training under ``torchrun``: process-group set-up and the few collectives we use.

Launch with ``torchrun --standalone --nproc_per_node=N -m mmdistill ...``; torchrun sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address. Outside torchrun every function here is
a cheap no-op (one process, rank 0), so library code calls them unconditionally.

Backends: gloo on CPU, nccl when CUDA is available. The frozen teacher is never wrapped in DDP: it
has no trainable parameters, so :func:`wrap_ddp` returns such modules unchanged.
"""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mmdistill.errors import ConfigError

T = TypeVar("T", float, torch.Tensor)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: global rank (0 is the main process, which alone writes files and prints).
        world_size: number of processes.
        local_rank: rank on this machine (selects the GPU).
        backend: ``"gloo"``, ``"nccl"`` or ``"none"`` outside torchrun.
        enabled: True when a process group is initialized.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = "none"
    enabled: bool = False


def _env_int(name: str) -> int:
    raw = os.environ[name]
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(
            f"environment variable {name} must be an integer, got {raw!r}; launch with torchrun"
        ) from None


def init_distributed(backend: str | None = None, *, timeout_s: float = 1800.0) -> DistInfo:
    """Initialize the default process group from the torchrun environment; no-op outside it.

    Calling it again once initialized returns the current :class:`DistInfo`.

    Args:
        backend: force a backend; default gloo on CPU, nccl when CUDA is available.
        timeout_s: how long a collective may wait for the other ranks before failing.

    Returns:
        This process's :class:`DistInfo` (``enabled=False`` when not launched by torchrun).
    """
    if dist.is_available() and dist.is_initialized():
        return get_dist_info()
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return DistInfo()
    if not dist.is_available():
        raise ConfigError("launched under torchrun, but this torch build has no torch.distributed support")
    rank, world, local = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ConfigError(f"distributed backend must be 'gloo' or 'nccl', got {backend!r}")
    if backend == "nccl":
        # Bind before init so NCCL communicators and object collectives use this rank's GPU.
        torch.cuda.set_device(local)
    dist.init_process_group(
        backend=backend, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=timeout_s)
    )
    return DistInfo(rank=rank, world_size=world, local_rank=local, backend=backend, enabled=True)


def get_dist_info() -> DistInfo:
    """The current :class:`DistInfo` (disabled when no process group is initialized)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        backend=str(dist.get_backend()),
        enabled=True,
    )


def is_distributed() -> bool:
    """True when a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """Global rank of this process (0 outside torchrun)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 outside torchrun)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """True on rank 0, the only rank that writes files and prints."""
    return rank() == 0


def local_device() -> torch.device:
    """This rank's device: ``cuda:<local_rank>`` under nccl, else cuda if available, else cpu."""
    info = get_dist_info()
    if info.backend == "nccl":
        return torch.device("cuda", info.local_rank)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _comm_device() -> torch.device:
    # nccl only reduces CUDA tensors; gloo reduces CPU tensors.
    if get_dist_info().backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait until every rank gets here (no-op with one process)."""
    if is_distributed():
        dist.barrier()


def all_reduce_sum(value: T) -> T:
    """Sum of ``value`` over ranks; a float in, a float out; a tensor in, a tensor out (same device).

    Shapes:
        value: any shape; the result has the same shape.
    """
    if not is_distributed():
        return value
    if isinstance(value, torch.Tensor):
        # Integer counts are summed in float64 (exact below 2**53) and cast back.
        dtype = value.dtype if value.is_floating_point() else torch.float64
        t = value.detach().to(_comm_device(), dtype=dtype).clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.to(value.device, dtype=value.dtype)
    t = torch.tensor(float(value), dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item())


def all_reduce_mean(value: T) -> T:
    """Mean of ``value`` over ranks (the unweighted mean of each rank's value).

    Shapes:
        value: any shape; the result has the same shape.
    """
    if not is_distributed():
        return value
    total = all_reduce_sum(value)
    return total / world_size()


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable; only our own in-memory objects, never user files), in rank order."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def has_trainable_parameters(model: nn.Module) -> bool:
    """True when any parameter of ``model`` requires a gradient."""
    return any(p.requires_grad for p in model.parameters())


def wrap_ddp(model: nn.Module, *, find_unused_parameters: bool = True) -> nn.Module:
    """Wrap ``model`` in DDP when running distributed and it has trainable parameters.

    ``find_unused_parameters`` defaults to True because multimodal models skip an encoder whose
    modality is absent from a batch (and ranks may see different modalities); DDP would otherwise
    wait forever for those gradients. The cost is one graph traversal per step.

    Returns:
        The DDP wrapper, or ``model`` itself (one process, or nothing to train: a frozen teacher).
    """
    if isinstance(model, DistributedDataParallel):
        return model
    if not is_distributed() or not has_trainable_parameters(model):
        return model
    info = get_dist_info()
    device_ids = [info.local_rank] if info.backend == "nccl" else None
    return DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper (or ``torch.compile`` wrapper); ``model`` otherwise."""
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def cleanup() -> None:
    """Destroy the process group, if any (safe to call more than once).

    On the normal path every rank first meets at a barrier: a rank that tore the group down while
    another still used it made gloo abort the process at exit now and then ("terminate called
    without an active exception", SIGABRT; seen in about 1 of 4 two-process runs of
    tests/training/ddp_worker.py). While an exception is propagating (``cleanup`` in a ``finally``)
    there is no barrier, so a failing rank exits at once and torchrun stops the others.
    """
    if dist.is_available() and dist.is_initialized():
        if sys.exc_info()[1] is None:
            dist.barrier()
        dist.destroy_process_group()
