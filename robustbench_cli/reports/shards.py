"""A shard's report, and the merge of a scan's shard reports into the report of the whole scan.

A shard's report is a normal report of its own samples, plus a ``shard`` block: which shard of how many, the
fingerprint of the scan (every shard of one scan has the same), and the per-sample arrays a report does not
otherwise keep (each attack's attempted, finished and broken samples and queries; the verified margins; the
candidates with non-finite scores). :func:`merge` puts the per-sample columns back in the order of the whole set and
rebuilds the report with the same code a scan runs (:func:`~robustbench_cli.reports.build.build_report`, the
diagnostics of the evaluation floor), so every aggregate, curve, interval and test is computed again from the
merged columns, never averaged from the shards' numbers.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from robustbench_cli.core.errors import UserError
from robustbench_cli.core.results import AttackOutcome, Evaluation, ThreatResult
from robustbench_cli.core.threat_model import ThreatModel
from robustbench_cli.evaluation import diagnostics
from robustbench_cli.evaluation.shards import Shard
from robustbench_cli.reports.build import build_report
from robustbench_cli.reports.model import Report, Result

# what a scan must share with another for their shards to be parts of one scan
SCAN_KEYS = ("data", "battery", "seed")


def scan_id(fingerprint: dict) -> str:
    """A short stable id of a scan (targets, data, threats, battery, seed, goal, budget), the same in every shard."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _floats(a: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else float(v) for v in a.tolist()]


def block(evaluations: list[Evaluation], shard: Shard, scan: str) -> dict:
    """The ``shard`` block of a shard's report (results in the report's order)."""
    results = []
    for e in evaluations:
        for r in e.results:
            n = len(r.ids)
            attacks = {}
            for a in r.attacks:
                if a.attempted_mask is None:  # skipped before it was given samples
                    continue
                assert a.done_mask is not None and a.broken_mask is not None and a.queries is not None
                attacks[a.label] = {
                    "attempted": a.attempted_mask.tolist(), "done": a.done_mask.tolist(),
                    "broken": a.broken_mask.tolist(), "queries": a.queries.tolist(),
                    "broken_count": int(a.broken), "minimum_norm": bool(a.minimum_norm),
                    "robust_after": None if a.robust_after is None else int(round(a.robust_after * max(r.n, 1))),
                }
            results.append({
                "best_margin": _floats(r.best_margin if r.best_margin is not None else np.full(n, -np.inf)),
                "nonfinite": (r.nonfinite if r.nonfinite is not None else np.zeros(n, dtype=np.int64)).tolist(),
                **({"lowprec": r.lowprec.tolist()} if r.lowprec is not None else {}),
                "attacks": attacks,
            })
    return {"index": shard.index, "of": shard.of, "scan": scan, "results": results,
            "targets": [{"clean_seconds": e.clean_seconds, "oom_retries": e.oom_retries} for e in evaluations]}


# --- the merge -------------------------------------------------------------------------------------------------------
def check_parts(named: list[tuple[str, Report]]) -> tuple[int, list[tuple[Shard, str, Report]]]:
    """The shards in order, or one line saying why they are not the complete parts of one scan."""
    if not named:
        raise UserError("merge: give the shard reports to merge")
    parts = []
    for where, rep in named:
        sh = rep.shard
        if not isinstance(sh, dict) or "index" not in sh or "of" not in sh:
            raise UserError(f"merge: {where} is not a shard's report (no shard block; it was not made with --shard)")
        try:
            shard = Shard(int(sh["index"]), int(sh["of"]))
        except (TypeError, ValueError):
            raise UserError(f"merge: {where} has a damaged shard block") from None
        if not rep.complete:
            raise UserError(f"merge: {where} (shard {shard.name}) is incomplete ({(rep.incomplete or {}).get('reason')}); "
                            "finish it with the same command and --resume, then merge")
        parts.append((shard, where, rep))
    first_shard, first_where, first = parts[0]
    for shard, where, rep in parts[1:]:
        if shard.of != first_shard.of:
            raise UserError(f"merge: {where} is shard {shard.name} but {first_where} is shard {first_shard.name}: "
                            "shards of different splits")
        if (rep.shard or {}).get("scan") != (first.shard or {}).get("scan"):
            differ = [k for k in SCAN_KEYS if _comparable(getattr(rep, k)) != _comparable(getattr(first, k))]
            raise UserError(f"merge: {where} and {first_where} are shards of different scans"
                            + (f" (they differ in: {', '.join(differ)})" if differ else
                               " (models, threats, goal or budget differ)"))
    seen: dict[int, str] = {}
    for shard, where, _ in parts:
        if shard.index in seen:
            raise UserError(f"merge: shard {shard.name} is given twice ({seen[shard.index]} and {where})")
        seen[shard.index] = where
    missing = [f"{i}/{first_shard.of}" for i in range(1, first_shard.of + 1) if i not in seen]
    if missing:
        raise UserError(f"merge: shard{'s' if len(missing) > 1 else ''} {', '.join(missing)} missing "
                        f"(have {', '.join(s.name for s, _, _ in sorted(parts, key=lambda p: p[0].index))})")
    return first_shard.of, sorted(parts, key=lambda p: p[0].index)


