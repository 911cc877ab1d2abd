"""The report as typed objects: the one place that knows the keys of ``robust-report/1``.

A :class:`Report` is what a scan returns (to the CLI, to the Python API) and what every view reads: the terminal
table, the CSV/Markdown/HTML/JUnit files, comparisons and the gate. It reads and writes the versioned JSON format
(``format``; accuracies are fractions in [0,1]; per-sample results are kept, columnar, one list per field, because
comparisons, gates and resumption need them, not only the means). Reading checks every value's type and that each
result's summary agrees with its own per-sample columns, so no view (and no gate) judges a report that contradicts
itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustbench_cli.core.errors import UserError
from robustbench_cli.core.records import from_data, to_data

FORMAT = "robust-report/1"
SCHEMA = "schema/robust-report-1.json"  # JSON Schema of FORMAT, shipped in the package
OPT = {"omit_none": True}  # a key written only when it has a value
EXTRA = {"extra": True}  # keys this version does not know, kept as they were
WITH_CURVE = {"omit_with": "success_curve"}


@dataclass(kw_only=True)
class Samples:
    """Per-sample columns of one target under one threat (one list per field, in sample order)."""

    id: list[int]
    label: list[int]
    clean_pred: list[int]
    goal: list[int]
    eligible: list[bool]
    robust: list[bool]
    adv_pred: list[int]
    distance: list[float | None]
    min_distance: list[float | None] | None = field(default=None, metadata=OPT)
    queries: list[int]
    queries_at_break: list[int]
    broken_by: list[str | None]
    certified: list[bool] | None = field(default=None, metadata=OPT)
    extra: dict = field(default_factory=dict, metadata=EXTRA)

    def __len__(self) -> int:
        return len(self.id)

    def robust_count(self) -> int:
        """Eligible samples never verified broken."""
        return sum(1 for r, e in zip(self.robust, self.eligible) if r and e)

    def clean_correct(self) -> list[bool]:
        return [p == y and e for p, y, e in zip(self.clean_pred, self.label, self.eligible)]


@dataclass(kw_only=True)
class AttackRow:
    """What one attack of the battery did on one target under one threat."""

    label: str
    attack: str
    family: str
    skipped: str | None
    independent: bool
    attempted: int
    broken: int
    success_rate: float | None
    robust_accuracy_after: float | None
    seconds: float
    config: dict
    completed: int | None = None
    detected: int | None = field(default=None, metadata=OPT)
    surrogates: list[str] | None = field(default=None, metadata=OPT)
    # per-sample query statistics: present for every attack that ran (with its success curve), absent when skipped
    queries_mean: float | None = field(default=None, metadata=WITH_CURVE)
    queries_mean_success: float | None = field(default=None, metadata=WITH_CURVE)
    queries_median_success: float | None = field(default=None, metadata=WITH_CURVE)
    success_curve: list[float | None] | None = field(default=None, metadata=OPT)
    extra: dict = field(default_factory=dict, metadata=EXTRA)

    @property
    def ran(self) -> bool:
        return not self.skipped


@dataclass(kw_only=True)
class Finding:
    """A diagnostic check: its id, whether it passed, and a sentence a person can act on."""

    check: str
    attack: str | None = field(default=None, metadata=OPT)
    baseline: str | None = field(default=None, metadata=OPT)
    passed: bool
    message: str
    extra: dict = field(default_factory=dict, metadata=EXTRA)


@dataclass(kw_only=True)
class Result:
    """One target under one threat model."""

    target: str
    threat: str
    norm: str
    epsilon: float
    targeted: bool
    n: int
    clean_accuracy: float
    robust_accuracy: float
    broken: int
    seconds: float
    queries_mean: float | None
    queries_mean_success: float | None
    queries_median_success: float | None
    query_grid: list[int]
    success_curve: list[float | None]
    robust_accuracy_curve: list[float | None]
    robust_accuracy_by_epsilon: dict | None = field(default=None, metadata=OPT)
    certified_accuracy: float | None = None
    nonfinite_candidates: int | None = field(default=None, metadata=OPT)  # candidates answered with NaN/inf scores
    # --precision bf16/fp16: {"mode", "low_precision_only": candidates that broke in reduced precision, not in fp32}
    precision: dict | None = field(default=None, metadata=OPT)
    certificate: dict | None = None
    diagnostics: list[Finding]
    attacks: list[AttackRow]
    detector: dict | None = field(default=None, metadata=OPT)
    samples: Samples
    examples_check: dict | None = field(default=None, metadata=OPT)
    extra: dict = field(default_factory=dict, metadata=EXTRA)

    @property
    def key(self) -> tuple[str, float, bool]:
        """The threat as a value: ``linf:8/255`` and ``linf:0.0313...`` are the same threat."""
        return self.norm, float(self.epsilon), self.threat.endswith(":targeted")

    def attack(self, label: str) -> AttackRow | None:
        return next((a for a in self.attacks if a.label == label), None)

    def failed_checks(self) -> list[Finding]:
        return [d for d in self.diagnostics if not d.passed]


@dataclass(kw_only=True)
class TargetInfo:
    """What was scanned: the model's identity, kind and what it exposes (``details``: what its loader recorded)."""

    name: str
    kind: str = ""
    capabilities: list[str] = field(default_factory=list)
    input_shape: list[int] | None = None
    flat_dim: int | None = None
    num_classes: int | None = None
    output_kind: str = "unknown"
    sha256: str = ""
    device: str | None = None
    details: dict = field(default_factory=dict, metadata=EXTRA)
    probes: dict | None = field(default=None, metadata=OPT)
    oom_retries: int | None = field(default=None, metadata=OPT)


