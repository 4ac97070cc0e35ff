"""The two registries of bring-your-own teachers (same :class:`~mmdistill.registry.Registry` class).

* :data:`PRETRAINED_ENCODERS`: factories of frozen per-modality encoders (``minilm``, ``hf_text``,
  ``speech_embedding``, ``mmdistill``, ``torch``); each entry's ``meta`` holds ``modality`` (None
  = any), ``finetunable`` and ``needs`` (the optional module it imports).
* :data:`TORCH_MODULES`: ``torch.nn.Module`` classes from the user's code, registered by a plugin
  module listed in the config's ``plugins`` (never executable YAML)::

      # my_pkg/teachers.py, listed as plugins: [my_pkg.teachers]
      from mmdistill.teachers import TORCH_MODULES

      @TORCH_MODULES.register("my_teacher")
      class MyTeacher(torch.nn.Module): ...
"""

from __future__ import annotations

import importlib

from mmdistill.registry import Registry

PRETRAINED_ENCODERS: Registry = Registry("pretrained encoder")
"""Name → factory ``(**kwargs) -> PretrainedEncoder``."""

TORCH_MODULES: Registry = Registry("teacher module")
"""Name → ``nn.Module`` class of the user's code (a whole teacher or one encoder)."""

_BUILTIN_MODULES: tuple[str, ...] = (
    "mmdistill.teachers.encoders",
    "mmdistill.teachers.huggingface",
    "mmdistill.teachers.speech_embedding",
)


def register_all() -> None:
    """Import the built-in pretrained encoders so they are registered (idempotent, no heavy imports)."""
    for name in _BUILTIN_MODULES:
        importlib.import_module(name)
