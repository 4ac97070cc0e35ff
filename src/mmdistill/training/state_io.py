"""Building blocks of resume states: atomic file writes (:mod:`mmdistill.io_atomic`), a
pickle-free encoding of nested state dicts (tensors to safetensors, the rest to JSON), and
capture/restore of every RNG a training epoch draws from (torch CPU and CUDA, NumPy, Python's
``random``, the data loaders' generators), and the clean-up of ``metrics.jsonl`` when a stage restarts.

Tensor files carry a sha256 of their tensors (names, dtypes, shapes, bytes) in their safetensors
metadata (:data:`DIGEST_KEY`); :func:`load_tensor_file` refuses a pickle, an unreadable file and a
digest that does not match, and loads older files without a digest unverified.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from mmdistill.errors import CheckpointError
from mmdistill.io_atomic import atomic_path, atomic_write_text

DIGEST_KEY = "mmdistill.sha256"
"""Safetensors metadata key holding :func:`tensors_digest` of the file's tensors."""


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order (hex)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}\0{t.dtype}\0{list(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # the raw bytes, without a copy
    return h.hexdigest()


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Save ``tensors`` as safetensors at ``path`` through a temporary file and ``os.replace``.

    The metadata also gets :data:`DIGEST_KEY`, checked by :func:`load_tensor_file`.
    """
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={**metadata, DIGEST_KEY: tensors_digest(tensors)})


def load_tensor_file(path: Path, *, fix: str) -> dict[str, torch.Tensor]:
    """Read a tensor file written by :func:`atomic_save_tensors`, verified; never unpickles.

    Args:
        path: the ``.safetensors`` file.
        fix: what the user should do when the file is refused (ends every message).

    Raises:
        CheckpointError: the file is missing, a pickle (a ``torch.save`` file), not safetensors, or
            its tensors do not match the digest stored in it; the message names the file.
    """
    from mmdistill.models.checkpoint import pickle_kind  # models import torch modules: load lazily

    kind = pickle_kind(path)
    if kind is not None:
        raise CheckpointError(f"{path}: is {kind}, not safetensors; refused (never unpickled); {fix}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"{path}: unreadable tensor file ({exc}); {fix}") from exc
    recorded = metadata.get(DIGEST_KEY)
    if recorded is not None and tensors_digest(tensors) != recorded:
        raise CheckpointError(f"{path}: the tensors do not match the sha256 stored with them (the file was "
                              f"changed or damaged after it was written); {fix}")
    return tensors


def encode_state(value: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able form of a nested state dict; tensors move to ``tensors`` under ``prefix/...``."""
    if torch.is_tensor(value):
        tensors[prefix] = value.detach().to("cpu").contiguous().clone()
        return {"__tensor__": prefix}
    if isinstance(value, Mapping):
        keys = list(value)
        if all(isinstance(k, str) for k in keys):
            return {"__dict__": {k: encode_state(value[k], f"{prefix}/{k}", tensors) for k in keys}}
        # Optimizer states are keyed by parameter index (int): keep the keys' types.
        return {"__items__": [[k, encode_state(value[k], f"{prefix}/{k}", tensors)] for k in keys]}
    if isinstance(value, tuple):
        return {"__tuple__": [encode_state(v, f"{prefix}/{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [encode_state(v, f"{prefix}/{i}", tensors) for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"resume state: cannot store {type(value).__name__} at {prefix!r} (not a tensor or JSON)")


def decode_state(value: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of :func:`encode_state` (``tensors`` as loaded from the safetensors file)."""
    if isinstance(value, list):
        return [decode_state(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__tuple__" in value:
        return tuple(decode_state(v, tensors) for v in value["__tuple__"])
    if "__items__" in value:
        return {k: decode_state(v, tensors) for k, v in value["__items__"]}
    return {k: decode_state(v, tensors) for k, v in value["__dict__"].items()}


def loader_generators(*loaders: Any) -> list[torch.Generator]:
    """The ``torch.Generator`` of each loader that has one (DataLoader draws a seed from it per epoch)."""
    gens = []
    for loader in loaders:
        g = getattr(loader, "generator", None)
        if isinstance(g, torch.Generator):
            gens.append(g)
    return gens


def capture_rng(generators: Iterable[torch.Generator], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Store torch/CUDA/NumPy/loader RNG states in ``tensors``; return the JSON part (Python, NumPy)."""
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = state
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng/numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    for i, g in enumerate(generators):
        tensors[f"rng/loader/{i}"] = g.get_state()
    version, internal, gauss_next = random.getstate()
    return {"python": [version, list(internal), gauss_next], "numpy": [kind, int(pos), int(has_gauss),
                                                                       float(cached)]}


def restore_rng(meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor],
                generators: Iterable[torch.Generator]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(tensors["rng/torch"])
    n_cuda = sum(k.startswith("rng/cuda/") for k in tensors)
    cuda = [tensors[f"rng/cuda/{i}"] for i in range(n_cuda)]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, cached = meta["numpy"]
    keys = tensors["rng/numpy"].numpy().astype(np.uint32)
    np.random.set_state((kind, keys, int(pos), int(has_gauss), float(cached)))
    for i, g in enumerate(generators):
        key = f"rng/loader/{i}"
        if key in tensors:
            g.set_state(tensors[key])
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


def drop_stage_records(path: Path | None, stage: str, after_epoch: int) -> int:
    """Remove ``stage``'s records with ``epoch > after_epoch`` from a metrics file, atomically.

    A stage that (re)starts at ``after_epoch + 1`` will write those epochs again, so this keeps
    ``metrics.jsonl`` free of duplicated epochs after a resume or a rerun into the same folder.
    A last line cut off by a kill mid-write is dropped too. Other stages are left alone.

    Returns:
        The number of lines removed.
    """
    if path is None or not path.is_file():
        return 0
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    if text and not text.endswith("\n"):
        lines = lines[:-1]  # a partial last line (killed while writing)
    kept = []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            kept.append(line)  # not ours to judge; leave it
            continue
        epoch = rec.get("epoch") if isinstance(rec, dict) else None
        if (isinstance(rec, dict) and rec.get("stage") == stage and isinstance(epoch, int)
                and epoch > after_epoch):
            continue
        kept.append(line)
    removed = len(text.splitlines()) - len(kept)
    if removed:
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))
    return removed
