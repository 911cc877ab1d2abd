"""Comparing checkpoints: several reports (or one report with several targets) side by side.

A comparison is a pure function of reports. Reports are comparable when they were run on the same data (sha256),
with the same battery (every attack's settings), the same query budget and goal, the same threat models and the
same samples; anything else is refused (:class:`IncomparableError`, exit 2). A different seed is only a warning:
the attacks draw other random numbers, but they measure the same thing.

Besides the means, the per-sample results give the paired view: how many samples went from robust to broken (and
back) between the first column and each other one, with an exact McNemar test on those discordant pairs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import cast

import numpy as np

from robustbench_cli.core.errors import UserError
from robustbench_cli.core.naming import short_name
from robustbench_cli.core.records import to_data
from robustbench_cli.reports import safe
from robustbench_cli.reports.model import Report, Result, Samples
from robustbench_cli.reports.stats import mcnemar_exact, pct, pct_text, signed

FORMAT = "robust-comparison/1"
_OPT = {"omit_none": True}


class IncomparableError(UserError):
    """Two reports measure different things: their numbers cannot be set side by side."""


# --- threat keys: "linf:8/255" and "linf:0.0313725..." name the same threat ---------------------------------------
def same_threat(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and a[2] == b[2] and math.isclose(a[1], b[1], rel_tol=1e-9, abs_tol=1e-12)


def _find(keys: list[tuple], key: tuple) -> int | None:
    for i, k in enumerate(keys):
        if same_threat(k, key):
            return i
    return None


# --- names ----------------------------------------------------------------------------------------------------------
def display_names(report: Report) -> dict[str, str]:
    """Target name -> the label shown in tables: the short name, or the full name where short names collide."""
    names = [t.name for t in report.targets]
    if report.sources:  # a merged report: names are already labels
        return {n: n for n in names}
    shorts = [short_name(n) for n in names]
    return {n: (s if shorts.count(s) == 1 else n) for n, s in zip(names, shorts)}


def _source_labels(sources: list[tuple[str, Report]]) -> list[str]:
    """A label per (source, target) pair: the target's short name, disambiguated by its report where needed."""
    pairs = [(src, t.name) for src, rep in sources for t in rep.targets]
    shorts = [short_name(n) for _, n in pairs]
    files = [Path(src).name for src, _ in pairs]
    labels = []
    for (src, _name), s, f in zip(pairs, shorts, files):
        if shorts.count(s) == 1:
            labels.append(s)
        elif sum(1 for (x, _), g in zip(pairs, files) if g == f and x != src) == 0:
            labels.append(f"{s} [{f}]")
        else:
            labels.append(f"{s} [{src}]")
    if len(set(labels)) != len(labels):  # the same report given twice, say: number what is left
        seen: dict[str, int] = {}
        for i, lab in enumerate(labels):
            seen[lab] = seen.get(lab, 0) + 1
            if labels.count(lab) > 1:
                labels[i] = f"{lab} #{seen[lab]}"
    return labels


# --- comparability --------------------------------------------------------------------------------------------------
def check_comparable(sources: list[tuple[str, Report]]) -> list[str]:
    """Refuse reports that measure different things; return warnings (a different seed) for the rest."""
    warnings: list[str] = []
    first_src, first = sources[0]
    for src, rep in sources[1:]:
        pair = f"{first_src} and {src}"
        da, db = first.data, rep.data
        if da.get("sha256") != db.get("sha256"):
            raise IncomparableError(
                f"cannot compare {pair}: different data ({da.get('name')}, n={da.get('n')}, sha256 "
                f"{str(da.get('sha256'))[:12]} vs {db.get('name')}, n={db.get('n')}, sha256 {str(db.get('sha256'))[:12]})")
        if json.dumps(first.battery, sort_keys=True) != json.dumps(rep.battery, sort_keys=True):
            what = (f"battery {first.battery_id} vs {rep.battery_id}" if first.battery_id != rep.battery_id
                    else f"battery {first.battery_id} with different attack settings")
            raise IncomparableError(f"cannot compare {pair}: {what}")
        for key, what in (("queries", "query budget"), ("targeted", "targeted goal")):
            if first.option(key) != rep.option(key):
                raise IncomparableError(f"cannot compare {pair}: {what} {first.option(key)} vs {rep.option(key)}")
        if first.seed != rep.seed:
            warnings.append(f"{pair} were run with different seeds ({first.seed} vs {rep.seed}): "
                            "the attacks drew different random numbers")
    per_target = [(src, t.name, rep.results_of(t.name)) for src, rep in sources for t in rep.targets]
    check_targets(per_target, with_source=len(sources) > 1)
    return warnings


