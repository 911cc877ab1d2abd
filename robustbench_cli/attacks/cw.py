"""Penalty attacks: trade closeness to the clean image against reaching the goal, and search the trade-off.

``lecture`` is the targeted attack of the lecture notes behind this project, in their words: find x close to the
source image x0 that the model classifies as the chosen target class by minimising

    L(x) = 1/2 ||softmax(f(x)) - onehot(target)||^2 + lambda ||x - x0||^2

over x (the "cat that the network calls an iguana"). ``cw-l2`` is its stronger relative, the Carlini-Wagner L2
attack (Carlini & Wagner 2017, "Towards Evaluating the Robustness of Neural Networks"): minimise
``||x - x0||^2 + c * max(max_{j != t} z_j - z_t, -kappa)`` on the logits z.

Both optimise x with Adam, projected back into the input box after every step (the paper's tanh change of
variables stalls on the saturated 0/1 pixels of MNIST-like images), and run a per-sample binary search over the
trade-off: a sample that reached its goal tries a weaker push towards it
(larger lambda, smaller c: a closer point), one that did not tries a stronger one. Every iterate that reaches the
goal is a candidate; the closest (in the threat's norm) is returned, and the harness projects it onto the epsilon
ball and re-checks it.

In an untargeted scan (the goal is to leave the label), ``lecture`` aims at the runner-up class of the clean input
and ``cw-l2`` pushes the label's logit below the best other one.

``eot=N`` (both): each Adam step's gradient is averaged over N draws of a randomised model (EOT, Athalye et al.
2018), N queries a step; the candidate check uses the mean scores.

Defaults: ``lecture``: lambda starts at 1.0, 6 search steps of 100 Adam steps (lr 0.05; its softmax loss has small gradients). ``cw-l2``: c starts at
1.0, 6 search steps of 100 Adam steps (lr 0.01), kappa 0.

Example::

    robust scan net.py:Net --weights net.pt --data mnist:test --threat l2:2 --targeted 3 --attacks lecture,cw-l2
"""

from __future__ import annotations

import math
from abc import abstractmethod

import torch
import torch.nn.functional as F

from robustbench_cli.attacks.base import Attack, Goal, register
from robustbench_cli.targets.base import Capability


class _PenaltySearch(Attack):
    """Minimise ``dist^2 + c * goal_loss`` per sample, with a binary search over ``c`` (the goal's weight)."""

    family = "gradient"
    requires = Capability.GRADIENTS

    def __init__(self, *, steps: int = 100, search_steps: int = 6, lr: float = 0.01, const: float = 1.0,
                 eot: int = 1):
        if steps < 1 or search_steps < 1 or lr <= 0 or const <= 0:
            raise ValueError("steps and search_steps must be >= 1, lr and the initial constant > 0")
        if eot < 1:
            raise ValueError("eot must be >= 1")
        self.steps = steps
        self.search_steps = search_steps
        self.lr = lr
        self._const = const
        self._eot = eot

    def config(self) -> dict:
        return {**super().config(), **({"eot": self._eot} if self._eot > 1 else {})}  # eot=1 left out, as in Autograd

    @abstractmethod
    def _goal_loss(self, z: torch.Tensor, goal: Goal) -> torch.Tensor:
        """Per-sample loss to minimise, small once the goal is met."""

    def _aim(self, oracle, x0: torch.Tensor, goal: Goal) -> Goal:
        return goal

    def run(self, oracle, x0, goal, threat, rng):
        n, dev = len(x0), x0.device
        lo, hi = oracle.target.bounds
        aim = self._aim(oracle, x0, goal)
        c = torch.full((n,), self._const, device=dev)
        c_lo = torch.zeros(n, device=dev)
        c_hi = torch.full((n,), math.inf, device=dev)
        best = x0.clone()
        best_d = torch.full((n,), math.inf, device=dev)
        for _ in range(self.search_steps):
            act = (oracle.remaining() >= self.steps * self._eot).nonzero().squeeze(1)  # rows that can pay for a round
            if not len(act):
                break
            rows, a = act, act.to(dev)
            x = x0[a].clone().requires_grad_(True)
            opt = torch.optim.Adam([x], lr=self.lr)
            reached_round = torch.zeros(len(a), dtype=torch.bool, device=dev)
            x0a, ga, ca = x0[a], aim.subset(a), c[a]
            for _ in range(self.steps):
                opt.zero_grad()
                zd = None
                for _ in range(self._eot):  # EOT: gradients of the draws add up in x.grad, one graph at a time
                    with torch.enable_grad():
                        z = oracle.forward(x, rows)
                        dist2 = (x - x0a).pow(2).flatten(1).sum(dim=1)
                        loss = dist2 + ca * self._goal_loss(z, ga)
                        (loss.sum() / self._eot).backward()
                    zd = z.detach() if zd is None else zd + z.detach()
                xd, zd = x.detach(), zd / self._eot
                hit = goal.subset(a).reached(zd.argmax(dim=1))  # the scan's goal decides what counts
                d = threat.distance(xd, x0a)
                closer = hit & (d < best_d[a])
                if bool(closer.any()):
                    best[a[closer]] = xd[closer]
                    best_d[a[closer]] = d[closer]
                reached_round |= hit
                opt.step()
                with torch.no_grad():
                    x.clamp_(lo, hi)  # projected Adam: the iterate stays in the input box
            # binary search on the goal's weight: reached -> weaker push (closer), not reached -> stronger
            c_hi[a] = torch.where(reached_round, torch.minimum(c_hi[a], ca), c_hi[a])
            c_lo[a] = torch.where(reached_round, c_lo[a], torch.maximum(c_lo[a], ca))
            bisect = torch.isfinite(c_hi[a])
            grown = torch.where(bisect, (c_lo[a] + c_hi[a]) / 2, ca * 10)
            shrunk = torch.where(c_lo[a] > 0, (c_lo[a] + c_hi[a]) / 2, ca / 10)
            c[a] = torch.where(reached_round, shrunk, grown)
        return best


