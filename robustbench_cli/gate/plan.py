"""A gate as a scan or ``robust gate`` runs it: rules from the command line and ``[tool.robust.gate]``, a baseline,
and the CI outputs of the verdict (JUnit XML, SARIF, a Markdown summary, $GITHUB_STEP_SUMMARY, GitHub annotations)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from robustbench_cli.core.errors import UserError
from robustbench_cli.core.io import atomic_write, writable_parent
from robustbench_cli.gate.config import load_config
from robustbench_cli.gate.judge import judge
from robustbench_cli.gate.rules import collect_rules
from robustbench_cli.reports import junit, sarif
from robustbench_cli.reports import verdict as V
from robustbench_cli.reports.model import Report, Verdict, load_report


def under_github() -> bool:
    return os.environ.get("GITHUB_ACTIONS", "").lower() == "true"


def writable(path: Path | str, what: str) -> Path:
    """A file path whose folder exists (created if needed) and is writable; checked before any work."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise UserError(f"cannot write {what} {path}: it is a folder")
    writable_parent(p, f"cannot write {what} {path}")
    return p


@dataclass(frozen=True)
class GateSpec:
    """The gate's settings: rules (``[METRIC][@THREAT]=VALUE``), a baseline, the test and where its outputs go."""

    fail_under: tuple[str, ...] = ()
    max_drop: tuple[str, ...] = ()
    baseline: str | None = None  # baseline report JSON for max-drop
    paired: bool | None = None  # None: [tool.robust.gate]'s, else off
    alpha: float | None = None  # None: [tool.robust.gate]'s, else 0.05
    config: str | None = None  # pyproject.toml with [tool.robust.gate]; None: ./pyproject.toml when present
    junit: str | None = None
    summary: str | None = None
    annotations: bool | None = None  # GitHub workflow commands; None: on under GitHub Actions
    sarif: str | None = None  # SARIF 2.1.0 of the judged report: its failed gate checks and failed sanity checks

    def __post_init__(self) -> None:
        if self.alpha is not None and not 0 < self.alpha < 1:
            raise UserError(f"--alpha must be between 0 and 1, got {self.alpha}")


class GatePlan:
    """A gate's settings parsed and checked before any work: rules, baseline, test, output files."""

    def __init__(self, spec: GateSpec, *, use_config: bool = True):
        cfg = load_config(spec.config) if use_config else None
        self.spec = spec
        self.rules = collect_rules(list(spec.fail_under), list(spec.max_drop), cfg)
        self.paired = spec.paired if spec.paired is not None else bool(cfg is not None and cfg.paired)
        self.alpha = spec.alpha if spec.alpha is not None else (cfg.alpha if cfg is not None and cfg.alpha is not None
                                                                else 0.05)
        if not 0 < self.alpha < 1:
            raise UserError(f"--alpha must be between 0 and 1, got {self.alpha}")
        self.baseline = load_report(spec.baseline) if spec.baseline is not None else None
        self.junit = writable(spec.junit, "JUnit XML") if spec.junit is not None else None
        self.summary = writable(spec.summary, "summary") if spec.summary is not None else None
        self.sarif = writable(spec.sarif, "SARIF") if spec.sarif is not None else None
        self.annotate = under_github() if spec.annotations is None else spec.annotations

    def judge(self, report: Report, report_name: str) -> Verdict:
        return judge(report, self.rules, baseline=self.baseline, baseline_name=self.spec.baseline,
                     report_name=report_name, paired=self.paired, alpha=self.alpha)

    def write(self, verdict: Verdict, report: Report | None = None) -> tuple[list[Path], list[str]]:
        """Write the gate's files (JUnit, summary; appended to $GITHUB_STEP_SUMMARY under GitHub Actions). Returns
        the files written and warnings for the caller to show (a step summary that could not be appended)."""
        if self.junit is not None:
            atomic_write(self.junit, junit.to_junit(verdict, timestamp=report.created if report else None))
        if self.sarif is not None and report is not None:  # the report's own checks with the verdict's
            atomic_write(self.sarif, sarif.to_sarif(replace(report, gate=verdict)))
        md = V.to_markdown(verdict)
        if self.summary is not None:
            atomic_write(self.summary, md)
        warnings = []
        step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if under_github() and step_summary:
            try:
                with open(step_summary, "a", encoding="utf-8") as f:  # GitHub's own convention: append
                    f.write(md + "\n")
            except OSError as e:
                warnings.append(f"cannot append to $GITHUB_STEP_SUMMARY ({e.strerror})")
        written = [self.junit, self.sarif if report is not None else None, self.summary]
        return [p for p in written if p is not None], warnings
