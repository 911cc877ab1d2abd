"""What `gate` and `scan` share: the gate options, the plan built from them, and the CI outputs."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from robustbench_cli.core.errors import UserError
from robustbench_cli.reports.writers import writable_parent

out = Console(width=None if sys.stdout.isatty() else 150)
err = Console(stderr=True)

# Options shared by `gate` and `scan` --------------------------------------------------------------------------------
FailUnder = Annotated[Optional[list[str]], typer.Option(
    "--fail-under", help="Gate rule [METRIC][@THREAT]=LEVEL, e.g. robust_accuracy@linf:8/255=0.40 or a bare 0.40 "
                         "(robust accuracy at every threat). Repeatable.")]
MaxDrop = Annotated[Optional[list[str]], typer.Option(
    "--max-drop", help="Gate rule [METRIC][@THREAT]=AMOUNT against the baseline, with a unit: 2pp or 5% (of the "
                       "baseline). Repeatable.")]
Paired = Annotated[Optional[bool], typer.Option(
    "--paired/--no-paired", help="--max-drop fails only when the exact McNemar test on the per-sample flips says the "
                                 "drop is significant (default: off, or `paired` in [tool.robust.gate]).")]
Alpha = Annotated[Optional[float], typer.Option("--alpha", help="Significance level of --paired (default 0.05).")]
Config = Annotated[Optional[Path], typer.Option("--config", help="pyproject.toml with a [tool.robust.gate] table "
                                                                 "(default: ./pyproject.toml when present).")]
Junit = Annotated[Optional[Path], typer.Option("--junit", help="Write the gate as JUnit XML (one test case per check).")]
Summary = Annotated[Optional[Path], typer.Option("--summary", help="Write the gate as a Markdown summary (under GitHub "
                                                                   "Actions it is also appended to $GITHUB_STEP_SUMMARY).")]
Annotate = Annotated[Optional[bool], typer.Option(
    "--github-annotations/--no-github-annotations",
    help="Print ::error workflow commands for failed checks (default: on when GITHUB_ACTIONS=true).")]


def under_github() -> bool:
    return os.environ.get("GITHUB_ACTIONS", "").lower() == "true"


def writable(path: Path | str, what: str) -> Path:
    """A file path whose folder exists (created if needed) and is writable; checked before any work."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise UserError(f"cannot write {what} {path}: it is a folder")
    writable_parent(p, f"cannot write {what} {path}")
    return p


class GatePlan:
    """Gate settings from the command line and [tool.robust.gate], parsed and checked before any work."""

    def __init__(self, fail_under, max_drop, baseline, paired, alpha, config, junit, summary, annotate, *,
                 use_config: bool = True):
        from robustbench_cli.gate.rules import collect_rules, load_config
        from robustbench_cli.reports.model import load_report

        cfg = load_config(config) if use_config else None
        self.rules = collect_rules(fail_under, max_drop, cfg)
        self.paired = paired if paired is not None else bool(cfg is not None and cfg.paired)
        self.alpha = alpha if alpha is not None else (cfg.alpha if cfg is not None and cfg.alpha is not None else 0.05)
        if not 0 < self.alpha < 1:
            raise UserError(f"--alpha must be between 0 and 1, got {self.alpha}")
        self.baseline_path = baseline
        self.baseline = load_report(baseline) if baseline is not None else None
        self.junit = writable(junit, "JUnit XML") if junit is not None else None
        self.summary = writable(summary, "summary") if summary is not None else None
        self.annotate = under_github() if annotate is None else annotate

    def judge(self, report: dict, report_name: str) -> dict:
        from robustbench_cli.gate.rules import judge

        return judge(report, self.rules, baseline=self.baseline,
                     baseline_name=None if self.baseline_path is None else str(self.baseline_path),
                     report_name=report_name, paired=self.paired, alpha=self.alpha)

    def emit(self, verdict: dict, report: dict | None = None) -> None:
        """Files and CI outputs; the console table and the verdict line come last (see :func:`show`)."""
        from robustbench_cli.gate import rules as gate
        from robustbench_cli.reports import junit
        from robustbench_cli.reports.writers import atomic_write

        if self.junit is not None:
            atomic_write(self.junit, junit.to_junit(verdict, timestamp=(report or {}).get("created")))
        md = gate.to_markdown(verdict)
        if self.summary is not None:
            atomic_write(self.summary, md)
        step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if under_github() and step_summary:
            try:
                with open(step_summary, "a", encoding="utf-8") as f:  # GitHub's own convention: append
                    f.write(md + "\n")
            except OSError as e:
                err.print(f"[yellow]warning:[/yellow] cannot append to $GITHUB_STEP_SUMMARY ({e.strerror})")
        if self.annotate:
            for line in gate.annotations(verdict):
                typer.echo(line)
        written = [str(p) for p in (self.junit, self.summary) if p is not None]
        if written:
            out.print("gate files: " + ", ".join(written), highlight=False)

    @staticmethod
    def show(verdict: dict) -> None:
        from robustbench_cli.gate.rules import render_console

        render_console(verdict, out)