@dataclass(kw_only=True)
class Check:
    """One gate rule applied to one target under one threat: the value judged (as displayed), and the decision."""

    kind: str  # fail-under | max-drop
    rule: str  # canonical: robust_accuracy@linf:8/255=40%
    written: str = ""  # as the user wrote it
    source: str = "command line"
    metric: str  # robust_accuracy | clean_accuracy
    threat: str
    target: str
    threshold: str = ""
    status: str = "n/a"  # pass | fail | n/a
    value: float | None = None
    shown: str = "–"
    n: int | None = None
    ci: list[float] | None = None
    ci_shown: str = "–"
    baseline_target: str | None = None
    baseline_value: float | None = None
    baseline_shown: str | None = None
    change: str | None = None
    paired_test: dict | None = None
    within_noise: bool = False
    message: str = ""
    note: str | None = None
    extra: dict = field(default_factory=dict, metadata=EXTRA)


@dataclass(kw_only=True)
class Verdict:
    """The gate's decision on a report: every check, the status and the exit code CI acts on."""

    status: str  # passed | failed | could not judge
    exit_code: int
    line: str
    report: str = "report"
    baseline: str | None = None
    paired: bool = False
    alpha: float = 0.05
    rules: list[dict] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    extra: dict = field(default_factory=dict, metadata=EXTRA)

    def to_dict(self) -> dict:
        return to_data(self)


