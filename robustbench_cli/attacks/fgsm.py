"""FGSM: the fast gradient sign method (Goodfellow, Shlens & Szegedy 2015, "Explaining and Harnessing
Adversarial Examples"). One step of size epsilon up the loss: ``x + eps * sign(grad)`` for Linf, the unit
gradient (FGM) for L2. ``eot=N`` averages the gradient over N draws of a randomised model (EOT, see
:class:`~robustbench_cli.attacks.gradients.Autograd`).

Example::

    robust scan model.py:Net --weights net.pt --data mnist --eps 0.1 --attacks fgsm
"""

from __future__ import annotations

import torch

from robustbench_cli.attacks.base import Attack, register
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
