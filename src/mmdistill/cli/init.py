"""``mmdistill init``: write a starter config (and an example manifest) into a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmdistill.cli.common import console


def init_command(
    template: Annotated[
        str | None,
        typer.Argument(help="Template name (see --list): manifest or builtin.", show_default=False),
    ] = None,
    directory: Annotated[
        str | None, typer.Argument(help="Folder to write into (created if needed).", show_default=False)
    ] = None,
    list_templates: Annotated[bool, typer.Option("--list", help="List the templates and exit.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite files that already exist.")] = False,
) -> None:
    """Write a starter config for your own data (or the demo's) into DIR.

    Examples: `mmdistill init manifest my-data`, then `mmdistill validate my-data/config.yaml`
    and `mmdistill run my-data/config.yaml`.
    """
    from mmdistill.templates import TEMPLATES, TemplateError, write_template

    out = console()
    if list_templates:
        for t in TEMPLATES.values():
            out.print(f"{t.name:<10} {t.description}")
        return
    if template is None or directory is None:
        raise TemplateError("init: give a TEMPLATE and a DIR, e.g. `mmdistill init manifest my-data` "
                            f"(templates: {', '.join(TEMPLATES)}; see `mmdistill init --list`)")
    dest = Path(directory)
    written = write_template(template, dest, force=force)
    media = sum(1 for p in written if p.parent.name == "media")
    for path in written:
        if path.parent.name != "media":
            out.print(f"wrote {path}")
    if media:
        out.print(f"wrote {media} example media files under {dest / 'media'}")
    cfg = dest / "config.yaml"
    out.print(f"next: mmdistill validate {cfg}   then: mmdistill run {cfg}", style="green")