@dataclass(kw_only=True)
class Report:
    """A scan's record: provenance, the data, the battery, every target and every (target, threat) result."""

    format: str
    tool: dict
    created: str
    provenance: dict
    seed: int
    data: dict
    battery: dict
    options: dict
    targets: list[TargetInfo]
    results: list[Result]
    complete: bool | None = field(default=None, metadata=OPT)
    incomplete: dict | None = field(default=None, metadata=OPT)
    gate: Verdict | None = field(default=None, metadata=OPT)
    sources: list[dict] | None = field(default=None, metadata=OPT)  # a merged report: where each target came from
    shard: dict | None = field(default=None, metadata=OPT)  # a shard's report (--shard I/N): see reports/shards.py
    extra: dict = field(default_factory=dict, metadata=EXTRA)

    # --- reading and writing --------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict, where: str = "report") -> Report:
        if not isinstance(data, dict) or not str(data.get("format", "")).startswith("robust-report/"):
            raise UserError(f"{where}: not a robust report (no 'format': robust-report/N)")
        if data["format"] != FORMAT:
            raise UserError(f"{where}: report format {data['format']} is not supported by this version ({FORMAT})")
        missing = [k for k in ("data", "battery", "targets", "results") if not isinstance(data.get(k), (dict, list))]
        if missing:
            raise UserError(f"{where}: not a complete robust report (missing {', '.join(missing)})")
        try:
            report = from_data(cls, data, where="")
        except UserError as e:
            raise UserError(f"{where}: not a valid robust report ({e})") from None
        report.check(where)
        return report

    def to_dict(self) -> dict:
        return to_data(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n"

    def check(self, where: str = "report") -> None:
        """Refuse a report whose numbers contradict its own per-sample columns (an edited or truncated file)."""
        names = {t.name for t in self.targets}
        for r in self.results:
            at = f"{where}: {r.target} at {r.threat}"
            s = r.samples
            columns = {k: v for k, v in vars(s).items() if isinstance(v, list)}
            if len({len(v) for v in columns.values()}) > 1:
                raise UserError(f"{at}: the per-sample columns have different lengths")
            if names and r.target not in names:
                raise UserError(f"{at}: the result names a target the report does not list")
            eligible = sum(s.eligible)
            if r.n != eligible:
                raise UserError(f"{at}: n is {r.n} but {eligible} samples are eligible")
            for what, value, count in (("robust_accuracy", r.robust_accuracy, s.robust_count()),
                                       ("clean_accuracy", r.clean_accuracy, sum(s.clean_correct()))):
                if not 0.0 <= value <= 1.0 or abs(value - count / max(r.n, 1)) > 1e-9:
                    raise UserError(f"{at}: {what} {value!r} does not match its per-sample columns "
                                    f"({count} of {r.n})")

    # --- questions people ask ----------------------------------------------------------------------------------------
    def target(self, name: str) -> TargetInfo | None:
        return next((t for t in self.targets if t.name == name), None)

    def results_of(self, target: str) -> list[Result]:
        return [r for r in self.results if r.target == target]

    def by_target(self) -> dict[str, list[Result]]:
        out: dict[str, list[Result]] = {t.name: [] for t in self.targets}
        for r in self.results:
            out.setdefault(r.target, []).append(r)
        return out

    def robust_accuracy(self, target: str | None = None, threat: str | None = None) -> float:
        """The robust accuracy of one (target, threat); either may be left out when the report has only one."""
        rows = [r for r in self.results if (target is None or r.target == target)
                and (threat is None or r.threat == threat)]
        if len(rows) != 1:
            have = ", ".join(f"{r.target} at {r.threat}" for r in self.results)
            raise UserError(f"{len(rows)} results match target={target!r}, threat={threat!r} (the report has: {have})")
        return rows[0].robust_accuracy

    @property
    def battery_id(self) -> str:
        return f"{self.battery.get('name')}@{self.battery.get('version')}"

    def option(self, name: str) -> Any:
        """A scan option that decides whether reports compare (``queries``, ``targeted``, ``certify``), as the scan
        recorded it: under ``run`` in this version's options, at the top in reports of earlier versions."""
        run = self.options.get("run")
        return run.get(name) if isinstance(run, dict) else self.options.get(name)


def timeless(value: Any) -> Any:
    """Report data without what a clock measured (every key naming seconds): what two runs of one scan, in one
    process or in shards, must agree on to the last digit."""
    if isinstance(value, dict):
        return {k: timeless(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [timeless(v) for v in value]
    return value


def report_schema() -> dict:
    """The JSON Schema (draft 2020-12) that documents ``robust-report/1``."""
    from importlib import resources

    return json.loads(resources.files("robustbench_cli.reports").joinpath(SCHEMA).read_text(encoding="utf-8"))


def load_report(path: str | Path) -> Report:
    p = Path(path)
    if p.is_dir():
        raise UserError(f"report {str(p)!r} is a folder, not a report file")
    if not p.is_file():
        raise UserError(f"report {str(p)!r} not found")
    if p.stat().st_size == 0:
        raise UserError(f"{p}: empty file, not a JSON report")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{p}: not a JSON report ({e.__class__.__name__})") from None
    return Report.from_dict(data, str(p))
