"""Deterministic reports for the report, compare and gate tests, built without a model.

:func:`synthetic_report` fills per-sample results from a seeded generator and runs them through the real
``build_report``, then pins everything that depends on the machine or the clock (created, provenance, tool
version), so snapshots of its views are stable. :func:`tiny_cli_files` writes a seeded linear model, two
checkpoints and a small uint8 data set for tests that run the real CLI.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from robustbench_cli.core.results import AttackOutcome, Evaluation, ThreatResult
from robustbench_cli.core.threat_model import ThreatModel
from robustbench_cli.reports.build import build_report
from robustbench_cli.reports.model import Report

FIXED_CREATED = "2025-01-01T00:00:00+00:00"
ATTACKS = [  # label, family, queries per attempted sample (gradient) or the budget (query)
    ("fgsm", "gradient", 2),
    ("pgd", "gradient", 11),
    ("square", "query", 500),
    ("noise", "baseline", 10),
]
BATTERY = {"name": "synthetic", "version": 1, "attacks": [
    {"label": a, "attack": a, "when": None, "independent": a == "noise"} for a, _, _ in ATTACKS]}


def _threat_result(target: str, threat: ThreatModel, n: int, robust_rate: float, u: np.ndarray, seed: int,
                   clean_errors: int, skip_square: bool) -> ThreatResult:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    clean_pred = labels.copy()
    clean_pred[:clean_errors] = (labels[:clean_errors] + 1) % 10
    correct = clean_pred == labels
    robust = correct & (u < robust_rate)
    broken = correct & ~robust
    res = ThreatResult(
        target=target, threat=threat, ids=np.arange(n) + 100, labels=labels, clean_pred=clean_pred, goal=labels.copy(),
        eligible=np.ones(n, bool), robust=correct.copy(), adv_pred=np.full(n, -1), distance=np.full(n, np.nan),
        queries=np.zeros(n, np.int64), broken_by=[None] * n, queries_at_break=np.zeros(n, np.int64),
    )
    cascade = [a for a in ATTACKS if a[1] != "baseline" and not (skip_square and a[0] == "square")]
    # which cascade attack breaks each broken sample: spread over the attacks, deterministic
    who = rng.integers(0, len(cascade), n)
    for k, (label, family, q) in enumerate(ATTACKS):
        if skip_square and label == "square":
            res.attacks.append(AttackOutcome(label, label, family, {"max_queries": q}, skipped="white-box target: the gradient attacks cover it"))
            continue
        independent = family == "baseline"
        attempted = correct.copy() if independent else res.robust.copy()
        if independent:
            mine = broken & (rng.random(n) < 0.2)  # noise breaks a few samples the cascade broke too
        else:
            ci = [c[0] for c in cascade].index(label)
            mine = attempted & broken & (who == ci)
        used = np.zeros(n, np.int64)
        if family == "query":
            used[attempted] = q
            used[mine] = rng.integers(1, q, int(mine.sum()))
        else:
            used[attempted] = q
        new = mine & res.robust
        res.robust[new] = False
        res.adv_pred[new] = (labels[new] + 1) % 10
        res.distance[new] = np.round(threat.epsilon * rng.uniform(0.5, 1.0, int(new.sum())), 6)
        res.queries_at_break[new] = res.queries[new] + used[new]
        for i in np.flatnonzero(new):
            res.broken_by[i] = label
        res.queries += used
        out = AttackOutcome(label, label, family, {"steps": q} if family == "gradient" else {"max_queries": q},
                            attempted=int(attempted.sum()), broken=int(mine.sum()), seconds=0.25 * (k + 1),
                            queries=used, independent=independent, attempted_mask=attempted, broken_mask=mine)
        out.robust_after = res.robust_accuracy
        res.attacks.append(out)
    res.seconds = 1.5
    assert (res.robust == robust).all()
    return res


def synthetic_report(targets=(("model-a.onnx", 0.45), ("model-b.onnx", 0.40)), threats=("linf:8/255", "l2:0.5"),
                     n=200, seed=0, data_sha="ab" * 32, data_name="synthetic", clean_errors=10,
                     white_box: bool = False) -> Report:
    """A report with one target per (name, robust rate); per-sample robustness is shared noise, so flips are few."""
    evaluations = []
    for ti, (name, rate) in enumerate(targets):
        results = []
        for k, spec in enumerate(threats):
            threat = ThreatModel.parse(spec)
            u = np.random.default_rng(1000 + k).random(n)  # the same draw for every target: paired results
            results.append(_threat_result(name, threat, n, rate - 0.1 * k, u, seed + 10 * k + ti, clean_errors, white_box))
        target = {"name": name, "kind": "torch" if white_box else "onnx",
                  "capabilities": ["labels", "scores"] + (["gradients"] if white_box else []),
                  "input_shape": [1, 28, 28], "flat_dim": None, "num_classes": 10, "output_kind": "logits",
                  "sha256": f"{ti:02d}" * 32, "device": "cpu"}
        evaluations.append(Evaluation(target=target, results=results))
    rep = build_report(evaluations, data={"name": data_name, "n": n, "shape": [1, 28, 28], "sha256": data_sha},
                       battery=BATTERY, seed=seed, device="cpu",
                       options={"queries": None, "targeted": None, "seed": seed})
    rep.created = FIXED_CREATED
    rep.tool["version"] = "0.0.0-test"
    rep.provenance = {"libraries": {"python": "3.x"}, "platform": "test", "device": "cpu", "seed": seed,
                      "command": ["scan", "(synthetic)"]}
    return rep


def only_target(report: Report, name: str) -> Report:
    """The report cut down to one target (as if that checkpoint had been scanned alone)."""
    return replace(report, targets=[t for t in report.targets if t.name == name],
                   results=[r for r in report.results if r.target == name])


def set_robust(report: Report, target: str, threat: str, robust: list[bool]) -> None:
    """Overwrite the per-sample robust flags of one result and its robust accuracy (paired-test fixtures)."""
    r = next(r for r in report.results if r.target == target and r.threat == threat)
    r.samples.robust = list(map(bool, robust))
    r.robust_accuracy = sum(robust) / r.n


def write(report: Report | dict, path: Path) -> Path:
    path.write_text(report.to_json() if isinstance(report, Report) else json.dumps(report, indent=1))
    return path


FACTORY = '''"""A seeded linear classifier on 8x8 grey images, three classes (test fixture)."""
import torch
from torch import nn


def build():
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(64, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(3, 64, generator=g))
        lin.bias.zero_()
    return nn.Sequential(nn.Flatten(), lin)
'''


def tiny_cli_files(folder: Path, n: int = 30) -> dict[str, str]:
    """factory.py:build (and a copy, factory_b.py:build), two checkpoints (w0: the factory's weights, w1: perturbed)
    and uint8 8x8 data labelled by the w0 model."""
    import torch

    (folder / "factory.py").write_text(FACTORY)
    (folder / "factory_b.py").write_text(FACTORY)  # a second spec: a scan names each model once
    ns: dict = {}
    exec(FACTORY, ns)  # noqa: S102 - our own fixture source
    model = ns["build"]()
    torch.save(model.state_dict(), folder / "w0.pt")
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["1.weight"] += 0.3 * torch.randn(sd["1.weight"].shape, generator=torch.Generator().manual_seed(1))
    torch.save(sd, folder / "w1.pt")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 1, 8, 8)).astype(np.uint8)
    with torch.no_grad():
        y = model(torch.as_tensor(x / 255.0, dtype=torch.float32)).argmax(1).numpy()
    np.savez(folder / "d.npz", x=x, y=y)
    return {"model": str(folder / "factory.py") + ":build", "model_b": str(folder / "factory_b.py") + ":build",
            "w0": str(folder / "w0.pt"), "w1": str(folder / "w1.pt"), "data": str(folder / "d.npz")}


def interrupted(report: Report, target: str, threat: str, attack: str, completed: int,
                reason: str = "interrupted") -> Report:
    """``report`` as a scan stopped midway would leave it (evaluation/cascade.py): ``attack`` on (``target``,
    ``threat``) finished ``completed`` of its samples, every later attack of that target is ``not run: REASON``,
    later targets never started, and the report is marked incomplete with what was left undone."""
    from robustbench_cli.reports.build import incomplete_summary

    data = json.loads(report.to_json())
    results, started, stopped = [], False, False
    for r in data["results"]:
        if stopped and r["target"] != target:
            break  # the scan stops at the target it was on: later targets are not in the report
        for a in r["attacks"]:
            if r["target"] == target and r["threat"] == threat and a["label"] == attack:
                assert 0 <= completed < a["attempted"], (completed, a["attempted"])
                a["completed"], started, stopped = completed, True, True
            elif stopped:
                a.update(skipped=f"not run: {reason}", completed=None)
            elif a["skipped"] is None:
                a["completed"] = a["attempted"]
        results.append(r)
    assert started, f"no attack {attack} on {target} {threat}"
    not_started = [t["name"] for t in data["targets"] if t["name"] not in {r["target"] for r in results}]
    data.update(results=results, complete=False, incomplete=incomplete_summary(results, reason, not_started))
    data["targets"] = [t for t in data["targets"] if t["name"] not in not_started]
    return Report.from_dict(data)
