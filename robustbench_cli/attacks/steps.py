"""Ascent steps and random starts shared by the gradient attacks."""

from __future__ import annotations

import torch

from robustbench_cli.attacks.rng import SampleRng
from robustbench_cli.core.threat_model import Norm, ThreatModel


def _per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (x.dim() - 1)))


def ascent_step(x: torch.Tensor, grad: torch.Tensor, size: float, norm: Norm | None) -> torch.Tensor:
    """One step up the loss: ``sign(grad)`` for Linf (FGSM), the unit gradient for L2, the raw gradient for None."""
    if norm is Norm.LINF:
        return x + size * grad.sign()
    if norm is Norm.L2:
        n = grad.flatten(1).norm(p=2, dim=1).clamp_min(1e-12)
        return x + size * grad / _per_sample(n, grad)
    return x + size * grad


def random_start(x0: torch.Tensor, threat: ThreatModel, rng: SampleRng, rows, bounds) -> torch.Tensor:
    """A point drawn uniformly from the Linf ball, or uniformly in radius and direction in the L2 ball."""
    shape = x0.shape[1:]
    if threat.norm is Norm.LINF:
        delta = (rng.uniform(shape, rows).to(x0.device) * 2 - 1) * threat.epsilon
    else:
        d = rng.normal(shape, rows).to(x0.device)
        d = d / _per_sample(d.flatten(1).norm(dim=1).clamp_min(1e-12), d)
        r = rng.uniform((), rows).to(x0.device) ** (1.0 / d[0].numel())
        delta = d * _per_sample(r * threat.epsilon, d)
    return threat.project(x0 + delta, x0, bounds)