@register
class Lecture(_PenaltySearch):
    name = "lecture"
    summary = "the lecture's targeted attack: 1/2||softmax(f(x)) - onehot(t)||^2 + lambda||x - x0||^2, lambda searched"

    def __init__(self, *, steps: int = 100, search_steps: int = 6, lr: float = 0.05, lam: float = 1.0, eot: int = 1):
        if lam <= 0:
            raise ValueError("lam must be > 0")
        super().__init__(steps=steps, search_steps=search_steps, lr=lr, const=1.0 / lam, eot=eot)
        self.lam = lam

    def _aim(self, oracle, x0, goal):
        if goal.targeted:
            return goal
        # untargeted: aim at the runner-up class of the clean input (one counted query per sample)
        z = oracle.scores(x0)
        runner_up = z.scatter(1, goal.labels[:, None], float("-inf")).argmax(dim=1)
        return Goal(runner_up.to(x0.device), True)

    def _goal_loss(self, z, goal):
        # dividing the objective by lambda leaves its minimiser unchanged: dist^2 + (1/lambda) * 1/2||p - onehot||^2
        p = F.softmax(z, dim=1)
        onehot = F.one_hot(goal.labels, p.shape[1]).to(p.dtype)
        return 0.5 * (p - onehot).pow(2).sum(dim=1)


@register
class CWL2(_PenaltySearch):
    name = "cw-l2"
    summary = "Carlini-Wagner L2: ||x - x0||^2 + c * margin loss on logits, c searched (Carlini & Wagner 2017)"

    def __init__(self, *, steps: int = 100, search_steps: int = 6, lr: float = 0.01, c: float = 1.0,
                 kappa: float = 0.0, eot: int = 1):
        if kappa < 0:
            raise ValueError("kappa must be >= 0")
        super().__init__(steps=steps, search_steps=search_steps, lr=lr, const=c, eot=eot)
        self.c = c
        self.kappa = kappa

    def _goal_loss(self, z, goal):
        own = z.gather(1, goal.labels[:, None]).squeeze(1)
        other = z.scatter(1, goal.labels[:, None], float("-inf")).amax(dim=1)
        gap = other - own if goal.targeted else own - other
        return gap.clamp_min(-self.kappa)
