"""Report writers, chosen by the output file's suffix. Every file is written atomically (temp file + rename)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

from robustbench_cli.core.errors import UserError
from robustbench_cli.reports.frames import attacks_frame, summary_frame, transfer_frame


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        # mkstemp makes the file private (0600); give it the mode a plain open() would (or the file's old mode)
        try:
            mode = path.stat().st_mode & 0o777
        except OSError:
            mask = os.umask(0)
            os.umask(mask)
            mode = 0o666 & ~mask
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_json(report: dict) -> str:
    return json.dumps(report, indent=1, allow_nan=False) + "\n"


def to_csv(report: dict) -> str:
    return summary_frame(report).to_csv(index=False, float_format="%.6g")


def _md_table(df) -> str:
    cols = list(df.columns)
    def fmt(v):
        if v is None or (isinstance(v, float) and v != v):
            return "–"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v).replace("|", "\\|")
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def to_markdown(report: dict) -> str:
    data = report["data"]
    parts = [
        "# robust report",
        "",
        f"Data `{data['name']}` (n={data['n']}, sha256 `{data['sha256'][:12]}`), battery `{report['battery']['name']}@{report['battery']['version']}`, seed {report['seed']}, robust {report['tool']['version']}.",
        "",
        "Robust accuracy is the worst case over the battery: every success was re-checked on the target (inside epsilon, inside [0,1], goal reached).",
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
    if len(report["targets"]) > 1:
        from robustbench_cli.reports.compare import compare, to_markdown as comparison_markdown

        parts += ["## Comparison", "", comparison_markdown(compare(report), level=3)]
    if report.get("gate"):
        from robustbench_cli.gate.rules import to_markdown as gate_markdown

        parts += [gate_markdown(report["gate"])]
    return "\n".join(parts)


def to_html(report: dict, examples=None) -> str:
    from robustbench_cli.reports.html import to_html as render

    return render(report, examples)


def to_junit(report: dict) -> str:
    """JUnit XML of the report's gate: one test case per check (an empty suite when the scan had no gate)."""
    from robustbench_cli.reports.junit import to_junit as render

    return render(report.get("gate"), timestamp=report.get("created"))


WRITERS: dict[str, Callable[[dict], str]] = {
    ".json": to_json, ".csv": to_csv, ".md": to_markdown, ".html": to_html, ".xml": to_junit,
}
TAKES_EXAMPLES = {".html"}  # writers that also draw the adversarial examples kept in memory by the scan


def writable_parent(path: Path, label: str) -> Path:
    """Create the folder that will hold ``path`` if needed and check it is writable; errors start with ``label``."""
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        # a regular file on the way makes mkdir say "File exists"/"Not a directory": name that file instead
        blocker = next((a for a in (parent, *parent.parents) if a.exists() and not a.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker is not None else e.strerror
        raise UserError(f"{label}: cannot create folder {parent} ({why})") from None
    if not os.access(parent, os.W_OK):
        raise UserError(f"{label}: folder {parent} is not writable")
    return parent


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


def render_reports(report: dict, paths: list[Path], *, examples=None) -> list[str]:
    """The text of every report file, in memory: nothing is written until all of them rendered."""
    texts = []
    for path in paths:
        suffix = path.suffix.lower()
        texts.append(WRITERS[suffix](report, examples) if suffix in TAKES_EXAMPLES else WRITERS[suffix](report))
    return texts


def write_reports(report: dict, paths: list[Path], *, examples=None, texts: list[str] | None = None) -> list[Path]:
    """Render every file first, then write them: a writer that fails leaves every existing file as it was."""
    texts = texts if texts is not None else render_reports(report, paths, examples=examples)
    for path, text in zip(paths, texts):
        atomic_write(path, text)
    return paths