def _comparable(v: Any) -> Any:
    return json.dumps(v, sort_keys=True, default=str)


def merge(named: list[tuple[str, Report]]) -> Report:
    """The report of the whole scan from the reports of all its shards (``named``: (file, report) pairs)."""
    count, parts = check_parts(named)
    first = parts[0][2]
    n = int(first.data["n"])
    for shard, where, rep in parts:
        if [(r.target, r.threat) for r in rep.results] != [(r.target, r.threat) for r in first.results]:
            raise UserError(f"merge: {where} has other results than {parts[0][1]}")
        for r in rep.results:
            if len(r.samples) != len(shard.positions(n)):
                raise UserError(f"merge: {where} holds {len(r.samples)} samples for {r.target} at {r.threat}; "
                                f"shard {shard.name} of {n} samples has {len(shard.positions(n))}")
    blocks: list[dict] = [rep.shard or {} for _, _, rep in parts]  # check_parts: every one has its block
    evaluations = []
    k = 0
    for t, info in enumerate(first.targets):
        results = []
        for _ in first.results_of(info.name):
            results.append(_merge_result(n, [(s, rep.results[k], b["results"][k])
                                             for (s, _, rep), b in zip(parts, blocks)]))
            k += 1
        target = {key: v for key, v in info.__dict__.items() if key not in ("details", "probes", "oom_retries")}
        target.update(info.details)
        ev = Evaluation(target=target, results=results, probes=dict(info.probes or {}),
                        clean_seconds=sum(float(b["targets"][t]["clean_seconds"]) for b in blocks),
                        oom_retries=sum(int(b["targets"][t]["oom_retries"]) for b in blocks))
        diagnostics.run(ev)  # the findings of the whole set, from the merged columns
        evaluations.append(ev)
    options = {k: v for k, v in first.options.items() if k != "shard"}
    merged = build_report(evaluations, data=first.data, battery=first.battery, seed=first.seed,
                          device=str(first.provenance.get("device", "")), options=options)
    merged.provenance = {**first.provenance, "command": first.provenance.get("command"),
                         "merged": {"shards": count, "files": [w for _, w, _ in parts], "scan": blocks[0]["scan"]}}
    return merged


