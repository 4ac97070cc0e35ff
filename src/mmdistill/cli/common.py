"""Helpers shared by the subcommands: splitting CONFIG from KEY=VALUE arguments, console output."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console


def split_config_arg(config: str | None, overrides: list[str] | None) -> tuple[str | None, list[str]]:
    """Let the config path be left out: ``mmdistill run teacher.train.epochs=3`` means the demo.

    A first positional argument holding ``=`` that is not an existing file is an override.
    """
    rest = list(overrides or [])
    if config is not None and "=" in config and not Path(config).exists():
        return None, [config, *rest]
    return config, rest


def console(*, stderr: bool = False) -> Console:
    """A console that never wraps lines (messages are copied into bug reports and grepped)."""
    return Console(stderr=stderr, highlight=False, soft_wrap=True)
