"""Gradient sources: where a gradient attack gets its gradient from.

A gradient attack (FGSM, PGD, ...) is written once and takes a source: exact autograd for white-box targets,
or a zeroth-order estimate from score queries (NES with antithetic Gaussian directions, SPSA with Rademacher
directions) for black boxes. Every query goes through the :class:`~robustbench_cli.targets.base.Oracle`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import torch

from robustbench_cli.attacks.base import Goal
from robustbench_cli.attacks.rng import SampleRng
from robustbench_cli.targets.base import Capability, Oracle

LossFn = Callable[[torch.Tensor, Goal], torch.Tensor]


class GradientSource(ABC):
    name: ClassVar[str]
    requires: ClassVar[Capability]

    def queries_per_step(self, x: torch.Tensor) -> int:
        """Model calls per sample for one gradient at inputs shaped like ``x``."""
        return 1

    def config(self) -> dict:
        return {"source": self.name, **{k: v for k, v in vars(self).items() if not k.startswith("_")}}

    @abstractmethod
    def value_and_grad(self, oracle: Oracle, x: torch.Tensor, rows: torch.Tensor, goal: Goal, loss_fn: LossFn,
                       rng: SampleRng) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss per row at ``x``, its gradient (estimate) and the logit-like scores at ``x``."""


class Autograd(GradientSource):
    """Exact gradient by backpropagation (white-box targets).

    ``eot``: Expectation over Transformation (Athalye, Engstrom, Ilyas & Kwok 2018, "Synthesizing Robust
    Adversarial Examples"; Athalye, Carlini & Wagner 2018, "Obfuscated Gradients Give a False Sense of Security"):
    for a randomised model, the loss, its gradient and the scores are averaged over ``eot`` forward/backward passes,
    each drawing the model's own randomness and each counted by the oracle as one query per row. One pass at a time,
    so memory does not grow with ``eot``; ``eot=1`` is the plain gradient.
    """

    name = "autograd"
    requires = Capability.GRADIENTS

    def __init__(self, *, eot: int = 1):
        if eot < 1:
            raise ValueError("eot must be >= 1")
        self.eot = eot

    def queries_per_step(self, x: torch.Tensor) -> int:
        return self.eot

    def config(self) -> dict:
        # eot=1 is left out, so that reports without EOT stay comparable with those written before it existed
        return {"source": self.name, **({"eot": self.eot} if self.eot > 1 else {})}

    def value_and_grad(self, oracle, x, rows, goal, loss_fn, rng):
        x = x.detach()
        loss_sum = grad_sum = z_sum = None
        for _ in range(self.eot):
            xr = x.clone().requires_grad_(True)
            with torch.enable_grad():
                z = oracle.forward(xr, rows)
                loss = loss_fn(z, goal)
                (grad,) = torch.autograd.grad(loss.sum(), xr)
            loss, grad, z = loss.detach(), grad.detach(), z.detach()
            if loss_sum is None:
                loss_sum, grad_sum, z_sum = loss, grad, z
            else:
                loss_sum, grad_sum, z_sum = loss_sum + loss, grad_sum + grad, z_sum + z
        if self.eot == 1:
            return loss_sum, grad_sum, z_sum
        return loss_sum / self.eot, grad_sum / self.eot, z_sum / self.eot


