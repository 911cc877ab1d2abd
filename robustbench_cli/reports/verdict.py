"""Views of a gate verdict (``robustbench_cli.gate`` decides it): the table every view shows, the terminal, a
Markdown summary for $GITHUB_STEP_SUMMARY, GitHub Actions annotations and JUnit XML (``reports/junit.py``)."""

# no `from __future__ import annotations`: this module defines a function of that name (its annotations are all
# valid at run time on Python 3.10+)
from robustbench_cli.reports import safe
from robustbench_cli.reports.model import Check, Verdict

LEGEND = (
    "pass/FAIL: the displayed value against the rule (accuracies rounded to 0.1pp, or finer when the rule is) · "
    "n/a: could not judge · n: samples the threat applies to · 95% CI: Wilson interval for n samples · "
    "change: current minus baseline, in pp (or % of the baseline for relative rules) · "
    "paired: robust→broken/broken→robust samples and the exact McNemar p (--paired) · "
    "within noise: the difference is inside what n samples can resolve"
)
STATUS_TEXT = {"pass": "pass", "fail": "FAIL", "n/a": "n/a"}
HEADER = ["status", "rule", "target", "threat", "value", "n", "95% CI", "baseline", "change", "paired", "note"]


def _paired_text(c: Check) -> str:
    p = c.paired_test
    if not p:
        return "–"
    return f"{p['robust_to_broken']}↓ {p['broken_to_robust']}↑ p={p['p_value']:.3g}"


def _from(c: Check) -> str:
    return "" if c.source == "command line" else f" (from {c.source})"


def short_rule(c: Check) -> str:
    """A check's rule in a few characters (its threat has a column of its own): ``robust ≥ 40%``, ``robust drop ≤ 2pp``."""
    metric = c.metric.removesuffix("_accuracy")
    return f"{metric} ≥ {c.threshold}" if c.kind == "fail-under" else f"{metric} drop ≤ {c.threshold}"


def rows(verdict: Verdict) -> list[list[str]]:
    """The table every view shows: one row per check."""
    return [[STATUS_TEXT[c.status], short_rule(c), c.target, c.threat, c.shown, str(c.n), c.ci_shown,
             c.baseline_shown or "–", c.change or "–", _paired_text(c), c.note or ""] for c in verdict.checks]


def notable(verdict: Verdict) -> list[Check]:
    """The checks a reader must see spelled out: failed, unjudged, or passed within the noise."""
    return [c for c in verdict.checks if c.status != "pass" or c.within_noise]


def render_console(verdict: Verdict, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="robust gate" + (f" · baseline {escape(verdict.baseline)}" if verdict.baseline else ""))
    for h in HEADER:
        table.add_column(h, justify="right" if h in ("value", "n", "baseline", "change") else "left")
    colour = {"pass": "green", "FAIL": "bold red", "n/a": "yellow"}
    for row in rows(verdict):
        cells = [escape(x) for x in row]
        cells[0] = f"[{colour[row[0]]}]{cells[0]}[/]"
        table.add_row(*cells)
    console.print(table)
    console.print(f"[dim]{escape(LEGEND)}[/dim]")
    for c in notable(verdict):
        tag = {"fail": "red", "n/a": "yellow", "pass": "green"}[c.status]
        console.print(f"[{tag}]{STATUS_TEXT[c.status]}[/] {escape(c.rule)}{escape(_from(c))}: "
                      f"{escape(c.message)}", highlight=False, soft_wrap=True)
    mark = {"passed": "[bold green]", "failed": "[bold red]", "could not judge": "[bold yellow]"}[verdict.status]
    console.print(f"{mark}{escape(verdict.line)}[/]", highlight=False, soft_wrap=True)


def to_markdown(verdict: Verdict) -> str:
    """A summary for people reading CI: suitable for $GITHUB_STEP_SUMMARY."""
    icon = {"passed": "✅", "failed": "❌", "could not judge": "⚠️"}[verdict.status]
    esc = safe.markdown
    lines = [f"## {icon} robust gate: {verdict.status}", ""]
    if verdict.baseline:
        lines += [f"Baseline: {esc(verdict.baseline)}"
                  + (f"; paired test at alpha {verdict.alpha}" if verdict.paired else ""), ""]
    lines += ["| " + " | ".join(HEADER) + " |",
              "|" + "|".join("---:" if h in ("value", "n", "baseline", "change") else "---" for h in HEADER) + "|"]
    for row in rows(verdict):
        cells = [esc(x) if x else " " for x in row]
        cells[0] = {"pass": "✅ pass", "FAIL": "❌ **FAIL**", "n/a": "⚠️ n/a"}[row[0]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""]
    for c in notable(verdict):
        lines.append(f"- **{STATUS_TEXT[c.status]}** `{c.rule}`{esc(_from(c))}: {esc(c.message)}")
    if notable(verdict):
        lines.append("")
    lines += [f"<sub>{LEGEND}</sub>", "", f"**{esc(verdict.line)}**", ""]
    return "\n".join(lines)


def _gh_escape(s: str, prop: bool = False) -> str:
    s = s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        s = s.replace(":", "%3A").replace(",", "%2C")
    return s


def annotations(verdict: Verdict) -> list[str]:
    """GitHub Actions workflow commands: an error per failed or unjudged check, a notice for the verdict."""
    out = []
    for c in verdict.checks:
        if c.status == "pass":
            continue
        title = f"robust gate {STATUS_TEXT[c.status]}: {c.rule} on {c.target} at {c.threat}"
        out.append(f"::error title={_gh_escape(title, True)}::{_gh_escape(c.message)}")
    level = "notice" if verdict.status == "passed" else "error"
    out.append(f"::{level} title={_gh_escape('robust gate', True)}::{_gh_escape(verdict.line)}")
    return out
