"""FGSM: the fast gradient sign method (Goodfellow, Shlens & Szegedy 2015, "Explaining and Harnessing
Adversarial Examples"). One step of size epsilon up the loss: ``x + eps * sign(grad)`` for Linf, the unit
gradient (FGM) for L2. ``eot=N`` averages the gradient over N draws of a randomised model (EOT, see
:class:`~robustbench_cli.attacks.gradients.Autograd`).

Example::

    robust scan model.py:Net --weights net.pt --data mnist --eps 0.1 --attacks fgsm
"""

from __future__ import annotations

import torch

from robustbench_cli.attacks.base import Attack, Goal, register
from robustbench_cli.attacks.gradients import Autograd
from robustbench_cli.attacks.losses import get_loss
from robustbench_cli.attacks.steps import ascent_step
from robustbench_cli.targets.base import Capability


@register
class FGSM(Attack):
    name = "fgsm"
    family = "gradient"
    requires = Capability.GRADIENTS
    summary = "one signed-gradient step of size epsilon (Goodfellow et al. 2015)"

    def __init__(self, *, loss: str = "ce", eot: int = 1):
        get_loss(loss)
        self.loss = loss
        self._source = Autograd(eot=eot)

    def config(self) -> dict:
        return {**super().config(), **{k: v for k, v in self._source.config().items() if k == "eot"}}

    def run(self, oracle, x, goal, threat, rng):
        rows = torch.arange(len(x))
        _, g, _ = self._source.value_and_grad(oracle, x, rows, goal, get_loss(self.loss), rng)
        return ascent_step(x, g, threat.epsilon, threat.norm)


@register
class TargetedFGSM(Attack):
    """One targeted signed-gradient step towards each other class, the likeliest first, until one lands.

    For a class ``t`` the step climbs ``z_t - max_{o != t} z_o``; at a correctly classified input that is ``z_t - z_y``.
    On a linear model under Linf this objective is separable by coordinate, so ``clip(x + eps * sign(grad))`` (the
    step, projected on the box by the harness) is its exact maximum over the ball and the box: trying every class
    decides the sample exactly. An untargeted margin attack chases the currently strongest wrong class instead,
    which need not be the one reachable within epsilon and the box. Per sample and class: one gradient and one check
    (two queries); rows stop at their first success. A targeted goal takes the one step towards it."""

    name = "fgsm-targets"
    family = "gradient"
    requires = Capability.GRADIENTS
    summary = "a targeted signed-gradient step towards each other class, likeliest first (exact on linear models, Linf)"

    def __init__(self, *, targets: int = 99, eot: int = 1):
        if targets < 1:
            raise ValueError("targets must be >= 1")
        self.targets = targets
        self._source = Autograd(eot=eot)

    def config(self) -> dict:
        return {**super().config(), "targets": self.targets,
                **{k: v for k, v in self._source.config().items() if k == "eot"}}

    def run(self, oracle, x, goal, threat, rng):
        margin = get_loss("margin")
        rows = torch.arange(len(x))
        if goal.targeted:
            _, g, _ = self._source.value_and_grad(oracle, x, rows, goal, margin, rng)
            return ascent_step(x, g, threat.epsilon, threat.norm)
        bounds = oracle.target.bounds
        z0 = oracle.logits(x, rows)
        k = z0.shape[1]
        ranked = z0.masked_fill(torch.nn.functional.one_hot(goal.labels, k).bool(), float("-inf")).argsort(
            dim=1, descending=True)
        best = x.clone()
        best_margin = torch.full((len(x),), float("-inf"), device=x.device)
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for j in range(min(self.targets, k - 1)):
            act = (~done).nonzero().squeeze(1)
            if not len(act):
                break
            to = Goal(ranked[act, j], True)
            _, g, _ = self._source.value_and_grad(oracle, x[act], rows[act.cpu()], to, margin, rng)
            cand = threat.project(ascent_step(x[act], g, threat.epsilon, threat.norm), x[act], bounds)
            z = oracle.logits(cand, rows[act.cpu()]).to(x.device)
            m = get_loss("margin")(z.float(), Goal(goal.labels[act], False))
            m = torch.where(torch.isnan(m), torch.full_like(m, float("-inf")), m)
            better = m > best_margin[act]
            best[act[better]] = cand[better]
            best_margin[act[better]] = m[better]
            done[act[m > 0]] = True
        return best
