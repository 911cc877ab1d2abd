"""The terminal view: a rich table per report, with a legend under it."""

from __future__ import annotations

from typing import cast

from rich.console import Console, JustifyMethod
from rich.table import Table

from robustbench_cli.core.naming import short_name
from robustbench_cli.reports.compare import display_names
from robustbench_cli.reports.frames import summary_frame, transfer_frame
from robustbench_cli.reports.model import Report
from robustbench_cli.reports.safe import terminal as t


def _namer(report: Report):
    """Target name -> its label in the terminal: the short name, or the full one where short names would collide (the
    same architecture with two checkpoints, a white box and its ONNX export), escaped for the terminal."""
    labels = display_names(report)
    return lambda name: t(labels.get(str(name), short_name(str(name))))


def _pct(v) -> str:
    return "–" if v is None or v != v else f"{100 * v:.1f}%"


def render_summary(report: Report, console: Console) -> None:
    _name = _namer(report)
    df = summary_frame(report)
    attack_cols = [c for c in df.columns if c.startswith("after:")]
    table = Table(title=f"robust · battery {t(report.battery_id)} · data {t(report.data['name'])} "
                        f"(n={t(report.data['n'])}) · seed {t(report.seed)}")
    certified = "certified_accuracy" in df.columns
    for col, just in [("target", "left"), ("threat", "left"), ("n", "right"), ("clean", "right"), ("robust", "right"),
                      *([("certified", "right")] if certified else [])]:
        table.add_column(col, justify=cast(JustifyMethod, just), style="bold" if col == "robust" else None,
                         overflow="fold" if col in ("target", "threat") else "ellipsis")  # names wrap, never cut
    for c in attack_cols:
        table.add_column(t(c.removeprefix("after:")), justify="right", style="dim")
    table.add_column("queries/sample", justify="right")
    table.add_column("median q to break", justify="right")
    table.add_column("time", justify="right")
    for row in df.to_dict("records"):
        cells = [_name(row["target"]), t(row["threat"]), str(row["n"]), _pct(row["clean_accuracy"]), _pct(row["robust_accuracy"])]
        cells += [_pct(row["certified_accuracy"])] if certified else []
        cells += ["skipped" if row[c] is None or row[c] != row[c] else _pct(row[c]) for c in attack_cols]
        q, qb = row["queries_mean"], row["queries_median_success"]
        cells += ["–" if q is None or q != q else f"{q:,.0f}", "–" if qb is None or qb != qb else f"{qb:,.0f}",
                  f"{row['seconds']:.1f}s"]
        table.add_row(*cells)
    console.print(table)
    console.print("[dim]clean: accuracy on unperturbed inputs · robust: accuracy under the whole battery (an upper bound) · "
                  "attack columns: robust accuracy after that attack in the cascade · queries: model calls per sample, "
                  "verification included · median q to break: queries spent on a broken sample up to its first verified break[/dim]")
    if certified:
        console.print("[dim]certified: samples proven robust by sound bounds (IBP/CROWN), a lower bound; the true robust "
                      "accuracy lies between certified and robust[/dim]")
    asked = report.option("certify")  # --certify: say why a certificate did not run
    for r in report.results:
        c = r.certificate or {}
        if c.get("stopped") or (asked and c.get("skipped")):
            why = c.get("stopped") or c.get("skipped")
            console.print(f"[dim]certificate on {_name(r.target)} {t(r.threat)}: {t(why)}[/dim]", highlight=False)
    render_transfer(report, console)
    skipped: dict[tuple[str, str], list[str]] = {}  # (target, reason) -> attack labels, one line each
    for r in report.results:
        for a in r.attacks:
            if a.skipped:
                labels = skipped.setdefault((r.target, a.skipped), [])
                if a.label not in labels:
                    labels.append(a.label)
    for (target, reason), labels in skipped.items():
        console.print(f"[yellow]skipped {t(', '.join(labels))}[/yellow] on {_name(target)}: {t(reason)}",
                      highlight=False)
    for r in report.results:  # classifiers guarded by a detector (robust scan --detector)
        d = r.detector
        if d:
            console.print(f"detector {_name(d['detector'])} on {_name(r.target)} {t(r.threat)}: rejects "
                          f"{_pct(d['clean_rejection_rate'])} of clean inputs; flagged {d['detected']} of the "
                          f"{d['fooled_classifier']} candidates that fooled the classifier ({_pct(d['detection_rate'])}); "
                          f"robust accuracy {_pct(r.robust_accuracy)}", highlight=False)
    for r in report.results:
        for f in r.failed_checks():
            console.print(f"[bold red]check failed[/bold red] {_name(r.target)} {t(r.threat)}: {t(f.message)}",
                          highlight=False)


def render_transfer(report: Report, console: Console) -> None:
    """The transfer matrix (surrogate x target), when the battery had transfer or generator entries."""
    df = transfer_frame(report)
    if df.empty:
        return
    _name = _namer(report)
    targets = list(df.columns[3:])
    table = Table(title="transfer: success rate of examples crafted on each surrogate, verified on each target")
    for col in ("threat", "attack", "surrogate"):
        table.add_column(col)
    for target in targets:
        table.add_column(_name(target), justify="right")
    for row in df.to_dict("records"):
        table.add_row(t(row["threat"]), t(row["attack"]), t(row["surrogate"]),
                      *["skipped" if row[c] is None or row[c] != row[c] else _pct(row[c]) for c in targets])
    console.print(table)
    console.print("[dim]transfer: share of each target's clean-correct samples fooled; each row attacked every one of "
                  "them (one query a sample), before the cascade[/dim]")
