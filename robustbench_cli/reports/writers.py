"""Report writers, chosen by the output file's suffix. Every file is written atomically (temp file + rename)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from robustbench_cli.core.errors import UserError
from robustbench_cli.core.io import atomic_write_all, writable_parent
from robustbench_cli.reports import compare, junit, safe, sarif, verdict
from robustbench_cli.reports.frames import attacks_frame, summary_frame, transfer_frame
from robustbench_cli.reports.html import to_html as render
from robustbench_cli.reports.model import Report


def to_json(report: Report) -> str:
    return report.to_json()


def to_csv(report: Report) -> str:
    frame = summary_frame(report).map(safe.csv_cell)  # text cells: never a formula in a spreadsheet
    frame.columns = [safe.csv_cell(str(c)) for c in frame.columns]
    return frame.to_csv(index=False, float_format="%.6g")


def _md_table(df) -> str:
    cols = [str(c) for c in df.columns]  # robust's own column names

    def fmt(v):
        if v is None or (isinstance(v, float) and v != v):
            return "–"
        if isinstance(v, float):
            return f"{v:.4g}"
        return safe.markdown(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def to_markdown(report: Report) -> str:
    data = report.data
    parts = [
        "# robust report",
        "",
        f"Data {safe.code(data['name'])} (n={safe.markdown(data['n'])}, sha256 {safe.code(str(data['sha256'])[:12])}), "
        f"battery {safe.code(report.battery_id)}, seed {safe.markdown(report.seed)}, robust "
        f"{safe.markdown(report.tool['version'])}.",
        "",
        "Robust accuracy is the worst case over the battery: every success was re-checked on the target (inside "
        "epsilon, inside [0,1], goal reached).",
        "",
        "## Summary",
        "",
        _md_table(summary_frame(report)),
        "",
        "## Attacks",
        "",
        _md_table(attacks_frame(report)),
        "",
    ]
    transfer = transfer_frame(report)
    if not transfer.empty:  # rows: surrogate (and attack), columns: target; cells verified on the target
        parts += ["## Transfer matrix", "", "Success rate of the examples crafted on each surrogate, verified on each "
                  "target (share of its clean-correct samples).", "", _md_table(transfer), ""]
    if len(report.targets) > 1:
        parts += ["## Comparison", "", compare.to_markdown(compare.compare(report), level=3)]
    if report.gate is not None:
        parts += [verdict.to_markdown(report.gate)]
    return "\n".join(parts)


def to_html(report: Report, examples=None) -> str:

    return render(report, examples)


def to_sarif(report: Report) -> str:
    """SARIF 2.1.0 for code scanning: one result per failed gate check and per failed sanity check, located at the
    model file (relative to the working folder when it lies under it)."""
    return sarif.to_sarif(report)


def to_junit(report: Report) -> str:
    """JUnit XML of the report's gate: one test case per check (an empty suite when the scan had no gate)."""
    return junit.to_junit(report.gate, timestamp=report.created)


WRITERS: dict[str, Callable[..., str]] = {
    ".json": to_json, ".csv": to_csv, ".md": to_markdown, ".html": to_html, ".xml": to_junit, ".sarif": to_sarif,
}
TAKES_EXAMPLES = {".html"}  # writers that also draw the adversarial examples kept in memory by the scan



DEFAULT_REPORT = "robust-report/report.json"


@dataclass(frozen=True)
class OutputSpec:
    """Where a scan's reports go (the format from each file's suffix) and which adversarial examples are kept."""

    reports: tuple[str, ...] = (DEFAULT_REPORT,)
    save_examples: str | None = None  # a new folder: every adversarial example as PNG, with index.csv
    html_examples: int = 6  # examples per target and threat in an .html report

    def __post_init__(self) -> None:
        if not self.reports:
            raise UserError("give at least one report file (-o report.json)")
        for p in self.reports:
            suffix = Path(p).suffix.lower()
            if suffix not in WRITERS:
                raise UserError(f"cannot write {p}: unknown report format {suffix or '(none)'} "
                                f"(known: {', '.join(WRITERS)})")
        if self.html_examples < 0:
            raise UserError(f"--html-examples must be >= 0, got {self.html_examples}")

    def paths(self) -> list[Path]:
        """The report files, their folders created and checked writable: before any work starts."""
        return check_outputs(list(self.reports))

    @property
    def wants_html(self) -> bool:
        return any(Path(p).suffix.lower() == ".html" for p in self.reports)


def check_outputs(paths: list[str]) -> list[Path]:
    """Validate output paths before any work starts: known suffix, existing writable folder."""
    out = []
    for p in paths:
        path = Path(p).expanduser()
        if path.suffix.lower() not in WRITERS:
            raise UserError(f"cannot write {p}: unknown report format {path.suffix or '(none)'} (known: {', '.join(WRITERS)})")
        if path.is_dir():
            raise UserError(f"cannot write {p}: it is a folder")
        writable_parent(path, f"cannot write {p}")
        out.append(path)
    return out


def render_reports(report: Report, paths: list[Path], *, examples=None) -> list[str]:
    """The text of every report file, in memory: nothing is written until all of them rendered."""
    texts = []
    for path in paths:
        suffix = path.suffix.lower()
        texts.append(WRITERS[suffix](report, examples) if suffix in TAKES_EXAMPLES else WRITERS[suffix](report))
    return texts


def write_reports(report: Report, paths: list[Path], *, examples=None, texts: list[str] | None = None) -> list[Path]:
    """Render every file first, then write them: a writer that fails leaves every existing file as it was."""
    texts = texts if texts is not None else render_reports(report, paths, examples=examples)
    atomic_write_all(list(zip(paths, texts)))  # all or none: a failure on one leaves every existing file as it was
    return paths
