"""``mmdistill data``: build or describe the built-in image+text+audio dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from mmdistill.cli.common import console

app = typer.Typer(help="Build or describe the built-in dataset.", no_args_is_help=True)


def default_asset_dir() -> Path:
    """Where the package looks for the built-in dataset files (``mmdistill/assets``)."""
    import importlib.resources

    import mmdistill

    return Path(str(importlib.resources.files(mmdistill).joinpath("assets")))


@app.command("build")
def build_command(
    out: Annotated[
        Path | None, typer.Option("--out", help="Destination folder (default: the package's assets folder).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of every random choice (splits, voices, phrases).")] = 0,
) -> None:
    """Rebuild the built-in dataset from its offline sources (needs espeak-ng, flite and extras)."""
    from mmdistill.data.datasets.builtin_build import build_builtin

    target = out if out is not None else default_asset_dir()
    summary = build_builtin(target, seed=seed)
    console().print_json(json.dumps(_jsonable(summary)))
    console().print(f"built-in dataset written to {target.resolve()}", style="green", markup=False)


@app.command("info")
def info_command() -> None:
    """Describe the built-in dataset: version, classes, split sizes, modalities."""
    from mmdistill.data.datasets import builtin

    console().print_json(json.dumps(_jsonable(builtin.builtin_info())))


def _jsonable(value: Any) -> Any:
    # Summaries may hold Paths or numpy scalars; print them as plain strings/numbers.
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))
