"""The report: a versioned, JSON-serialisable record of an evaluation and where it came from.

``format`` names the schema version. Accuracies are fractions in [0,1]. Per-sample results are kept
(columnar, one list per field) because comparisons, gates and resumption need them, not only the means.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

from robustbench_cli import __version__
from robustbench_cli.errors import UserError
from robustbench_cli.results import Evaluation, ThreatResult

FORMAT = "robust-report/1"
_LIBS = ("torch", "onnxruntime", "numpy", "timm", "pandas")


def library_versions() -> dict:
    out = {"python": platform.python_version()}
    for lib in _LIBS:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = None
    return out


def _stat(a: np.ndarray, fn) -> float | None:
    return float(fn(a)) if len(a) else None


def _threat_entry(r: ThreatResult) -> dict:
    broken = ~r.robust & r.clean_correct
    attacks = []
    for a in r.attacks:
        entry = {
            "label": a.label, "attack": a.name, "family": a.family, "skipped": a.skipped,
            "attempted": a.attempted, "broken": a.broken,
            "robust_accuracy_after": a.robust_after, "seconds": round(a.seconds, 4), "config": a.config,
        }
        if a.queries is not None:
            mine = np.array([b == a.label for b in r.broken_by])
            attempted = a.queries[a.queries > 0]
            entry["queries_mean"] = _stat(attempted, np.mean)
            entry["queries_median_success"] = _stat(a.queries[mine], np.median)
        attacks.append(entry)
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
        "queries_median_success": _stat(r.queries[broken], np.median),
        "attacks": attacks,
        "samples": {
            "id": r.ids.tolist(),
            "label": r.labels.tolist(),
            "clean_pred": r.clean_pred.tolist(),
            "goal": r.goal.tolist(),
            "eligible": r.eligible.tolist(),
            "robust": r.robust.tolist(),
            "adv_pred": r.adv_pred.tolist(),
            "distance": clean_list(r.distance),
            "queries": r.queries.tolist(),
            "broken_by": list(r.broken_by),
        },
    }


def build_report(evaluations: list[Evaluation], *, data: dict, battery: dict, seed: int, device: str,
                 options: dict | None = None) -> dict:
    return {
        "format": FORMAT,
        "tool": {"name": "robust", "version": __version__},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
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
        "targets": [e.target for e in evaluations],
        "results": [_threat_entry(r) for e in evaluations for r in e.results],
    }


def load_report(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"report {str(p)!r} not found")
    try:
        rep = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{p}: not a JSON report ({e.__class__.__name__})") from None
    if not isinstance(rep, dict) or not str(rep.get("format", "")).startswith("robust-report/"):
        raise UserError(f"{p}: not a robust report (no 'format': robust-report/N)")
    if rep["format"] != FORMAT:
        raise UserError(f"{p}: report format {rep['format']} is not supported by this version ({FORMAT})")
    return rep