def check_targets(per_target: list[tuple[str, str, list[Result]]], *, with_source: bool = True) -> None:
    """Every target must have been attacked under the same threat models, on the same samples."""
    ref_src, ref_name, ref = per_target[0]
    ref_keys = [r.key for r in ref]
    for src, name, results in per_target[1:]:
        who = f"{ref_name} ({ref_src}) and {name} ({src})" if with_source else f"{ref_name} and {name}"
        keys = [r.key for r in results]
        if len(keys) != len(ref_keys) or any(_find(ref_keys, k) is None for k in keys):
            raise IncomparableError(
                f"cannot compare {who}: different threat models ({', '.join(r.threat for r in ref)} vs "
                f"{', '.join(r.threat for r in results) or 'none'})")
        for r in results:
            r0 = ref[_find(ref_keys, r.key)]  # type: ignore[index]
            if r0.n != r.n:
                raise IncomparableError(f"cannot compare {who}: different n at {r0.threat} ({r0.n} vs {r.n})")
            if sorted(r0.samples.id) != sorted(r.samples.id):
                raise IncomparableError(f"cannot compare {who}: different samples at {r0.threat}")


def merge_reports(sources: list[tuple[str, Report]]) -> tuple[Report, list[str]]:
    """One report holding every target of every source under a unique label, after the comparability checks."""
    for src, rep in sources:
        if not rep.targets:
            raise UserError(f"{src}: the report has no targets")
    warnings = check_comparable(sources)
    if len(sources) == 1:
        return sources[0][1], warnings
    labels = iter(_source_labels(sources))
    first = sources[0][1]
    first_results = first.results_of(first.targets[0].name)
    first_keys, first_names = [r.key for r in first_results], [r.threat for r in first_results]
    targets, results, merged_sources = [], [], []
    for src, rep in sources:
        for t in rep.targets:
            label = next(labels)
            targets.append(replace(t, name=label))
            merged_sources.append({"label": label, "report": str(src), "target": t.name, "seed": rep.seed})
            for r in rep.results_of(t.name):  # written threat names of the first report, so rows line up
                name = first_names[_find(first_keys, r.key)]  # type: ignore[index]
                results.append(replace(r, target=label, threat=name))
    return replace(first, targets=targets, results=results, sources=merged_sources, gate=None), warnings


# --- the comparison -------------------------------------------------------------------------------------------------
def paired_counts(a: Result | None, b: Result | None, metric: str = "robust_accuracy") -> dict | None:
    """Per-sample flips between two results of one threat (paired by sample id); None without per-sample data."""
    if a is None or b is None or not len(a.samples) or not len(b.samples):
        return None

    def flags(s: Samples) -> dict:
        eligible = np.asarray(s.eligible, dtype=bool)
        if metric == "clean_accuracy":
            ok = np.asarray(s.clean_pred) == np.asarray(s.label)
        else:
            ok = np.asarray(s.robust, dtype=bool)
        return dict(zip(s.id, zip(eligible.tolist(), (ok & eligible).tolist())))

    fa, fb = flags(a.samples), flags(b.samples)
    if set(fa) != set(fb):
        return None
    ids = [i for i in a.samples.id if fa[i][0] and fb[i][0]]
    ra = np.array([fa[i][1] for i in ids], dtype=bool)
    rb = np.array([fb[i][1] for i in ids], dtype=bool)
    b_ = int((ra & ~rb).sum())  # robust -> broken
    c_ = int((~ra & rb).sum())  # broken -> robust
    return {
        "n": len(ids), "both_robust": int((ra & rb).sum()), "both_broken": int((~ra & ~rb).sum()),
        "robust_to_broken": b_, "broken_to_robust": c_, "p_value": mcnemar_exact(b_, c_),
    }


@dataclass(kw_only=True)
class Row:
    """One metric across the columns: the values, as displayed, and each column's difference to the first."""

    metric: str
    key: str
    unit: str  # pct | queries | seconds | skipped
    values: list
    display: list[str]
    diff: list[str | None]

    def cell(self, j: int) -> str:
        d = self.display[j]
        if j and self.diff[j] is not None:
            d += f" ({self.diff[j]})"
        return d


