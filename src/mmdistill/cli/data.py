"""``mmdistill data``: build or describe the built-in dataset; pack a manifest into Parquet shards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from mmdistill.cli.common import console

app = typer.Typer(help="Build or describe the built-in dataset; pack a manifest into shards.",
                  no_args_is_help=True)


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


@app.command("pack")
def pack_command(
    manifest: Annotated[Path, typer.Argument(help="The JSONL or CSV manifest to pack.")],
    out: Annotated[Path, typer.Argument(help="The shard folder to write (new or empty).")],
    rows_per_shard: Annotated[int, typer.Option(min=1, help="Rows per shard file.")] = 1000,
    row_group_rows: Annotated[
        int, typer.Option(min=1, help="Rows per Parquet row group (what a streaming reader decodes at once).")
    ] = 64,
    task: Annotated[
        list[str] | None, typer.Option("--task", help="Extra label column to pack (repeat for several).")
    ] = None,
    skip_bad_rows: Annotated[
        bool, typer.Option("--skip-bad-rows", help="Leave bad rows out (listed in index.json), don't fail.")
    ] = False,
    allow_outside_root: Annotated[
        bool, typer.Option("--allow-outside-root", help="Accept paths leading out of the manifest's folder.")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier pack in OUT.")] = False,
) -> None:
    """Pack a manifest into Parquet shards (OUT/<split>-00000.parquet ... + OUT/index.json).

    Point a config at the result with `data.source: shards` and `data.shards: OUT`.
    """
    from mmdistill.data.shards_pack import pack_manifest

    index = pack_manifest(
        manifest, out, rows_per_shard=rows_per_shard, row_group_rows=row_group_rows, tasks=task or (),
        on_error="skip" if skip_bad_rows else "raise", allow_outside_root=allow_outside_root,
        overwrite=overwrite,
    )
    sizes = {s: {"rows": index.rows(s), "shards": len(e)} for s, e in index.splits.items()}
    summary = {"classes": index.classes, "splits": sizes, "skipped": len(index.skipped)}
    console().print_json(json.dumps(summary))
    console().print(f"shards written to {out.resolve()}", style="green", markup=False)


def _jsonable(value: Any) -> Any:
    # Summaries may hold Paths or numpy scalars; print them as plain strings/numbers.
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))
