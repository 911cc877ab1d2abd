"""Checks that an evaluation was run properly. A robust accuracy is only an upper bound worth reading if every
attack did its job; these checks say when one visibly did not. Each finding has an id (the README's Diagnostics
table explains it and says what to do); a failed one marks the evaluation as suspect.

Per threat model:
- ``noise-vs-attack``: the noise yardstick ran on every clean-correct sample. If it broke more of the samples an
  attack attempted than the attack itself did, that attack is not working.

Per target (from probes on clean inputs, and across the threat models of one scan):
- ``deterministic-outputs``: the same inputs asked twice give the same scores.
- ``gradients``: gradients of the loss at clean inputs are finite and not zero (white-box targets).
- ``logit-outputs``: the model returns logits, not probabilities (softmax outputs flatten gradients).
- ``epsilon-monotone``: robust accuracy does not rise with epsilon for the same norm and goal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robustbench_cli.results import Evaluation, ThreatResult

PROBE_ROWS = 64  # clean inputs used by the probes: enough to see a pattern, cheap next to any attack


def probe(target, x: torch.Tensor, clean_scores: torch.Tensor, labels) -> dict:
    """Ask the target a few questions on clean inputs: the same answers twice? usable gradients?"""
    from robustbench_cli.targets.base import Capability

    k = min(len(x), PROBE_ROWS)
    if not k:
        return {}
    again = target.scores(x[:k])
    diff = float((again.float() - clean_scores[:k].float()).abs().max())
    out = {"rows": k, "model_rows": k, "repeat_max_abs_diff": diff, "output_kind": target.output_kind}
    if Capability.GRADIENTS in target.capabilities:
        xs = x[:k].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            z = target.as_logits(target.forward(xs))
            loss = F.cross_entropy(z, torch.as_tensor(labels[:k], device=z.device))
            (g,) = torch.autograd.grad(loss, xs)
        norms = g.flatten(1).norm(dim=1)
        out["model_rows"] += k  # one forward (and backward) pass more
        out["grad_nonfinite"] = int((~torch.isfinite(norms)).sum())
        out["grad_zero"] = int((norms == 0).sum())
    return out


def check(r: ThreatResult) -> list[dict]:
    out = []
    yardsticks = [a for a in r.attacks if a.family == "baseline" and a.broken_mask is not None]
    for noise in yardsticks:
        for a in r.attacks:
            if a is noise or a.skipped or a.attempted_mask is None or not a.attempted:
                continue
            by_noise = int((noise.broken_mask & a.attempted_mask).sum())
            by_attack = int((a.broken_mask & a.attempted_mask).sum())
            passed = by_noise <= by_attack
            msg = (f"{a.label} broke {by_attack} of its {a.attempted} samples; {noise.label} broke {by_noise} of them"
                   + ("" if passed else f": {a.label} is weaker than random noise, so it is not working "
                      "(gradient masking, a wrong loss, or too small a budget)"))
            out.append({"check": "noise-vs-attack", "attack": a.label, "baseline": noise.label, "passed": passed,
                        "message": msg})
    return out


def check_target(e: Evaluation) -> list[dict]:
    """Findings about the target itself, the same for each of its threat models."""
    out = []
    p = e.probes
    if p:
        diff = p["repeat_max_abs_diff"]
        ok = diff <= 1e-4
        out.append({"check": "deterministic-outputs", "passed": ok, "message": (
            f"the same {p['rows']} clean inputs asked twice gave the same scores (max difference {diff:.2g})" if ok else
            f"the same {p['rows']} clean inputs asked twice gave different scores (max difference {diff:.2g}): a "
            "randomised model or preprocessing; single-draw attacks are unreliable, average gradients over draws (EOT)")})
        if p.get("output_kind") == "probabilities":
            out.append({"check": "logit-outputs", "passed": False, "message": (
                "the model returns probabilities: attacks use their logarithm, but a saturated softmax still hides "
                "gradient and margin information; export the logits if you can")})
        if "grad_zero" in p:
            bad = p["grad_zero"] + p["grad_nonfinite"]
            ok = bad == 0
            out.append({"check": "gradients", "passed": ok, "message": (
                f"the loss gradient is finite and non-zero at all {p['rows']} probed clean inputs" if ok else
                f"the loss gradient is zero at {p['grad_zero']} and NaN/inf at {p['grad_nonfinite']} of {p['rows']} "
                "probed clean inputs: gradient masking or non-differentiable preprocessing; trust the black-box "
                "attacks more than the gradient ones here")})
    groups: dict[tuple, list[ThreatResult]] = {}
    for r in e.results:
        groups.setdefault((r.threat.norm, r.threat.targeted), []).append(r)
    for rs in groups.values():
        rs = sorted(rs, key=lambda r: r.threat.epsilon)
        for small, big in zip(rs, rs[1:]):
            ok = big.robust_accuracy <= small.robust_accuracy
            out.append({"check": "epsilon-monotone", "passed": ok, "message": (
                f"robust accuracy {100 * small.robust_accuracy:.1f}% at {small.threat.name} and "
                f"{100 * big.robust_accuracy:.1f}% at {big.threat.name}" + ("" if ok else
                ": it rose with epsilon, so the attacks at the larger epsilon did not work (raise steps or restarts)"))})
    return out
