"""The model-family registries: encoders (with ``modality`` metadata), fusions and heads.

Components register themselves when their module is imported; :func:`register_all` imports the
built-in ones, and :mod:`mmdistill.models.builders` calls it at import time, so importing the
builders is enough to see every built-in name. Plugins register with the same decorators::

    from mmdistill.models.registries import ENCODERS

    @ENCODERS.register("my_cnn", modality="image")
    class MyCNN(torch.nn.Module): ...
"""

from __future__ import annotations

import importlib

from mmdistill.registry import Registry

ENCODERS: Registry = Registry("encoder")
"""Encoder classes; each entry's ``meta["modality"]`` names the modality it reads."""

FUSIONS: Registry = Registry("fusion")
"""Fusion classes, constructed as ``cls(in_dims: dict[str, int], dim=..., ...)``."""

HEADS: Registry = Registry("head")
"""Head classes, constructed as ``cls(in_dim, num_classes, ...)`` or ``cls(in_dim, tasks, ...)``."""

_BUILTIN_MODULES: tuple[str, ...] = (
    "mmdistill.models.encoders.image",
    "mmdistill.models.encoders.text",
    "mmdistill.models.encoders.audio",
    "mmdistill.models.fusion.concat",
    "mmdistill.models.fusion.gated",
    "mmdistill.models.fusion.attention",
    "mmdistill.models.heads",
)


def register_all() -> None:
    """Import every built-in encoder, fusion and head module so they are registered (idempotent)."""
    for name in _BUILTIN_MODULES:
        importlib.import_module(name)
