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
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column

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


class ScanProgress:
    """A scan's progress on the terminal: one overall row, and the step running now.

    The scan reports ``progress(desc, done, total)`` per attack (or certificate) of each target and threat as it
    runs; a sharded run (``--workers``) reports one desc, every shard summed. The overall row adds them up: its
    total is one setup step (data, models, the clean pass and the probes) plus every attack's planned
    attack x sample count, known only when that attack starts, so the total grows as attacks start and the time
    left is the time left for the work planned so far. It is on screen from the start, before any data or model
    loads."""

    OVERALL = "overall (total grows as attacks start)"  # counts attack x sample, as the steps do
    SETUP = "setup: data, models, clean pass, probes"
    SHARDS = "all shards (attack x sample)"  # distributed.run_workers' one desc: already a sum over the shards
    WIDTH = 40  # a step's label longer than this keeps its end (target, threat, attack) after an ellipsis

    def __init__(self, console: Console):
        self.progress = Progress(TextColumn("{task.description}", table_column=Column(no_wrap=True)),
                                 BarColumn(bar_width=20), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("eta"), TimeRemainingColumn(), console=console, transient=False)
        self.overall = self.progress.add_task(self.OVERALL, total=1)
        self.setup: TaskID | None = self.progress.add_task(self.SETUP, total=1)
        self.seen: dict[str, tuple[int, int]] = {}  # desc -> (done, planned)
        self.rows: dict[str, TaskID] = {}
        self.current: str | None = None

    def __enter__(self) -> ScanProgress:  # entered again while on screen: stays as it is
        self.progress.start()
        return self

    def __exit__(self, kind, value, tb) -> None:
        if not self.progress.live.is_started:  # stopped already (the scan's own `with`): the table comes next
            return
        if kind is not None:  # the scan failed: the error's one line is all that is left on stderr
            for task in self.progress.tasks:
                self.progress.update(task.id, visible=False)
        self.progress.stop()

    def _setup_done(self) -> None:
        if self.setup is not None:
            self.progress.update(self.setup, completed=1, visible=False)
            self.setup = None

    def update(self, desc: str, done: int, total: int) -> None:
        """The scan's progress callback: ``done`` of ``total`` samples of the step ``desc``."""
        self.seen[desc] = (done, total)
        if desc != self.SHARDS or total:  # a shard's first attack has started: the setup is over
            self._setup_done()
        if desc != self.SHARDS:  # the shards' desc is the overall row itself
            if desc not in self.rows:
                label = desc if len(desc) <= self.WIDTH else "…" + desc[-(self.WIDTH - 1):]
                self.rows[desc] = self.progress.add_task(label, total=max(total, 1))
            if self.current is not None and self.current != desc:  # the step before is over: off the screen
                self.progress.update(self.rows[self.current], visible=False)
            self.current = desc
            self.progress.update(self.rows[desc], completed=done if total else 1, total=max(total, 1), visible=True)
        self._overall()

    def _overall(self) -> None:
        setup = 1 if self.setup is None else 0
        self.progress.update(self.overall, completed=setup + sum(d for d, _ in self.seen.values()),
                             total=1 + sum(t for _, t in self.seen.values()))

    def finish(self, stopped: str | None) -> None:
        """The scan ended. Finished, the overall row ends full (work an attack planned but did not need, such as
        certificates stopped where they do not pay, drops out) and the last step leaves the screen; stopped early,
        both stay as they were, to show where."""
        if stopped is not None:
            return
        self._setup_done()
        if self.current is not None:
            self.progress.update(self.rows[self.current], visible=False)
        done = 1 + sum(d for d, _ in self.seen.values())
        self.progress.update(self.overall, completed=done, total=done)


def make_progress(console: Console) -> ScanProgress:
    """The progress display of a scan; use it as a context manager and pass its ``update`` to the scan."""
    return ScanProgress(console)
