"""Golden per-sample results: a fixed set of scans whose per-sample columns must not change when code moves.

Recorded before the package was restructured into floors (core, targets, attacks, evaluation, reports, gate, cli),
and checked after every move: a refactor keeps users' numbers. The scans cover every path of the harness: a
white-box `default` scan, `standard` (certificates, the undecided and closest entries), `blackbox` on the ONNX
export, a label-only target, a detector (non-adaptive and adaptive views), a transfer scan, targeted threats, and a
scan stopped by its time budget and resumed.

A change that is meant to move numbers (a preset's new version, a fix of the harness) rewrites the files with
``ROBUST_UPDATE_SNAPSHOTS=1`` (or ``--update-snapshots``), and its commit says why.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from robustbench_cli import zoo

COLUMNS = ("clean_pred", "goal", "eligible", "robust", "adv_pred", "queries", "queries_at_break", "broken_by",
           "distance", "min_distance", "certified")
MODEL = zoo.SPEC
W = str(zoo.WEIGHTS)
ONNX = str(zoo.ONNX)
COMMON = ["--data", "mnist:test", "--shuffle", "--seed", "3"]

SCANS = {
    "default": [MODEL, "--weights", W, *COMMON, "--n", "40", "--eps", "0.15", "--threat", "l2:1.5"],
    "standard": [MODEL, "--weights", str(zoo.DEFENCES["pgd"]), *COMMON, "--n", "12", "--eps", "0.3",
                 "--preset", "standard", "--queries", "600"],
    "blackbox": [ONNX, *COMMON, "--n", "16", "--eps", "0.15", "--preset", "blackbox", "--queries", "300"],
    "labels": [ONNX, *COMMON, "--n", "12", "--eps", "0.2", "--access", "labels", "--queries", "200"],
    "detector": [MODEL, "--weights", W, *COMMON, "--n", "24", "--eps", "0.3", "--preset", "quick",
                 "--detector", zoo.DETECTOR_SPEC, "--detector-weights", str(zoo.DETECTOR)],
    "transfer": [ONNX, *COMMON, "--n", "24", "--eps", "0.2", "--attacks", "noise",
                 "--surrogate", f"{MODEL}@{W}"],
    "targeted": [MODEL, "--weights", W, *COMMON, "--n", "24", "--eps", "0.2", "--targeted", "random",
                 "--threat", "l2:2:targeted"],
}


def per_sample(report: dict) -> dict:
    """The report's per-sample columns by target and threat (NaN distances as None), in a stable JSON form."""
    out = {}
    for r in report["results"]:
        s = r["samples"]
        cols = {k: s[k] for k in COLUMNS}
        for k in ("distance", "min_distance"):
            cols[k] = [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in cols[k]]
        # the ONNX export's path depends on where the package is installed: name it relative to the zoo
        target = r["target"].replace(str(zoo.HERE), "<zoo>")
        out[f"{target} | {r['threat']}"] = {"ids": s["id"], **cols}
    return out


def dump(report: dict) -> str:
    return json.dumps(per_sample(report), indent=0, sort_keys=True) + "\n"


def _scan(run_cli, tmp_path: Path, args: list[str], *extra: str) -> tuple[object, Path]:
    out = tmp_path / "r.json"
    res = run_cli("scan", *args, "-o", out, *extra)
    return res, out


@pytest.mark.parametrize("name", sorted(SCANS))
def test_per_sample_results_are_the_recorded_ones(run_cli, snapshot, tmp_path, name):
    res, out = _scan(run_cli, tmp_path, SCANS[name])
    assert res.exit_code == 0, res.stderr
    snapshot(f"golden/{name}.json", dump(json.loads(out.read_text())))


def test_a_scan_stopped_and_resumed_gives_the_recorded_results(run_cli, snapshot, tmp_path):
    """The `default` golden scan stopped by a short time budget and resumed, again and again, until it completes: the
    per-sample results are those of the scan that ran in one go. (The batches stay whole: flags and predictions do not
    depend on the batch size, but an L2 distance's last bits can, through the summation order.)"""
    args = [*SCANS["default"], "--time-budget", "0.5s"]
    res, out = _scan(run_cli, tmp_path, args)
    assert res.exit_code == 0, res.stderr
    runs = 1
    while not json.loads(out.read_text())["complete"]:
        assert runs < 40, "the scan did not complete"
        res, out = _scan(run_cli, tmp_path, args, "--resume")
        assert res.exit_code == 0, res.stderr
        runs += 1
    assert runs > 1, "the time budget never stopped the scan, so nothing was resumed"
    snapshot("golden/default.json", dump(json.loads(out.read_text())))
