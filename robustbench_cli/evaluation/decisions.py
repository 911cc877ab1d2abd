"""The decisions across the whole set that shards stop for (shards.py), taken over every shard's saved state with the
functions an unsharded scan runs: :func:`~.cascade.closest_rows`, :func:`~.cascade.undecided_skip` and
:func:`~.certify.certify_remaining` (on the survivors of the first attack, in the order of the whole set, in the
same chunks). A decision is JSON: sample ids, a reason, a certificate's summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustbench_cli.core.data import EvalSet
from robustbench_cli.core.errors import UserError
from robustbench_cli.core.results import ThreatResult
from robustbench_cli.core.threat_model import ThreatModel
from robustbench_cli.evaluation import certify as certificates
from robustbench_cli.evaluation.cascade import closest_rows, undecided_skip
from robustbench_cli.evaluation.config import RunSpec
from robustbench_cli.evaluation.goals import choose_goal
from robustbench_cli.evaluation.resume import read_units
from robustbench_cli.evaluation.shards import HEAD_ROWS, Barrier, Shard, WholeView, gather
from robustbench_cli.targets.base import Target


def whole_view(states: list[tuple[Shard, Path]], n: int, unit: str) -> WholeView:
    """The robust, certified and margin arrays of ``unit`` over the whole set, from each shard's state file."""
    parts = []
    certificate = None
    for shard, path in states:
        units = read_units(path)
        if unit not in units:
            raise UserError(f"shard {shard.name}'s state {path} has no progress on {unit}; it stopped elsewhere")
        parts.append((shard, units[unit]))
        if "certificate" in units[unit]:
            certificate = json.loads(str(units[unit]["certificate"]))
    g = gather(parts, n, ("robust", "certified", "best_margin"))
    return WholeView(g["robust"].astype(bool), g["certified"].astype(bool), g["best_margin"].astype(np.float64),
                     certificate)


def decide(barrier: Barrier, states: list[tuple[Shard, Path]], data: EvalSet, targets: dict[str, Target],
           run: RunSpec) -> Any:
    """The decision ``barrier`` waits for, over the whole set ``data`` (shard states in ``states``)."""
    view = whole_view(states, len(data), barrier.unit)
    if barrier.point == "closest":
        rows = closest_rows(view, view.robust & ~view.certified, barrier.value)  # type: ignore[arg-type]
        return data.ids[rows].tolist()
    if barrier.point == "undecided":
        return {"skip": undecided_skip(view, int(barrier.value))}  # type: ignore[arg-type]
    if barrier.point == "certify":
        name, threat_name = barrier.unit.rsplit("|", 1)
        return _certify(targets[name], data, ThreatModel.parse(threat_name), run, view)
    raise UserError(f"unknown decision {barrier.point!r} in a shard's barrier")


def _scores(target: Target, x: np.ndarray, batch: int) -> torch.Tensor:
    parts = [target.scores(torch.as_tensor(x[i:i + batch]).to(target.device)) for i in range(0, len(x), batch)]
    return torch.cat(parts) if parts else torch.zeros((0, int(target.num_classes or 0)))


def _certify(target: Target, data: EvalSet, threat: ThreatModel, run: RunSpec, view: WholeView) -> dict:
    """Certify the survivors of the first attack over the whole set, as an unsharded scan does."""
    rows = np.flatnonzero(view.robust & ~view.certified)
    head = data.x[: min(len(data), HEAD_ROWS)][:64]
    head_t = torch.as_tensor(head).to(target.device)
    built = certificates.for_target(target, tuple(data.sample_shape), head_t, target.scores(head_t))
    x = torch.as_tensor(data.x[rows]).to(target.device)
    scores = _scores(target, data.x[rows], run.batch_size)
    labels, ids = data.y[rows], data.ids[rows]
    targeted = threat.targeted or run.targeted is not None
    goal, _ = choose_goal((run.targeted or "random") if targeted else None, labels, scores,
                          int(target.num_classes or scores.shape[1]), run.seed, ids)
    m = len(rows)
    res = ThreatResult(target=target.name, threat=threat, ids=ids, labels=labels, clean_pred=labels.copy(), goal=goal,
                       eligible=np.ones(m, dtype=bool), robust=np.ones(m, dtype=bool),
                       adv_pred=np.full(m, -1, dtype=np.int64), distance=np.full(m, np.nan),
                       queries=np.zeros(m, dtype=np.int64), broken_by=[None] * m, certified=np.zeros(m, dtype=bool))
    halt = certificates.certify_remaining(res, built, x, scores, targeted, auto=run.certify is None)
    if halt is not None:
        raise UserError(f"the certificates over the whole set stopped: {halt}")
    cert = res.certificate or {}
    return {"method": cert.get("method"), "attempted_ids": ids[: int(cert.get("attempted", 0))].tolist(),
            "certified_ids": ids[res.certified].tolist(), "seconds": cert.get("seconds", 0.0),
            "stopped": cert.get("stopped"), "crown_skipped": cert.get("crown_skipped")}
