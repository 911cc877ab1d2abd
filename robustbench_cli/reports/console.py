"""The terminal view: a rich table per report, with a legend under it."""

from __future__ import annotations

from typing import cast

from rich.console import Console, JustifyMethod
from rich.table import Table

from robustbench_cli.core.naming import short_name
from robustbench_cli.reports.compare import display_names
from robustbench_cli.reports.frames import NOT_FINISHED, summary_frame, transfer_frame
from robustbench_cli.reports.model import Report
from robustbench_cli.reports.safe import terminal as t


def _namer(report: Report):
    """Target name -> its label in the terminal: the short name, or the full one where short names would collide (the
    same architecture with two checkpoints, a white box and its ONNX export), escaped for the terminal."""
    labels = display_names(report)
    return lambda name: t(labels.get(str(name), short_name(str(name))))


def _pct(v) -> str:
    if isinstance(v, str):  # NOT_FINISHED: a stopped scan's partial number is never shown
        return v
    return "–" if v is None or v != v else f"{100 * v:.1f}%"


def render_summary(report: Report, console: Console) -> None:
    """The summary table (one row per target and threat; fits 100 columns), then the cascade table (robust accuracy
    after each attack that ran; an attack skipped everywhere has no column, its reason is a line below), the legend
    and the notes."""
    _name = _namer(report)
    df = summary_frame(report)
    table = Table(title=f"robust · battery {t(report.battery_id)} · data {t(report.data['name'])} "
                        f"(n={t(report.data['n'])}) · seed {t(report.seed)}")
    certified = "certified_accuracy" in df.columns
    for col, just in [("target", "left"), ("threat", "left"), ("n", "right"), ("clean", "right"), ("robust", "right"),
                      *([("certified", "right")] if certified else []), ("queries per sample", "right"),
                      ("median q to break", "right"), ("time", "right")]:
        table.add_column(col, justify=cast(JustifyMethod, just), style="bold" if col == "robust" else None,
                         overflow="fold" if col in ("target", "threat") else "ellipsis")  # names wrap, never cut
    for row in df.to_dict("records"):
        cells = [_name(row["target"]), t(row["threat"]), str(row["n"]), _pct(row["clean_accuracy"]),
                 _pct(row["robust_accuracy"])]
        cells += [_pct(row["certified_accuracy"])] if certified else []
        q, qb = row["queries_mean"], row["queries_median_success"]
        cells += ["–" if q is None or q != q else f"{q:,.0f}", "–" if qb is None or qb != qb else f"{qb:,.0f}",
                  f"{row['seconds']:.1f}s"]
        table.add_row(*cells)
    console.print(table)
    console.print("[dim]clean: accuracy on unperturbed inputs · robust: accuracy under the whole battery (an upper "
                  "bound) · queries: model calls per sample, verification included · median q to break: queries "
                  "spent on a broken sample up to its first verified break[/dim]")
    if certified:
        console.print("[dim]certified: samples proven robust by sound bounds (IBP/CROWN), a lower bound; the true robust "
                      "accuracy lies between certified and robust[/dim]")
    render_cascade(report, console, df)
    if report.incomplete:
        console.print(f"[yellow]not finished:[/yellow] the scan stopped ({t(report.incomplete.get('reason'))}) before "
                      "the battery finished there; a robust accuracy so far would overstate robustness, so none is "
                      "shown (--resume finishes it)", highlight=False)
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


def _header(label: str, width: int = 8) -> str:
    """An attack's label as a column header: a long one breaks after a hyphen (``apgd-ce-`` / ``closest``), at the
    hyphen that leaves the shortest lines, so that a column stays narrow without cutting a word."""
    cuts = [i + 1 for i, ch in enumerate(label) if ch == "-" and 0 < i < len(label) - 1]
    if len(label) <= width or not cuts:
        return label
    best = min(cuts, key=lambda i: max(i, len(label) - i))
    return label[:best] + "\n" + label[best:]


def render_cascade(report: Report, console: Console, df=None) -> None:
    """Robust accuracy after each attack of the cascade, one column per attack that ran (or was left unfinished) on
    some target and threat: ``–`` where it was skipped on that row, ``not finished`` where a stopped scan left it."""
    df = summary_frame(report) if df is None else df
    cols = [c for c in df.columns if c.startswith("after:") and df[c].notna().any()]
    if not cols:
        return
    _name = _namer(report)
    table = Table(title="robust accuracy after each attack, in cascade order")
    table.add_column("target", overflow="fold")
    table.add_column("threat", overflow="fold")
    for c in cols:  # a long label wraps in its header rather than lose its end
        table.add_column(_header(t(c.removeprefix("after:"))), justify="right", overflow="fold",
                         min_width=len(NOT_FINISHED) if (df[c] == NOT_FINISHED).any() else None)
    for row in df.to_dict("records"):
        table.add_row(_name(row["target"]), t(row["threat"]), *[_pct(row[c]) for c in cols])
    console.print(table)
    console.print("[dim]attack columns: robust accuracy after that attack in the cascade · –: skipped on that row "
                  "(why: below)[/dim]")


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
