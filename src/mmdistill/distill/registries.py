"""The loss registry and the helpers that build losses from config names.

Every loss registers itself with a ``family`` (one of :data:`LOSS_FAMILIES`) when its module is
imported; :func:`register_all` imports the built-in ones (importing :mod:`mmdistill.distill.losses`
does the same). Plugins register with the same decorator::

    from mmdistill.distill.registries import LOSSES

    @LOSSES.register("my_kd", family="logits")
    class MyKD(torch.nn.Module): ...

Constructor conventions, which :func:`build_loss` relies on:

- ``logits`` losses: ``cls(**own_kwargs)``; ``forward(student_logits, teacher_logits, labels=None)``.
- ``feature``, ``relation`` and ``contrastive`` losses: ``cls(student_dim, teacher_dim, **own_kwargs)``;
  ``forward(student_feat, teacher_feat)``.

Entries may carry ``needs_labels=True`` (the loss raises without labels).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any

from torch import nn

from mmdistill.errors import ConfigError
from mmdistill.registry import Registry

LOSSES: Registry = Registry("loss")
"""Loss classes; each entry's ``meta["family"]`` is one of :data:`LOSS_FAMILIES`."""

LOSS_FAMILIES: tuple[str, ...] = ("logits", "feature", "relation", "contrastive")
"""The loss families, in the order the docs list them."""

_DIM_KWARGS: tuple[str, ...] = ("student_dim", "teacher_dim")

_BUILTIN_MODULES: tuple[str, ...] = (
    "mmdistill.distill.losses.logits",
    "mmdistill.distill.losses.features",
    "mmdistill.distill.losses.relations",
    "mmdistill.distill.losses.crossmodal",
)


def register_all() -> None:
    """Import every built-in loss module so its losses are registered (idempotent)."""
    for name in _BUILTIN_MODULES:
        importlib.import_module(name)


def loss_family(name: str, *, key: str | None = None) -> str:
    """The family (``"logits"``, ``"feature"``, ``"relation"`` or ``"contrastive"``) of loss ``name``.

    Raises:
        ConfigError: ``name`` is not a registered loss (with a did-you-mean).
    """
    register_all()
    return str(LOSSES.entry(name, key=key).meta["family"])


def loss_kwargs(name: str) -> list[str]:
    """The keyword arguments loss ``name`` accepts from a config (its dims excluded), in order."""
    register_all()
    params, _ = _signature(LOSSES.get(name))
    return [p for p in params if p not in _DIM_KWARGS]


def build_loss(
    name: str,
    *,
    student_dim: int | None = None,
    teacher_dim: int | None = None,
    key: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build the loss registered as ``name`` from plain keyword arguments.

    The dims are passed only to losses whose constructor takes them (feature, relation and
    contrastive losses); logits losses ignore them, so a caller may always pass both.

    Args:
        name: registry name, e.g. ``"kd"``.
        student_dim: width of the student tensor the loss compares (feature-like families).
        teacher_dim: width of the teacher tensor the loss compares (feature-like families).
        key: config key path the loss came from (``"distill.losses[0]"``), used in error messages.
        **kwargs: the loss's own keyword arguments (``temperature=4.0``).

    Raises:
        ConfigError: unknown name (did-you-mean), unknown kwarg (lists the accepted ones), missing
            dims for a loss that needs them, or an invalid value (as reported by the loss).
    """
    register_all()
    cls = LOSSES.get(name, key=key)
    where = f"{key}: " if key else ""
    params, has_var_kw = _signature(cls)
    own = [p for p in params if p not in _DIM_KWARGS]

    problems = []
    unknown = [k for k in kwargs if k in _DIM_KWARGS or (k not in own and not has_var_kw)]
    for k in unknown:
        close = difflib.get_close_matches(k, own, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        problems.append(
            f"{where}loss '{name}' got unknown kwarg '{k}'{hint} accepted: {', '.join(own) or '(none)'}"
        )
    call: dict[str, Any] = dict(kwargs)
    dims = {"student_dim": student_dim, "teacher_dim": teacher_dim}
    for dim_name, value in dims.items():
        if dim_name not in params:
            continue  # a logits loss: the widths mean nothing to it
        if value is None:
            if params[dim_name].default is inspect.Parameter.empty:
                problems.append(
                    f"{where}loss '{name}' ({loss_family(name)}) needs {dim_name}: the width of the "
                    f"{dim_name.split('_')[0]} tensor it compares"
                )
            continue
        call[dim_name] = value
    if problems:
        raise ConfigError(problems)
    try:
        return cls(**call)
    except ConfigError as exc:
        if not key:
            raise
        # Re-raise with the config key in front of each problem so the user finds the line.
        raise ConfigError([f"{key}.kwargs: {p}" for p in exc.problems]) from exc


def _signature(cls: Any) -> tuple[dict[str, inspect.Parameter], bool]:
    """Named constructor parameters of ``cls`` (without ``self``) and whether it takes ``**kwargs``."""
    params: dict[str, inspect.Parameter] = {}
    var_kw = False
    if isinstance(cls, type) and cls.__init__ is nn.Module.__init__:
        return params, var_kw  # no own constructor: nn.Module's (*args, **kwargs) would accept anything
    for p in inspect.signature(cls).parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            params[p.name] = p
    return params, var_kw