def _merge_result(n: int, parts: list[tuple[Shard, Result, dict]]) -> ThreatResult:
    """One (target, threat) over the whole set, from its shards' columns."""
    r0 = parts[0][1]

    def column(get, dtype, fill) -> np.ndarray:
        out = np.full(n, fill, dtype=dtype)
        for shard, r, extra in parts:
            out[shard.positions(n)] = np.asarray([fill if v is None else v for v in get(r, extra)], dtype=dtype)
        return out

    def samples(name: str, dtype, fill):
        return column(lambda r, _e: getattr(r.samples, name) or [fill] * len(r.samples), dtype, fill)

    broken_by: list = [None] * n
    for shard, r, _ in parts:
        for pos, b in zip(shard.positions(n).tolist(), r.samples.broken_by):
            broken_by[pos] = b
    res = ThreatResult(
        target=r0.target, threat=ThreatModel.parse(r0.threat), ids=samples("id", np.int64, 0),
        labels=samples("label", np.int64, 0), clean_pred=samples("clean_pred", np.int64, 0),
        goal=samples("goal", np.int64, 0), eligible=samples("eligible", bool, False),
        robust=samples("robust", bool, False), adv_pred=samples("adv_pred", np.int64, -1),
        distance=samples("distance", np.float64, np.nan), queries=samples("queries", np.int64, 0),
        broken_by=broken_by, queries_at_break=samples("queries_at_break", np.int64, 0),
        min_distance=samples("min_distance", np.float64, np.nan), certified=samples("certified", bool, False),
        best_margin=column(lambda _r, e: e["best_margin"], np.float64, -np.inf),
        nonfinite=column(lambda _r, e: e["nonfinite"], np.int64, 0),
        seconds=sum(r.seconds for _, r, _ in parts),
    )
    if r0.precision is not None:
        res.precision = r0.precision["mode"]
        res.lowprec = column(lambda _r, e: e["lowprec"], np.int64, 0)
    res.certificate = _merge_certificate([r.certificate for _, r, _ in parts])
    for a in r0.attacks:
        res.attacks.append(_merge_attack(n, a.label, parts, res))
    return res


def _merge_attack(n: int, label: str, parts: list[tuple[Shard, Result, dict]], res: ThreatResult) -> AttackOutcome:
    rows = [(shard, r.attack(label), extra["attacks"].get(label)) for shard, r, extra in parts]
    a0 = rows[0][1]
    assert a0 is not None
    skips = {row.skipped for _, row, _ in rows if row is not None}
    if len(skips) > 1 or any(row is None for _, row, _ in rows):
        raise UserError(f"merge: the shards disagree on whether {label} ran on {res.target} at {res.threat.name}")
    out = AttackOutcome(label, a0.attack, a0.family, a0.config, skipped=a0.skipped, independent=a0.independent,
                        seconds=sum(row.seconds for _, row, _ in rows if row is not None))
    if any(x is None for _, _, x in rows):  # skipped before it was given samples, in every shard
        return out
    cols = {name: np.zeros(n, dtype=bool) for name in ("attempted", "done", "broken")}
    queries = np.zeros(n, dtype=np.int64)
    for shard, _, x in rows:
        assert x is not None
        pos = shard.positions(n)
        for name in cols:
            cols[name][pos] = np.asarray(x[name], dtype=bool)
        queries[pos] = np.asarray(x["queries"], dtype=np.int64)
    out.attempted_mask, out.done_mask, out.broken_mask, out.queries = (cols["attempted"], cols["done"],
                                                                      cols["broken"], queries)
    out.attempted = int(cols["attempted"].sum())
    out.broken = sum(int(x["broken_count"]) for _, _, x in rows if x is not None)
    out.minimum_norm = bool(rows[0][2]["minimum_norm"]) if rows[0][2] is not None else False
    after = [x["robust_after"] for _, _, x in rows if x is not None]
    out.robust_after = None if any(v is None for v in after) else sum(after) / max(res.n, 1)
    detected = [row.detected for _, row, _ in rows if row is not None and row.detected is not None]
    out.detected = sum(detected) if detected else None
    return out


def _merge_certificate(certs: list[dict | None]) -> dict | None:
    if all(c is None for c in certs):
        return None
    if any(c is None for c in certs) or len({c.get("method") for c in certs if c is not None}) > 1:
        raise UserError("merge: the shards disagree on the certificates")
    c0 = dict(certs[0] or {})
    if not c0.get("method"):
        return c0
    for key in ("attempted", "certified", "seconds", "crown_skipped"):
        vals: list[float] = [c[key] for c in certs if c is not None and c.get(key) is not None]
        if vals:
            c0[key] = round(sum(vals), 4) if key == "seconds" else sum(vals)
    return c0
