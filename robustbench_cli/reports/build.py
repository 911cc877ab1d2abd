"""From an evaluation to its report: every number a view shows is computed here, once, from the per-sample results.

The success-vs-queries and robust-vs-epsilon curves, the per-attack query statistics and the per-sample columns
are derived from the evaluation's arrays; the diagnostics come with the evaluation (the evaluation floor ran them).
"""

from __future__ import annotations

import datetime as _dt
import platform
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from robustbench_cli.core.provenance import library_versions
from robustbench_cli.core.results import Evaluation, ThreatResult
from robustbench_cli.core.version import __version__
from robustbench_cli.reports.model import FORMAT, Report


def _stat(a: np.ndarray, fn) -> float | None:
    return float(fn(a)) if len(a) else None


def query_grid(max_q: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, ... up to and including the first value at or above ``max_q``."""
    grid, k = [], 0
    while True:
        q = (1, 2, 5)[k % 3] * 10 ** (k // 3)
        grid.append(q)
        if q >= max_q:
            return grid
        k += 1


def success_curve(queries_of_successes: np.ndarray, attempted: int, grid: list[int]) -> list[float | None]:
    """Fraction of the attempted samples broken within each number of queries of the grid."""
    if not attempted:
        return [None] * len(grid)
    q = np.sort(queries_of_successes)
    return [float(np.searchsorted(q, g, side="right") / attempted) for g in grid]


def epsilon_curve(r: ThreatResult, points: int = 16) -> dict:
    """Robust accuracy (an upper bound) at epsilons from 0 to the largest verified distance, from one scan.

    A sample counts as broken at epsilon' when a verified adversarial lies within epsilon' of it
    (``min_distance``); at the scan's own epsilon this is the robust accuracy. Beyond it only minimum-norm
    attacks (FMN) tell anything: without one, every sample robust at epsilon stays robust on the curve.
    """
    md = r.min_distance if r.min_distance is not None else np.full(len(r.ids), np.nan)
    correct = r.clean_correct
    d = np.where(correct, md, np.nan)
    finite = d[np.isfinite(d)]
    top = max(r.threat.epsilon, float(finite.max()) if len(finite) else 0.0)
    grid = sorted({round(float(e), 6) for e in np.linspace(0.0, top, points)} | {r.threat.epsilon})
    with np.errstate(invalid="ignore"):
        ra = [float((correct & ~(d <= e)).sum() / max(r.n, 1)) for e in grid]
    return {"epsilon": grid, "robust_accuracy": ra,
            "minimum_norm_attacks": [a.label for a in r.attacks if a.minimum_norm and not a.skipped]}


def _threat_entry(r: ThreatResult) -> dict:
    broken = ~r.robust & r.clean_correct
    grid = query_grid(int(max(r.queries.max(initial=0), 1)))
    attacks = []
    for a in r.attacks:
        entry: dict[str, Any] = {
            "label": a.label, "attack": a.name, "family": a.family, "skipped": a.skipped,
            "independent": a.independent, "attempted": a.attempted, "broken": a.broken,
            "success_rate": (a.broken / a.attempted) if a.attempted else None,
            "robust_accuracy_after": a.robust_after, "seconds": round(a.seconds, 4), "config": a.config,
            # samples it finished: all it attempted, unless the scan stopped (Ctrl-C, --time-budget) during it
            "completed": int(a.done_mask.sum()) if a.done_mask is not None and not a.skipped else None,
        }
        if a.detected is not None:  # a guarded target: candidates that fooled the classifier but were flagged
            entry["detected"] = a.detected
        if a.family in ("transfer", "generative"):  # what the examples were crafted on: a column of the transfer matrix
            entry["surrogates"] = list(a.config.get("surrogates") or (a.config.get("trained") or {}).get("surrogates") or [])
        if a.queries is not None:
            mine = a.broken_mask if a.broken_mask is not None else np.zeros(len(a.queries), dtype=bool)
            entry["queries_mean"] = _stat(a.queries[a.attempted_mask], np.mean) if a.attempted_mask is not None else None
            entry["queries_mean_success"] = _stat(a.queries[mine], np.mean)
            entry["queries_median_success"] = _stat(a.queries[mine], np.median)
            entry["success_curve"] = success_curve(a.queries[mine], a.attempted, grid)
        attacks.append(entry)
    at_break = r.queries_at_break[broken] if r.queries_at_break is not None else np.zeros(0, dtype=np.int64)
    correct = int(r.clean_correct.sum())
    def clean_list(a):
        return [None if (isinstance(v, float) and np.isnan(v)) else v for v in a.tolist()]
    return {
        "target": r.target,
        "threat": r.threat.name,
        "norm": r.threat.norm.value,
        "epsilon": r.threat.epsilon,
        "targeted": r.threat.targeted or bool((r.goal != r.labels).any()),
        "n": r.n,
        "clean_accuracy": r.clean_accuracy,
        "robust_accuracy": r.robust_accuracy,
        "broken": int(broken.sum()),
        "seconds": round(r.seconds, 4),
        "queries_mean": _stat(r.queries[r.eligible], np.mean),
        "queries_mean_success": _stat(at_break, np.mean),
        "queries_median_success": _stat(at_break, np.median),
        # robust accuracy had the evaluation stopped after q queries per sample: samples broken within q
        # queries (all attacks so far, verification included) count as broken
        "query_grid": grid,
        "success_curve": success_curve(at_break, correct, grid),
        "robust_accuracy_curve": [
            float((correct - np.searchsorted(np.sort(at_break), g, side="right")) / max(r.n, 1)) for g in grid
        ],
        "robust_accuracy_by_epsilon": epsilon_curve(r),
        # a lower bound next to the attacks' upper bound: the share of samples a sound certificate proved robust
        "certified_accuracy": r.certified_accuracy,
        "nonfinite_candidates": None if r.nonfinite is None else int(r.nonfinite[r.eligible].sum()),
        # --precision: the attacks ran in reduced precision; candidates that broke only there (never counted)
        **({"precision": {"mode": r.precision, "low_precision_only": int(r.lowprec[r.eligible].sum())}}
           if r.precision is not None and r.lowprec is not None else {}),
        "certificate": r.certificate,
        "diagnostics": list(r.findings),
        "attacks": attacks,
        **({"detector": r.detector} if r.detector is not None else {}),
        "samples": {
            "id": r.ids.tolist(),
            "label": r.labels.tolist(),
            "clean_pred": r.clean_pred.tolist(),
            "goal": r.goal.tolist(),
            "eligible": r.eligible.tolist(),
            "robust": r.robust.tolist(),
            "adv_pred": r.adv_pred.tolist(),
            "distance": clean_list(r.distance),
            "min_distance": clean_list(r.min_distance if r.min_distance is not None else np.full(len(r.ids), np.nan)),
            "queries": r.queries.tolist(),
            "queries_at_break": (r.queries_at_break if r.queries_at_break is not None else np.zeros(len(r.ids), dtype=np.int64)).tolist(),
            "broken_by": list(r.broken_by),
            "certified": (r.certified if r.certified is not None else np.zeros(len(r.ids), dtype=bool)).tolist(),
        },
    }


def incomplete_summary(results: list[dict], reason: str, not_started: list[str]) -> dict:
    """Exactly what a stopped scan did: per target and threat, each attack's finished and planned samples."""
    unfinished = []
    for r in results:
        for a in r["attacks"]:
            if a.get("completed") is not None and a["completed"] < a["attempted"] \
                    or (a["skipped"] or "").startswith("not run"):
                unfinished.append({"target": r["target"], "threat": r["threat"], "attack": a["label"],
                                   "completed": a.get("completed") or 0, "attempted": a["attempted"]})
    return {"reason": reason, "unfinished": unfinished, "targets_not_started": list(not_started)}


def build_report(evaluations: list[Evaluation], *, data: dict, battery: dict, seed: int, device: str,
                 options: dict | None = None, stopped: str | None = None, not_started: Sequence[str] = ()) -> Report:
    """The report of a scan's evaluations (one per target), on ``data`` (its describe()) with ``battery``'s config.
    ``stopped``: why the scan ended early (the report is marked incomplete and says what was left undone)."""
    results = [_threat_entry(r) for e in evaluations for r in e.results]
    return Report.from_dict({
        "format": FORMAT,
        "tool": {"name": "robust", "version": __version__},
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "provenance": {
            "libraries": library_versions(),
            "platform": platform.platform(),
            "device": device,
            "seed": seed,
            "command": sys.argv[1:],
        },
        "seed": seed,
        "data": data,
        "battery": battery,
        "options": options or {},
        # probes: the model calls the diagnostics made on clean inputs, outside every attack's query count
        # oom_retries: attack batches retried at half size after the device ran out of memory (results unchanged)
        "targets": [{**e.target, "probes": e.probes, "oom_retries": e.oom_retries} for e in evaluations],
        "results": results,
        "complete": stopped is None,
        **({"incomplete": incomplete_summary(results, stopped, list(not_started))} if stopped is not None else {}),
    })
