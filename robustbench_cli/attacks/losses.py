"""Per-sample losses to *maximise*, on logit-like scores (log-probabilities for probability outputs)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robustbench_cli.attacks.base import Goal
from robustbench_cli.core.errors import UserError


def cross_entropy(z: torch.Tensor, goal: Goal) -> torch.Tensor:
    ce = F.cross_entropy(z, goal.labels, reduction="none")
    return -ce if goal.targeted else ce


def margin(z: torch.Tensor, goal: Goal) -> torch.Tensor:
    """Carlini-Wagner margin: best other class minus the goal class (untargeted), or the reverse (targeted)."""
    own = z.gather(1, goal.labels[:, None]).squeeze(1)
    others = z.scatter(1, goal.labels[:, None], float("-inf")).amax(dim=1)
    return own - others if goal.targeted else others - own


LOSSES = {"ce": cross_entropy, "margin": margin}


def get_loss(name: str):

    if name not in LOSSES:
        raise UserError(f"unknown loss {name!r} (known: {', '.join(LOSSES)})")
    return LOSSES[name]
