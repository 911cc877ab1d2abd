"""Tables of a report as pandas frames: one source for the console, CSV and Markdown views."""

from __future__ import annotations

import pandas as pd

from robustbench_cli.core.records import to_data
from robustbench_cli.reports.model import AttackRow, Report, Result

NOT_FINISHED = "not finished"  # in place of a robust accuracy the scan stopped before it finished


def unfinished(a: AttackRow) -> bool:
    """An attack a stopped scan (Ctrl-C, --time-budget) left: started and not finished on all its samples, or not
    run at all because the scan stopped first. Its robust accuracy so far is no result (reports/build.py lists the
    same attacks under ``incomplete``)."""
    return (a.completed is not None and a.completed < a.attempted) or (a.skipped or "").startswith("not run")


def result_unfinished(r: Result) -> bool:
    """The battery did not finish on this target and threat: its robust accuracy is no result yet."""
    return any(unfinished(a) for a in r.attacks)


def summary_frame(report: Report) -> pd.DataFrame:
    """One row per (target, threat): n, clean and robust accuracy (and certified accuracy when a certificate ran),
    robust accuracy after each attack, queries, time. Where a stopped scan left the battery unfinished, the robust
    accuracy (and that of each unfinished attack) is the text ``not finished``, never the partial number."""
    rows = []
    certified = any(r.certified_accuracy is not None for r in report.results)
    for r in report.results:
        row = {
            "target": r.target, "threat": r.threat, "n": r.n, "clean_accuracy": r.clean_accuracy,
            "robust_accuracy": NOT_FINISHED if result_unfinished(r) else r.robust_accuracy,
        }
        if certified:  # only when a certificate ran: a lower bound next to the upper one (a proof, even if partial)
            row["certified_accuracy"] = r.certified_accuracy
        for a in r.attacks:
            row[f"after:{a.label}"] = NOT_FINISHED if unfinished(a) else None if a.skipped else a.robust_accuracy_after
        row["queries_mean"] = r.queries_mean
        row["queries_median_success"] = r.queries_median_success
        row["seconds"] = r.seconds
        row["diagnostics_failed"] = len(r.failed_checks())
        row.update(_curve_columns(r.query_grid, r.success_curve))
        rows.append(row)
    return pd.DataFrame(rows)


def _curve_columns(grid: list[int], curve: list) -> dict:
    """The success-vs-queries curve as columns ``success@q<=N``: fraction of attempted samples broken within N."""
    return {f"success@q<={q}": v for q, v in zip(grid, curve)}


def attacks_frame(report: Report) -> pd.DataFrame:
    """One row per (target, threat, attack): what each attack of the cascade contributed."""
    rows = []
    for r in report.results:
        for a in r.attacks:
            rows.append({
                "target": r.target, "threat": r.threat, "attack": a.label,
                "status": NOT_FINISHED if unfinished(a) else "skipped" if a.skipped else "ran",
                "attempted": a.attempted, "broken": a.broken, "success_rate": a.success_rate,
                "robust_accuracy_after": None if unfinished(a) else a.robust_accuracy_after,
                "queries_mean": a.queries_mean, "queries_mean_success": a.queries_mean_success,
                "queries_median_success": a.queries_median_success,
                "seconds": a.seconds, "reason": a.skipped or "",
                **_curve_columns(r.query_grid, a.success_curve or [None] * len(r.query_grid)),
            })
    return pd.DataFrame(rows)


def transfer_frame(report: Report) -> pd.DataFrame:
    """The transfer matrix: one row per (threat, transfer or generator entry), one column per target, each cell the
    share of that target's clean-correct samples the entry's examples fooled (verified on the target). The entries
    are independent, so every cell has the same denominator as the target's clean accuracy. Empty without them."""
    rows: dict[tuple, dict] = {}
    targets: list[str] = []
    for r in report.results:
        if r.target not in targets:
            targets.append(r.target)
        for a in r.attacks:
            if a.family not in ("transfer", "generative"):
                continue
            surrogates = a.surrogates or []
            row = rows.setdefault((r.threat, a.label), {
                "threat": r.threat, "attack": a.attack,
                "surrogate": ("ensemble: " if len(surrogates) > 1 else "") + " + ".join(surrogates) if surrogates else "–"})
            row[r.target] = None if a.skipped else a.success_rate
    return pd.DataFrame(list(rows.values()), columns=["threat", "attack", "surrogate", *targets])


def samples_frame(report: Report) -> pd.DataFrame:
    """One row per (target, threat, sample)."""

    parts = []
    for r in report.results:
        df = pd.DataFrame(to_data(r.samples))
        df.insert(0, "threat", r.threat)
        df.insert(0, "target", r.target)
        parts.append(df)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
