"""Checkpoints: ``model.safetensors`` (weights) + ``model.json`` (spec and metadata). No pickle.

``model.json`` layout::

    {"format": "mmdistill.checkpoint/1", "mmdistill_version": "0.1.0", "parameters": 61234,
     "weights_sha256": "<sha256 of model.safetensors>",
     "spec": {...model spec...}, "extra": {...caller metadata: class names, tokenizer, ...}}

Both files are written to a temporary name in the same directory, fsynced and moved into place with
``os.replace`` (:mod:`mmdistill.io_atomic`), weights first, so a crash never leaves a half-written
file under the final name, and a crash between the two renames leaves a ``weights_sha256`` that no
longer matches (refused on load) rather than a silent mix of two saves.

Loading checks, in order: ``model.json`` parses and has the format; the spec builds; the weights
file is safetensors (a pickle, such as a ``torch.save`` file, is refused and never unpickled); the
tensors match the spec key by key and shape by shape; the file's sha256 matches
``weights_sha256``. Checkpoints written before the checksum existed load with a warning.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mmdistill import __version__
from mmdistill.errors import CheckpointError, ConfigError
from mmdistill.io_atomic import atomic_path, atomic_write_json, file_sha256
from mmdistill.models.builders import build_model
from mmdistill.models.multimodal import MultimodalModel

CHECKPOINT_FORMAT = "mmdistill.checkpoint/1"
WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "model.json"
CHECKSUM_KEY = "weights_sha256"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".tar")
"""File endings of pickle-based checkpoints (``torch.save``, Lightning, pickle): refused, never unpickled."""
_PICKLE_FIX = (
    "mmdistill never unpickles a checkpoint (unpickling can run arbitrary code). If you trust the file, "
    "convert it once in your own code: build the model with mmdistill.models.builders.build_model, "
    "model.load_state_dict(torch.load(path, weights_only=True)), then "
    "mmdistill.models.checkpoint.save_model(model, folder)"
)


def count_parameters(model: torch.nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameter elements (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def pickle_kind(path: Path) -> str | None:
    """What pickle-based format ``path`` holds, judged by its first bytes; None when it is not one."""
    try:
        with Path(path).open("rb") as f:
            head = f.read(4)
    except OSError:
        return None
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive, as torch.save writes (a pickle inside)"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return f"a Python pickle (protocol {head[1]})"
    return None


def _checkpoint_dir(directory: Path) -> Path:
    """``directory`` itself; a file given instead is refused with the right fix."""
    directory = Path(directory)
    if not directory.is_file():
        return directory
    kind = pickle_kind(directory)
    if kind is not None or directory.suffix.lower() in PICKLE_SUFFIXES:
        what = kind or f"a '{directory.suffix}' file, a pickle-based format"
        raise CheckpointError(f"{directory}: is {what}, not an mmdistill checkpoint folder "
                              f"({SPEC_FILE} + {WEIGHTS_FILE}). {_PICKLE_FIX}")
    raise CheckpointError(f"{directory}: is a file; pass the checkpoint folder that holds {SPEC_FILE} and "
                          f"{WEIGHTS_FILE} (here maybe {directory.parent})")


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
        CHECKSUM_KEY: "",
        "spec": model.spec,
        "extra": extra or {},
    }
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{directory / SPEC_FILE}: spec or extra metadata is not JSON-serializable: {exc}; "
            "pass only str/int/float/bool/None/list/dict values in extra"
        ) from exc
    # safetensors stores plain contiguous buffers; clone so views into shared storage save cleanly.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    directory.mkdir(parents=True, exist_ok=True)

    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
        meta[CHECKSUM_KEY] = file_sha256(tmp)  # of the very bytes moved into place
    atomic_write_json(directory / SPEC_FILE, meta)


def read_model_json(directory: Path) -> dict[str, Any]:
    """Parse and check ``model.json`` in ``directory``; raises :class:`CheckpointError`."""
    path = _checkpoint_dir(directory) / SPEC_FILE
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


def _mismatches(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> list[str]:
    """One line per difference between the saved tensors and those the spec builds."""
    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        problems.append(f"missing key(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected key(s) {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    shapes = [
        f"key '{k}' has shape {list(v.shape)} but {SPEC_FILE}'s spec builds {list(expected[k].shape)}"
        for k, v in state.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    shown = 8
    problems += shapes[:shown]
    if len(shapes) > shown:
        problems.append(f"and {len(shapes) - shown} more tensor(s) of another shape")
    return problems


def _verify_checksum(meta: dict[str, Any], weights_path: Path, spec_path: Path) -> None:
    recorded = meta.get(CHECKSUM_KEY)
    if not recorded:
        warnings.warn(
            f"{spec_path}: has no {CHECKSUM_KEY} (written by an mmdistill older than the checksum), so "
            f"{WEIGHTS_FILE} cannot be verified; load and re-save it with save_model to add one",
            stacklevel=3,
        )
        return
    actual = file_sha256(weights_path)
    if actual != recorded:
        raise CheckpointError(
            f"{weights_path}: sha256 {actual[:16]}... does not match {CHECKSUM_KEY} {str(recorded)[:16]}... "
            f"recorded in {spec_path}: the weights were changed, damaged or copied from another save. "
            "Restore the folder from the run that wrote it, or re-save the model with save_model"
        )


def load_model(
    directory: Path, *, device: str | torch.device = "cpu"
) -> tuple[MultimodalModel, dict[str, Any]]:
    """Rebuild a model from ``model.json`` and load ``model.safetensors`` strictly.

    Returns:
        The model (in eval mode, on ``device``) and the ``extra`` metadata saved with it.

    Raises:
        CheckpointError: ``directory`` is a file (a ``.pt``/pickle is refused, never unpickled), a
            file is missing or unreadable, the weights file is a pickle, the spec does not build,
            the weights do not match the spec (missing, unexpected or wrongly shaped keys, each
            named), or the weights' sha256 differs from the one in ``model.json``.

    Warns:
        UserWarning: ``model.json`` has no checksum (an older checkpoint): loaded unverified.
    """
    directory = _checkpoint_dir(Path(directory))
    meta = read_model_json(directory)
    spec_path = directory / SPEC_FILE
    try:
        model = build_model(meta["spec"])
    except ConfigError as exc:
        raise CheckpointError(f"{spec_path}: the spec does not build a model: {exc}") from exc
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise CheckpointError(
            f"{weights_path}: not found; the checkpoint is incomplete: re-save it with save_model"
        )
    kind = pickle_kind(weights_path)
    if kind is not None:
        raise CheckpointError(f"{weights_path}: is {kind}, not safetensors; refused. {_PICKLE_FIX}")
    try:
        state = load_file(str(weights_path), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(
            f"{weights_path}: unreadable safetensors file ({exc}); restore it or re-save the model"
        ) from exc
    problems = _mismatches(state, model.state_dict())
    if problems:
        raise CheckpointError(
            f"{weights_path}: weights do not match the spec in {spec_path}: "
            f"{'; '.join(problems)}. The two files come from different models: re-save both with "
            "save_model (after pruning, write the pruned widths into the spec)"
        )
    _verify_checksum(meta, weights_path, spec_path)
    model.load_state_dict(state, strict=True)
    model.to(device)
    model.eval()
    return model, dict(meta.get("extra") or {})
