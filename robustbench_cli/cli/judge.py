"""The commands that judge reports without a model: ``compare`` (side by side), ``gate`` (rules, exit codes) and
``merge`` (a sharded scan's reports into the report of the whole scan).

Both are pure functions of report files: no model, no data, no GPU. The gate options and CI outputs they share
with ``scan`` are in :mod:`robustbench_cli.cli.ci`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from robustbench_cli.cli import ci
from robustbench_cli.cli.app import app, user_errors
from robustbench_cli.cli.ci import Alpha, Annotate, Config, FailUnder, Junit, MaxDrop, Paired, Sarif, Summary, err, out
from robustbench_cli.core.errors import UserError

COMPARE_SUFFIXES = (".md", ".json", ".html")


@app.command()
def compare(
    reports: Annotated[list[Path], typer.Argument(help="Report JSON files (the first is the reference column); one "
                                                       "report with several targets compares its targets.",
                                                  show_default=False)],
    output: Annotated[list[Path] | None, typer.Option("-o", "--output", help="Write the comparison: .md, .json or "
                                                                                ".html (the full HTML report of every column).")] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
):
    """Set checkpoints side by side: accuracies, every attack, queries and time, and the per-sample flips."""
    from robustbench_cli.core.io import atomic_write
    from robustbench_cli.gate.plan import writable
    from robustbench_cli.reports import compare as C
    from robustbench_cli.reports.html import to_html
    from robustbench_cli.reports.model import load_report

    with user_errors(debug):
        outputs = []
        for p in output or []:
            if p.suffix.lower() not in COMPARE_SUFFIXES:
                raise UserError(f"cannot write {p}: unknown comparison format {p.suffix or '(none)'} "
                                f"(known: {', '.join(COMPARE_SUFFIXES)})")
            outputs.append(writable(p, "comparison"))
        sources = [(str(p), load_report(p)) for p in reports]
        merged, warnings = C.merge_reports(sources)
        for w in warnings:
            err.print(f"[yellow]warning:[/yellow] {w}", highlight=False, soft_wrap=True)
        cmp = C.compare(merged, warnings)
        render = {".md": lambda: C.to_markdown(cmp), ".json": cmp.to_json, ".html": lambda: to_html(merged)}
        texts = [render[p.suffix.lower()]() for p in outputs]
        C.render_console(C.Comparison(**{**vars(cmp), "warnings": []}), out)
        for p, text in zip(outputs, texts):
            atomic_write(p, text)
        if outputs:
            out.print("comparison: " + ", ".join(str(p) for p in outputs), highlight=False)


@app.command()
def gate(
    report: Annotated[Path, typer.Argument(help="The report JSON to judge.", show_default=False)],
    baseline: Annotated[Path | None, typer.Option(help="Baseline report JSON for --max-drop. Without it, a report "
                                                          "of several targets uses its first target.")] = None,
    fail_under: FailUnder = None,
    max_drop: MaxDrop = None,
    paired: Paired = None,
    alpha: Alpha = None,
    config: Config = None,
    junit: Junit = None,
    sarif: Sarif = None,
    summary: Summary = None,
    github_annotations: Annotate = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
):
    """Judge a report against rules. Exit 0: every check passed; 1: a check failed; 2: could not judge."""
    from robustbench_cli.gate.plan import GatePlan
    from robustbench_cli.reports.model import load_report

    with user_errors(debug):
        plan = GatePlan(ci.gate_spec(fail_under, max_drop, baseline, paired, alpha, config, junit, summary,
                                     github_annotations, sarif=sarif))
        rep = load_report(report)
        verdict = plan.judge(rep, str(report))
        ci.emit(plan, verdict, rep)
        ci.show(verdict)
    raise typer.Exit(verdict.exit_code)


@app.command()
def merge(
    reports: Annotated[list[Path], typer.Argument(help="The shard reports (JSON) of one scan, every shard once, "
                                                       "from robust scan --shard I/N.", show_default=False)],
    output: Annotated[list[Path], typer.Option("-o", "--output", help="The merged report(s); format from the suffix "
                                                                        "(.json, .csv, .md, .html, .sarif, .xml).")],
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
):
    """Join the shard reports of one scan into its report: the per-sample columns in the order of the whole set, and
    every aggregate, curve, interval and finding computed again from them. Refuses shards of different scans, a
    missing, duplicated or unfinished shard."""
    from robustbench_cli.reports import writers
    from robustbench_cli.reports.model import load_report
    from robustbench_cli.reports.shards import merge as merge_shards

    with user_errors(debug):
        outputs = writers.check_outputs([str(p) for p in output])
        merged = merge_shards([(str(p), load_report(p)) for p in reports])
        written = writers.write_reports(merged, outputs)
        out.print(f"merged {merged.provenance['merged']['shards']} shards: " + ", ".join(str(p) for p in written),
                  highlight=False)
