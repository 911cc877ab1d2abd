"""The verifying harness: an attack's candidates count only after the harness has checked them on the target.

For each candidate it replaces non-finite values by the clean input, projects it onto the epsilon ball and the
input box, asks the model itself (the exact route, one counted query), and records a success only when the
target's answer meets the goal and the target accepted the input (a detector may reject it). The same answer
gives each candidate's margin: how close the attack came, which entries marked ``closest`` use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from robustbench_cli.attacks import Goal
from robustbench_cli.attacks.losses import margin
from robustbench_cli.core.threat_model import ThreatModel
from robustbench_cli.targets.base import Oracle, Target


@dataclass
class Verdict:
    """The harness's judgement of one batch of candidates."""

    success: torch.Tensor  # bool per row: inside the threat model, accepted, and the goal reached
    pred: torch.Tensor  # the model's class for each (projected) candidate
    candidate: torch.Tensor  # the projected candidates, exactly what the model was asked
    margin: torch.Tensor  # best other class minus the goal class (reversed when targeted); -inf for NaN scores
    finite: torch.Tensor  # bool per row: every score finite (a NaN or inf answer is never a success)
    # --precision: bool per row, the candidate reaches the goal in the attacks' reduced precision but not in float32
    low_only: torch.Tensor | None = None


def verify(oracle: Oracle, target: Target, threat: ThreatModel, cand: torch.Tensor, x0: torch.Tensor,
           goal: Goal) -> Verdict:
    """Project candidates into the threat model, re-query the target, and judge them. Never trust the attack."""
    cand = cand.detach()
    cand = torch.where(torch.isfinite(cand), cand, x0)
    cand = threat.tighten(threat.project(cand.to(x0.dtype), x0, target.bounds), x0)
    inside = threat.contains(cand, x0, target.bounds)
    rows = torch.arange(len(x0))
    scores = oracle.scores(cand, rows, exact=True).to(x0.device)  # the model itself, never a faster stand-in
    pred = scores.argmax(dim=1)
    finite = torch.isfinite(scores).all(dim=1)
    success = goal.reached(pred) & inside & finite & ~target.rejects(cand).to(x0.device)
    closeness = margin(scores.float(), goal)
    closeness = torch.where(torch.isnan(closeness), torch.full_like(closeness, -math.inf), closeness)
    low_only = None
    if oracle.precision is not None:  # what the attack's own view said: a diagnostic model call, not a query
        with torch.no_grad(), oracle.reduced():
            low_pred = target.scores(cand).float().argmax(dim=1).to(x0.device)
        low_only = goal.reached(low_pred) & inside & ~success
    return Verdict(success, pred, cand, closeness, finite, low_only)


def verify_beyond(oracle: Oracle, target: Target, threat: ThreatModel, raw: torch.Tensor, x0: torch.Tensor,
                  goal: Goal, hit: np.ndarray) -> np.ndarray:
    """A minimum-norm attack's candidates, kept in the input box but not pulled into the epsilon ball, re-queried
    on the model: their distance where they reach the goal (NaN elsewhere). Rows already broken inside epsilon, or
    whose candidate lies inside the ball (checked by :func:`verify` already), cost nothing."""
    out = np.full(len(x0), np.nan)
    raw = raw.detach()
    raw = torch.where(torch.isfinite(raw), raw, x0).to(x0.dtype).clamp(*target.bounds)
    dist = threat.exact_distance(raw, x0)
    todo = (~torch.as_tensor(hit, device=x0.device)) & (dist > threat.epsilon)
    todo &= (oracle.remaining() >= 1).to(x0.device)  # a row out of budget gets no answer, and so no verdict
    rows = todo.nonzero().squeeze(1)
    if len(rows):
        pred = oracle.predict(raw[rows], rows.cpu(), exact=True).to(x0.device)
        ok = goal.subset(rows).reached(pred) & ~target.rejects(raw[rows]).to(x0.device)
        out[rows[ok].cpu().numpy()] = dist[rows[ok]].cpu().numpy()
    return out