@dataclass(kw_only=True)
class Paired:
    """The per-sample flips between the reference column (``a``) and another (``b``); ``n`` None: no samples."""

    a: str
    b: str
    n: int | None = None
    both_robust: int | None = field(default=None, metadata=_OPT)
    both_broken: int | None = field(default=None, metadata=_OPT)
    robust_to_broken: int | None = field(default=None, metadata=_OPT)
    broken_to_robust: int | None = field(default=None, metadata=_OPT)
    p_value: float | None = field(default=None, metadata=_OPT)


@dataclass(kw_only=True)
class ThreatComparison:
    threat: str
    n: int
    rows: list[Row]
    paired: list[Paired]


@dataclass(kw_only=True)
class Comparison:
    """Checkpoints side by side: a column per target, a table per threat (``robust-comparison/1``)."""

    format: str = FORMAT
    columns: list[dict]
    data: dict
    battery: str
    warnings: list[str] = field(default_factory=list)
    threats: list[ThreatComparison] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return [c["label"] for c in self.columns]

    def to_json(self) -> str:
        return json.dumps(to_data(self), indent=1, allow_nan=False) + "\n"


def _num(v, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def _row(metric: str, key: str, unit: str, values: list) -> Row:
    if unit == "pct":
        disp = [pct_text(v) for v in values]
        base = pct(values[0])
        diff: list[str | None] = [None, *(
            None if base is None or pct(v) is None else signed(cast(Decimal, pct(v)) - base, "pp") for v in values[1:])]
    elif unit == "queries":
        disp = [_num(None if v is None else round(v), ",.0f") for v in values]
        base = None if values[0] is None else round(values[0])
        diff = [None, *(None if base is None or v is None else _signed_int(round(v) - base) for v in values[1:])]
    else:  # seconds
        disp = ["–" if v is None else f"{v:.1f}s" for v in values]
        base = None if values[0] is None else round(values[0], 1)
        diff = [None, *(None if base is None or v is None else _signed_secs(round(v, 1) - base) for v in values[1:])]
    return Row(metric=metric, key=key, unit=unit, values=values, display=disp, diff=diff)


def _signed_int(d: int) -> str:
    return "±0" if d == 0 else f"{d:+,d}"


def _signed_secs(d: float) -> str:
    return "±0.0s" if abs(d) < 0.05 else f"{d:+.1f}s"


def _attack_rows(cols: list[Result]) -> list[Row]:
    rows = []
    labels = list(dict.fromkeys(a.label for c in cols for a in c.attacks))
    for lab in labels:
        entries = [c.attack(lab) for c in cols]
        ran = [e if e is not None and e.ran else None for e in entries]
        if not any(ran):
            rows.append(Row(metric=lab, key=f"after:{lab}", unit="skipped", values=[None] * len(cols),
                            display=["skipped"] * len(cols), diff=[None] * len(cols)))
            continue
        row = _row(f"after {lab}", f"after:{lab}", "pct", [e and e.robust_accuracy_after for e in ran])
        row.display = [d if e else "skipped" for d, e in zip(row.display, ran)]
        rows.append(row)
        if any(e and e.queries_mean is not None for e in ran):
            rows.append(_row(f"{lab} queries/sample", f"queries:{lab}", "queries", [e and e.queries_mean for e in ran]))
        rows.append(_row(f"{lab} time", f"seconds:{lab}", "seconds", [e and e.seconds for e in ran]))
    return rows


def compare(report: Report, warnings: list[str] | None = None) -> Comparison:
    """The side-by-side comparison of a report's targets (the first one is the reference column)."""
    names = display_names(report)
    by_target = report.by_target()
    targets = [t.name for t in report.targets]
    if len(targets) < 2:
        raise UserError("nothing to compare: give two or more reports, or a report with several targets")
    check_targets([("report", t, by_target[t]) for t in targets], with_source=False)
    ref = by_target[targets[0]]
    sources = {s["label"]: s for s in report.sources or []}
    out = Comparison(
        columns=[{"label": names[t], "target": sources.get(t, {}).get("target", t),
                  "report": sources.get(t, {}).get("report"),
                  "seed": sources.get(t, {}).get("seed", report.seed)} for t in targets],
        data={k: report.data.get(k) for k in ("name", "n", "sha256")},
        battery=report.battery_id, warnings=list(warnings or []))
    for r0 in ref:
        cols = [r0] + [next(r for r in by_target[t] if same_threat(r.key, r0.key)) for t in targets[1:]]
        rows = [
            _row("clean accuracy", "clean_accuracy", "pct", [c.clean_accuracy for c in cols]),
            _row("robust accuracy", "robust_accuracy", "pct", [c.robust_accuracy for c in cols]),
            *_attack_rows(cols),
            _row("queries/sample", "queries_mean", "queries", [c.queries_mean for c in cols]),
            _row("time", "seconds", "seconds", [c.seconds for c in cols]),
        ]
        paired = [Paired(a=names[targets[0]], b=names[t], **(paired_counts(r0, c) or {}))
                  for t, c in zip(targets[1:], cols[1:])]
        out.threats.append(ThreatComparison(threat=r0.threat, n=r0.n, rows=rows, paired=paired))
    return out


# --- views ----------------------------------------------------------------------------------------------------------
LEGEND = ("columns: checkpoints, the first is the reference; (±…) the difference to it, from the rounded numbers "
          "shown · after X: robust accuracy after attack X in the cascade · robust→broken: samples robust in the "
          "reference and broken in the column, broken→robust the reverse · McNemar p: exact two-sided test on "
          "those flips; below 0.05 the change is unlikely to be chance on these samples")
PAIRED_HEADER = ["n", "both robust", "robust→broken", "broken→robust", "both broken", "McNemar p"]


def p_text(p: float | None) -> str:
    if p is None:
        return "–"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def paired_cells(p: Paired) -> list[str]:
    """The paired table's cells after the column's label (dashes and a reason when there are no samples)."""
    if p.n is None:
        return ["–", "–", "–", "–", "–", "no per-sample results"]
    return [str(p.n), str(p.both_robust), str(p.robust_to_broken), str(p.broken_to_robust), str(p.both_broken),
            p_text(p.p_value)]


def render_console(cmp: Comparison, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    labels = cmp.labels
    for w in cmp.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(w)}", highlight=False)
    for th in cmp.threats:
        table = Table(title=escape(f"compare · {th.threat} · n={th.n} · data {cmp.data['name']} · battery {cmp.battery}"))
        table.add_column("metric")
        for lab in labels:
            table.add_column(escape(lab), justify="right")
        for row in th.rows:
            style = "bold" if row.key == "robust_accuracy" else ("dim" if row.unit != "pct" else None)
            table.add_row(escape(row.metric), *[escape(row.cell(j)) for j in range(len(labels))], style=style)
        console.print(table)
        pt = Table(title=escape(f"paired · {th.threat} (per sample, against {labels[0]})"))
        pt.add_column("checkpoint", justify="left")
        for c in PAIRED_HEADER:
            pt.add_column(c, justify="right")
        for p in th.paired:
            pt.add_row(escape(p.b), *paired_cells(p))
        console.print(pt)
    console.print(f"[dim]{escape(LEGEND)}[/dim]")


def to_markdown(cmp: Comparison, level: int = 1) -> str:
    """The comparison in Markdown; ``level`` 1 is a document with a title, deeper levels a section of one."""
    labels = cmp.labels
    esc = safe.markdown
    lines = (["# robust comparison", ""] if level == 1 else []) + [
             f"Data {safe.code(cmp.data['name'])} (sha256 {safe.code(str(cmp.data['sha256'])[:12])}), battery "
             f"{safe.code(cmp.battery)}; "
             f"reference column: {esc(labels[0])}.", ""]
    for w in cmp.warnings:
        lines += [f"> **Warning:** {esc(w)}", ""]
    for th in cmp.threats:
        lines += [f"{'#' * max(level, 2)} {esc(th.threat)} (n={th.n})", "",
                  "| metric | " + " | ".join(esc(x) for x in labels) + " |",
                  "|---|" + "---:|" * len(labels)]
        for row in th.rows:
            lines.append(f"| {esc(row.metric)} | " + " | ".join(esc(row.cell(j)) for j in range(len(labels))) + " |")
        lines += ["", "| paired, against " + esc(labels[0]) + " | " + " | ".join(PAIRED_HEADER) + " |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for p in th.paired:
            lines.append(f"| {esc(p.b)} | " + " | ".join(esc(c) for c in paired_cells(p)) + " |")
        lines.append("")
    lines += [f"_{LEGEND}_", ""]
    return "\n".join(lines)
