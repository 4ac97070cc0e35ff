"""``mmdistill validate``: check a config completely (files, plugins, registry names) without running it."""

from __future__ import annotations

from typing import Annotated

import typer

from mmdistill.cli.common import console, split_config_arg

EXIT_INVALID = 2


def validate_command(
    config: Annotated[str, typer.Argument(help="YAML config file or packaged name (e.g. 'default').")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Overrides as dotted KEY=VALUE.", show_default=False)
    ] = None,
) -> None:
    """Report every problem of a config at once; exit 0 when valid, 2 otherwise.

    Example: `mmdistill validate my.yaml teacher.train.lr=1e-3`
    """
    from mmdistill.config import find_config, load_config
    from mmdistill.errors import ConfigError

    path, extra = split_config_arg(config, overrides)
    try:
        file = find_config(path)
        load_config(file, extra)
    except ConfigError as exc:
        err = console(stderr=True)
        header = f"INVALID: {path or 'default'} ({len(exc.problems)} problem(s))"
        err.print(header, style="bold red", markup=False)
        for problem in exc.problems:
            err.print(f"  - {problem}", style="red", markup=False)
        raise typer.Exit(EXIT_INVALID) from None
    console().print(f"OK: {file}", style="green", markup=False)
