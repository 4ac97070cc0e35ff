"""Checkpoints: ``model.safetensors`` (weights) + ``model.json`` (spec and metadata). No pickle.

``model.json`` layout::

    {"format": "mmdistill.checkpoint/1", "mmdistill_version": "0.1.0", "parameters": 61234,
     "spec": {...model spec...}, "extra": {...caller metadata: class names, tokenizer, ...}}

Both files are written to a temporary name in the same directory and moved into place with
``os.replace``, so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mmdistill import __version__
from mmdistill.errors import CheckpointError, ConfigError
from mmdistill.models.builders import build_model
from mmdistill.models.multimodal import MultimodalModel

CHECKPOINT_FORMAT = "mmdistill.checkpoint/1"
WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "model.json"


def count_parameters(model: torch.nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameter elements (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then move the temporary file over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_model(model: MultimodalModel, directory: Path, *, extra: dict[str, Any] | None = None) -> None:
    """Write ``model.safetensors`` and ``model.json`` into ``directory`` (created if needed).

    Args:
        model: a model built by :func:`~mmdistill.models.builders.build_model` (it carries its spec;
            after pruning, the spec must already hold the new widths).
        directory: target directory.
        extra: JSON-serializable metadata stored under ``"extra"`` (class names, tokenizer file,
            preprocessing parameters, ...).

    Raises:
        CheckpointError: the model has no spec, or ``extra`` is not JSON-serializable.
    """
    if getattr(model, "spec", None) is None:
        raise CheckpointError(
            "cannot save a model without a spec: build it with mmdistill.models.builders.build_model "
            "(or set model.spec) so that model.json can rebuild it"
        )
    directory = Path(directory)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "mmdistill_version": __version__,
        "parameters": count_parameters(model),
        "spec": model.spec,
        "extra": extra or {},
    }
    try:
        text = json.dumps(meta, indent=2, sort_keys=False)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{directory / SPEC_FILE}: spec or extra metadata is not JSON-serializable: {exc}; "
            "pass only str/int/float/bool/None/list/dict values in extra"
        ) from exc
    # safetensors stores plain contiguous buffers; clone so views into shared storage save cleanly.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    directory.mkdir(parents=True, exist_ok=True)
    _atomic_write(directory / WEIGHTS_FILE, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    _atomic_write(directory / SPEC_FILE, lambda p: p.write_text(text + "\n", encoding="utf-8"))


def read_model_json(directory: Path) -> dict[str, Any]:
    """Parse and check ``model.json`` in ``directory``; raises :class:`CheckpointError`."""
    path = Path(directory) / SPEC_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{path}: not found; point to a directory written by save_model "
            f"(it holds {SPEC_FILE} and {WEIGHTS_FILE})"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg}); restore the file "
            "or re-save the model with save_model"
        ) from exc
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{path}: not UTF-8 text ({exc}); restore it or re-save the model") from exc
    is_dict = isinstance(meta, dict)
    if not (is_dict and meta.get("format") == CHECKPOINT_FORMAT and isinstance(meta.get("spec"), dict)):
        got = meta.get("format") if is_dict else type(meta).__name__
        raise CheckpointError(
            f"{path}: expected an object with format '{CHECKPOINT_FORMAT}' and a 'spec' mapping, got "
            f"format {got!r}; this file was not written by mmdistill's save_model"
        )
    return meta


def load_model(
    directory: Path, *, device: str | torch.device = "cpu"
) -> tuple[MultimodalModel, dict[str, Any]]:
    """Rebuild a model from ``model.json`` and load ``model.safetensors`` strictly.

    Returns:
        The model (in eval mode, on ``device``) and the ``extra`` metadata saved with it.

    Raises:
        CheckpointError: a file is missing or unreadable, the spec does not build, or the weights
            do not match the spec (missing, unexpected or wrongly shaped keys).
    """
    directory = Path(directory)
    meta = read_model_json(directory)
    try:
        model = build_model(meta["spec"])
    except ConfigError as exc:
        raise CheckpointError(f"{directory / SPEC_FILE}: the spec does not build a model: {exc}") from exc
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise CheckpointError(
            f"{weights_path}: not found; the checkpoint is incomplete: re-save it with save_model"
        )
    try:
        state = load_file(str(weights_path), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(
            f"{weights_path}: unreadable safetensors file ({exc}); restore it or re-save the model"
        ) from exc
    expected = model.state_dict()
    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        problems.append(f"missing key(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected key(s) {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    for k, v in state.items():
        if k in expected and tuple(v.shape) != tuple(expected[k].shape):
            problems.append(
                f"key '{k}' has shape {list(v.shape)} but {SPEC_FILE}'s spec builds {list(expected[k].shape)}"
            )
    if problems:
        raise CheckpointError(
            f"{weights_path}: weights do not match the spec in {directory / SPEC_FILE}: "
            f"{'; '.join(problems[:5])}. The two files come from different models: re-save both with "
            "save_model (after pruning, write the pruned widths into the spec)"
        )
    model.load_state_dict(state, strict=True)
    model.to(device)
    model.eval()
    return model, dict(meta.get("extra") or {})
