"""What `gate` and `scan` share: the gate options, and how the verdict's CI outputs are shown."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:  # the command line imports the heavy floors only when a command runs (a fast --help)
    from robustbench_cli.gate.plan import GatePlan, GateSpec
    from robustbench_cli.reports.model import Report, Verdict

out = Console(width=None if sys.stdout.isatty() else 150)
err = Console(stderr=True)

# Options shared by `gate` and `scan` --------------------------------------------------------------------------------
FailUnder = Annotated[list[str] | None, typer.Option(
    "--fail-under", rich_help_panel="Gate", help="Gate rule [METRIC]\\[@THREAT]=LEVEL, e.g. robust_accuracy@linf:8/255=0.40 or a bare 0.40 "
                         "(robust accuracy at every threat). Repeatable.")]
MaxDrop = Annotated[list[str] | None, typer.Option(
    "--max-drop", rich_help_panel="Gate", help="Gate rule [METRIC]\\[@THREAT]=AMOUNT against the baseline, with a unit: 2pp or 5% (of the "
                       "baseline). Repeatable.")]
Paired = Annotated[bool | None, typer.Option(
    "--paired/--no-paired", rich_help_panel="Gate", help="--max-drop fails only when the exact McNemar test on the per-sample flips says the "
                                 "drop is significant (default: off, or `paired` in \\[tool.robust.gate]).")]
Alpha = Annotated[float | None, typer.Option("--alpha", rich_help_panel="Gate", help="Significance level of --paired (default 0.05).")]
Config = Annotated[Path | None, typer.Option("--config", rich_help_panel="Gate", help="pyproject.toml with \\[tool.robust.gate] rules (and, for scan, \\[tool.robust.scan] defaults); default: ./pyproject.toml when present.")]
Junit = Annotated[Path | None, typer.Option("--junit", rich_help_panel="Gate", help="Write the gate as JUnit XML (one test case per check).")]
Sarif = Annotated[Path | None, typer.Option("--sarif", rich_help_panel="Gate", help="Write the judged report as SARIF 2.1.0 "
                                                               "for code scanning (failed gate and sanity checks).")]
Summary = Annotated[Path | None, typer.Option("--summary", rich_help_panel="Gate", help="Write the gate as a Markdown summary (under GitHub "
                                                                   "Actions it is also appended to $GITHUB_STEP_SUMMARY).")]
Annotate = Annotated[bool | None, typer.Option(
    "--github-annotations/--no-github-annotations", rich_help_panel="Gate",
    help="Print ::error workflow commands for failed checks (default: on when GITHUB_ACTIONS=true).")]


def gate_spec(fail_under, max_drop, baseline, paired, alpha, config, junit, summary, annotate,
              sarif=None) -> GateSpec:
    """The gate options of `scan` and `gate` as a spec (checked when made)."""
    from robustbench_cli.gate.plan import GateSpec

    return GateSpec(fail_under=tuple(fail_under or ()), max_drop=tuple(max_drop or ()),
                    baseline=None if baseline is None else str(baseline), paired=paired, alpha=alpha,
                    config=None if config is None else str(config), junit=None if junit is None else str(junit),
                    summary=None if summary is None else str(summary), annotations=annotate,
                    sarif=None if sarif is None else str(sarif))


def emit(plan: GatePlan, verdict: Verdict, report: Report | None = None) -> None:
    """The gate's files and CI outputs; the console table and the verdict line come last (see :func:`show`)."""
    from robustbench_cli.reports import verdict as V

    written, warnings = plan.write(verdict, report)
    for w in warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(w)}")
    if plan.annotate:
        for line in V.annotations(verdict):
            typer.echo(line)
    if written:
        out.print("gate files: " + ", ".join(str(p) for p in written), highlight=False)


def show(verdict: Verdict) -> None:
    from robustbench_cli.reports import verdict as V

    V.render_console(verdict, out)
