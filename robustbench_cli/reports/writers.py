"""Report writers, chosen by the output file's suffix. Every file is written atomically (temp file + rename)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

from robustbench_cli.errors import UserError
from robustbench_cli.reports.frames import attacks_frame, summary_frame


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
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
    return "\n".join(parts)


WRITERS: dict[str, Callable[[dict], str]] = {".json": to_json, ".csv": to_csv, ".md": to_markdown}


def check_outputs(paths: list[str]) -> list[Path]:
    """Validate output paths before any work starts: known suffix, existing writable folder."""
    out = []
    for p in paths:
        path = Path(p).expanduser()
        if path.suffix.lower() not in WRITERS:
            raise UserError(f"cannot write {p}: unknown report format {path.suffix or '(none)'} (known: {', '.join(WRITERS)})")
        if path.is_dir():
            raise UserError(f"cannot write {p}: it is a folder")
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.exists():
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise UserError(f"cannot write {p}: cannot create folder {parent} ({e.strerror})") from None
        if not os.access(parent, os.W_OK):
            raise UserError(f"cannot write {p}: folder {parent} is not writable")
        out.append(path)
    return out


def write_reports(report: dict, paths: list[Path]) -> list[Path]:
    for path in paths:
        atomic_write(path, WRITERS[path.suffix.lower()](report))
    return paths
