"""The Typer application every command registers on, and what the commands share: one-line errors with exit code 2, the
progress display, and the parsing of comma-separated numbers."""

from __future__ import annotations

import contextlib
import traceback
import warnings
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from robustbench_cli.core.errors import ExitCode, Notice, UserError
from robustbench_cli.core.version import __version__

app = typer.Typer(
    name="robust",
    help="An honest robustness report for image classifiers: ONNX black boxes and PyTorch/timm white boxes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)


@contextlib.contextmanager
def user_errors(debug: bool):
    """Map failures to one line on stderr and exit code 2; --debug shows the traceback.

    A :class:`Notice` (an opt-out of a safety check, a model on random weights) prints as one ``warning:`` line,
    every time."""
    try:
        with warnings.catch_warnings():
            if not debug:  # libraries' warnings (torch, onnxruntime, matplotlib) stay off the one-line contract
                warnings.simplefilter("ignore")
            warnings.simplefilter("always", Notice)
            shown = warnings.showwarning

            def show(message, category, filename, lineno, file=None, line=None):
                if issubclass(category, Notice):
                    err.print(f"[yellow]warning:[/yellow] {escape(str(message))}", highlight=False, soft_wrap=True)
                else:
                    shown(message, category, filename, lineno, file, line)

            warnings.showwarning = show
            yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        err.print("[red]error:[/red] interrupted")
        raise typer.Exit(ExitCode.ERROR) from None
    except SystemExit as e:  # the model's code (or a library) called sys.exit: robust decides the exit code
        if debug:
            traceback.print_exc()
        err.print(f"[red]error:[/red] code run by the model called sys.exit({escape(repr(e.code))}) before robust "
                  "finished; no report was written", highlight=False, soft_wrap=True)
        raise typer.Exit(ExitCode.ERROR) from None
    except UserError as e:
        if debug:
            traceback.print_exc()
        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)  # "[tool.x]" is text
        raise typer.Exit(ExitCode.ERROR) from None
    except Exception as e:  # anything else is our fault or the model's: still one line and exit 2
        if debug:
            traceback.print_exc()
        err.print(f"[red]internal error:[/red] {e.__class__.__name__}: {escape(str(e))} (run with --debug for the traceback)",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(ExitCode.ERROR) from None


def _version(value: bool):
    if value:
        typer.echo(f"robust {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False):
    pass


def floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise UserError(f"{what} must be comma-separated numbers, e.g. 0.485,0.456,0.406; got {text!r}") from None
    if not values:
        raise UserError(f"{what} needs at least one number, e.g. 0.485,0.456,0.406; got {text!r}")
    return values


def make_progress(console: Console):
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, transient=False)
    tasks: dict[str, TaskID] = {}

    def update(desc: str, done: int, total: int):
        if desc not in tasks:
            tasks[desc] = progress.add_task(desc, total=max(total, 1))
        progress.update(tasks[desc], completed=done if total else 1, total=max(total, 1))

    return progress, update
