"""``mmdistill list``: the registered components a config can name, with one line each."""

from __future__ import annotations

import importlib
from enum import StrEnum
from typing import Annotated, Any

import typer

from mmdistill.cli.common import console


class Kind(StrEnum):
    """Component families ``mmdistill list`` can show."""

    encoders = "encoders"
    fusions = "fusions"
    heads = "heads"
    presets = "presets"
    losses = "losses"
    strategies = "strategies"
    pretrained_encoders = "pretrained-encoders"
    teacher_modules = "teacher-modules"


# (module, attribute) of each family; imported only when listed, since they import torch.
SOURCES: dict[str, tuple[str, str]] = {
    "encoders": ("mmdistill.models.registries", "ENCODERS"),
    "fusions": ("mmdistill.models.registries", "FUSIONS"),
    "heads": ("mmdistill.models.registries", "HEADS"),
    "presets": ("mmdistill.models.builders", "PRESETS"),
    "losses": ("mmdistill.distill.registries", "LOSSES"),
    "strategies": ("mmdistill.distill.strategies", "STRATEGIES"),
    # Bring-your-own teachers (docs/teachers.md): frozen per-modality encoders, and the nn.Module
    # classes of the user's code that plugins register (empty without plugins).
    "pretrained-encoders": ("mmdistill.teachers.registry", "PRETRAINED_ENCODERS"),
    "teacher-modules": ("mmdistill.teachers.registry", "TORCH_MODULES"),
}
# Families with a second column: its header.
SECOND_COLUMN = {"encoders": "modality", "losses": "family", "pretrained-encoders": "modality"}


def _load(kind: str) -> Any:
    """The registry (or preset mapping) of ``kind``, with every built-in component registered."""
    module_name, attr = SOURCES[kind]
    module = importlib.import_module(module_name)
    if hasattr(module, "register_all"):
        module.register_all()
    return getattr(module, attr)


def rows(kind: str) -> list[tuple[str, str, str]]:
    """``(name, modality or family, description)`` for each component of ``kind``, sorted by name."""
    container = _load(kind)
    if kind == "pretrained-encoders":
        from mmdistill.teachers.deps import EXTRAS

        out = []
        for e in container.entries():
            needs = e.meta.get("needs")
            extra = f" (needs mmdistill[{EXTRAS[needs][1]}])" if needs in EXTRAS else ""
            out.append((e.name, str(e.meta.get("modality") or "any"), e.description + extra))
        return out
    if hasattr(container, "entries"):
        return [
            (e.name, str(e.meta.get("modality", e.meta.get("family", ""))), e.description)
            for e in container.entries()
        ]
    out = []
    for name in sorted(container):
        value = container[name]
        if isinstance(value, dict):
            desc = str(value.get("description", "")) or _describe_preset(value)
        else:
            desc = str(getattr(value, "description", "") or (getattr(value, "__doc__", None) or ""))
        out.append((name, "", desc.strip().split("\n")[0]))
    return out


def _describe_preset(preset: dict[str, Any]) -> str:
    """``image=cnn, text=lstm, audio=crnn; fusion attention; head mlp`` from a preset mapping."""
    parts = []
    encoders = preset.get("encoders")
    if isinstance(encoders, dict):
        parts.append(", ".join(f"{m}={n}" for m, n in encoders.items()))
    parts += [f"{k} {preset[k]}" for k in ("fusion", "head") if isinstance(preset.get(k), str)]
    return "; ".join(parts)


def list_command(
    kind: Annotated[Kind | None, typer.Argument(help="Only this family.", show_default=False)] = None,
    plugin: Annotated[
        list[str] | None,
        typer.Option("--plugin", "-p", help="Import this module first (its components register themselves)."),
    ] = None,
) -> None:
    """List the encoders, fusions, heads, presets, losses, strategies and teacher encoders a config can name.

    Example: `mmdistill list encoders -p my_pkg.my_encoders`
    """
    from rich.table import Table
    from rich.text import Text

    from mmdistill.errors import ConfigError

    for module in plugin or []:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"--plugin {module}: cannot import it ({exc}); check the module name") from None
    out = console()
    for k in [kind.value] if kind is not None else [k.value for k in Kind]:
        try:
            found = rows(k)
        except ModuleNotFoundError as exc:
            # Only reachable in a partial checkout: every family ships with mmdistill.
            out.print(f"{k}: not available ({exc})", style="yellow", markup=False)
            continue
        table = Table(title=k, title_justify="left", show_header=True, header_style="bold")
        table.add_column("name", style="cyan", no_wrap=True)
        if k in SECOND_COLUMN:
            table.add_column(SECOND_COLUMN[k])
        table.add_column("description")
        for name, modality, desc in found:
            # Text(...) so docstrings holding "[mean, last]" are not read as rich markup.
            cells = (name, modality, desc) if k in SECOND_COLUMN else (name, desc)
            table.add_row(*(Text(c) for c in cells))
        if not found:
            table.add_row(*(Text(c) for c in ("(none)", *([""] if k in SECOND_COLUMN else []),
                                               "register one from a module listed in plugins")))
        out.print(table)
