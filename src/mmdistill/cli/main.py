"""``mmdistill``: the command-line entry point.

Each subcommand lives in its own thin module and imports the library (and torch) inside its handler,
so ``mmdistill --help`` answers without loading torch. :func:`main` turns user errors
(:class:`~mmdistill.errors.MMDistillError`) into a red message and exit code 2, without a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from mmdistill import __version__
from mmdistill.cli import compress, data, distill, export, list_cmd, predict, report, run, validate
from mmdistill.cli import init as init_cli
from mmdistill.errors import MMDistillError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell convention

app = typer.Typer(
    name="mmdistill",
    help="Distill a multimodal (image, text, audio) teacher into a small, fast student.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"mmdistill {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Distill a multimodal (image, text, audio) teacher into a small, fast student.

    Start with `mmdistill run` (the demo on the built-in dataset) or `mmdistill validate my.yaml`.
    """


app.command(
    "run",
    context_settings={"allow_interspersed_args": True},
)(run.run_command)
app.command("distill", context_settings={"allow_interspersed_args": True})(distill.distill_command)
app.command("compress", context_settings={"allow_interspersed_args": True})(compress.compress_command)
app.command("export", context_settings={"allow_interspersed_args": True})(export.export_command)
app.command("validate")(validate.validate_command)
app.command("list")(list_cmd.list_command)
app.command("predict")(predict.predict_command)
app.command("report")(report.report_command)
app.command("compare")(report.compare_command)
app.add_typer(data.app, name="data")

app.command("init")(init_cli.init_command)


def print_error(message: str) -> None:
    """Print ``message`` in red to stderr; no markup parsing (messages contain ``[...]``)."""
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(message, style="red", markup=False)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: run the CLI and exit with its status.

    Exit codes: 0 success, 2 invalid input (config, data, checkpoint, usage), 130 interrupted.
    """
    try:
        # Standalone mode: typer prints usage errors (exit 2), turns Ctrl-C into exit 130 and exits.
        app(args=list(argv) if argv is not None else None, prog_name="mmdistill")
    except MMDistillError as exc:
        print_error(f"error: {exc}")
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print_error("interrupted")
        sys.exit(EXIT_INTERRUPTED)

if __name__ == "__main__":
    main()