class _ZerothOrder(GradientSource):
    requires = Capability.SCORES

    def __init__(self, *, samples: int = 50, sigma: float = 1e-3, max_rows: int = 8192):
        if samples < 1 or sigma <= 0:
            raise ValueError("samples must be >= 1 and sigma > 0")
        self.samples = samples
        self.sigma = sigma
        self._max_rows = max_rows

    def queries_per_step(self, x: torch.Tensor) -> int:
        return 2 * self.samples + 1

    @abstractmethod
    def _directions(self, rng: SampleRng, rows, shape) -> torch.Tensor:
        """Random directions, (rows, *shape): Gaussian for NES, Rademacher signs for SPSA."""

    def value_and_grad(self, oracle, x, rows, goal, loss_fn, rng):
        n, q = len(x), self.samples
        per = max(1, self._max_rows // (2 * q + 1))
        losses, grads, zs = [], [], []
        for s in range(0, n, per):
            xs, rs = x[s : s + per], rows[s : s + per]
            m = len(xs)
            u = self._directions(rng, rs.tolist(), (q, *x.shape[1:])).to(x.device)  # (m, q, ...)
            probes = torch.cat([xs[:, None], xs[:, None] + self.sigma * u, xs[:, None] - self.sigma * u], dim=1)
            owner = rs.repeat_interleave(2 * q + 1)
            z = oracle.logits(probes.flatten(0, 1), owner).view(m, 2 * q + 1, -1)
            g = goal.subset(slice(s, s + per))
            lab = g.labels.repeat_interleave(2 * q + 1)
            loss = loss_fn(z.flatten(0, 1), Goal(lab, g.targeted)).view(m, 2 * q + 1)
            diff = (loss[:, 1 : q + 1] - loss[:, q + 1 :]) / (2 * self.sigma)  # (m, q)
            grad = (diff.view(m, q, *[1] * (x.dim() - 1)) * u).mean(dim=1)
            grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)  # rows out of budget: no step
            losses.append(loss[:, 0])
            grads.append(grad)
            zs.append(z[:, 0])
        return torch.cat(losses), torch.cat(grads), torch.cat(zs)


class NES(_ZerothOrder):
    """Natural Evolution Strategies estimate (Ilyas et al. 2018): antithetic Gaussian directions."""

    name = "nes"

    def _directions(self, rng, rows, shape):
        return rng.normal(shape, rows)


class SPSA(_ZerothOrder):
    """Simultaneous Perturbation Stochastic Approximation (Spall 1992; Uesato et al. 2018): Rademacher directions."""

    name = "spsa"

    def __init__(self, *, samples: int = 50, sigma: float = 1e-2, max_rows: int = 8192):
        super().__init__(samples=samples, sigma=sigma, max_rows=max_rows)

    def _directions(self, rng, rows, shape):
        return rng.rademacher(shape, rows)


class FiniteDifferences(GradientSource):
    """Central finite differences, one coordinate at a time: ``2 d + 1`` queries a step for ``d`` input values.

    Exact up to O(sigma^2) and free of sampling noise, but its cost grows with the input size: meant for small
    inputs (tabular data, 8x8 digits); the attack using it refuses inputs larger than ``max_dim``.
    """

    name = "fd"
    requires = Capability.SCORES

    def __init__(self, *, sigma: float = 1e-3, max_dim: int = 4096, max_rows: int = 8192):
        if sigma <= 0 or max_dim < 1:
            raise ValueError("sigma must be > 0 and max_dim >= 1")
        self.sigma = sigma
        self.max_dim = max_dim
        self._max_rows = max_rows

    def queries_per_step(self, x: torch.Tensor) -> int:
        return 2 * x[0].numel() + 1

    def value_and_grad(self, oracle, x, rows, goal, loss_fn, rng):
        n, d = len(x), x[0].numel()
        eye = torch.eye(d, device=x.device, dtype=x.dtype).view(d, *x.shape[1:])
        per = max(1, self._max_rows // (2 * d + 1))
        losses, grads, zs = [], [], []
        for s in range(0, n, per):
            xs, rs = x[s : s + per], rows[s : s + per]
            m = len(xs)
            probes = torch.cat([xs[:, None], xs[:, None] + self.sigma * eye, xs[:, None] - self.sigma * eye], dim=1)
            z = oracle.logits(probes.flatten(0, 1), rs.repeat_interleave(2 * d + 1)).view(m, 2 * d + 1, -1)
            g = goal.subset(slice(s, s + per))
            loss = loss_fn(z.flatten(0, 1), Goal(g.labels.repeat_interleave(2 * d + 1), g.targeted)).view(m, 2 * d + 1)
            grad = ((loss[:, 1 : d + 1] - loss[:, d + 1 :]) / (2 * self.sigma)).view(m, *x.shape[1:])
            grads.append(torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0))
            losses.append(loss[:, 0])
            zs.append(z[:, 0])
        return torch.cat(losses), torch.cat(grads), torch.cat(zs)


SOURCES = {"autograd": Autograd, "nes": NES, "spsa": SPSA, "fd": FiniteDifferences}
