"""Ground truth and black-box stubs for linear classifiers, shared by the exact-linear and black-box tests.

- :func:`exact_min_linf`: the smallest Linf perturbation (inside the [0,1] box) that flips a multiclass linear
  classifier, computed exactly.
- :func:`exact_min_l2_binary`: the L2 distance to the boundary of a two-class linear classifier (the box ignored:
  callers check that the nearest boundary point lies inside it, see :func:`nearest_boundary_point_binary`).
- :class:`CountingTarget`: a score-only black box around a ``torch.nn.Linear`` that counts every input row the
  model actually receives (no gradients: the harness must treat it like an ONNX file).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from robustbench_cli.core.data import EvalSet
from robustbench_cli.targets.base import Capability, Target


def exact_min_linf(W: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Smallest eps such that some class j beats y inside ball(x, eps) and the box; inf if impossible.

    For class j the best perturbation moves each coordinate towards the sign of a = w_j - w_y as far as eps and
    the box allow, so the gain g(eps) = sum_i |a_i| min(eps, room_i) is piecewise linear and increasing; we invert
    it exactly between its breakpoints (the sorted rooms).
    """
    out = np.full(len(x), np.inf)
    for s in range(len(x)):
        for j in range(W.shape[0]):
            if j == y[s]:
                continue
            a = W[j] - W[y[s]]
            need = -(a @ x[s] + b[j] - b[y[s]])  # margin to overcome
            if need <= 0:
                out[s] = 0.0
                continue
            room = np.where(a > 0, 1 - x[s], x[s])
            order = np.argsort(room)
            room_sorted, w_sorted = room[order], np.abs(a)[order]
            gained, prev = 0.0, 0.0
            slope = w_sorted.sum()  # coordinates not yet saturated
            for r, w in zip(room_sorted, w_sorted):
                # on [prev, r] the gain grows with slope
                if gained + slope * (r - prev) >= need:
                    out[s] = min(out[s], prev + (need - gained) / slope)
                    break
                gained += slope * (r - prev)
                slope -= w
                prev = r
    return out


def exact_min_l2_binary(W: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """L2 distance from each row of ``x`` to the hyperplane where the two logits tie (the box ignored)."""
    a, c = W[1] - W[0], b[1] - b[0]
    return np.abs(x @ a + c) / np.linalg.norm(a)


def nearest_boundary_point_binary(W: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The orthogonal projection of each row of ``x`` onto the two-class boundary."""
    a, c = W[1] - W[0], b[1] - b[0]
    return x - ((x @ a + c) / (a @ a))[:, None] * a[None, :]


def linear_module(W: np.ndarray, b: np.ndarray) -> nn.Linear:
    lin = nn.Linear(W.shape[1], W.shape[0])
    with torch.no_grad():
        lin.weight.copy_(torch.as_tensor(W, dtype=torch.float32))
        lin.bias.copy_(torch.as_tensor(b, dtype=torch.float32))
    return lin.eval()


def random_linear_problem(n: int, d: int, k: int, seed: int, *, lo: float = 0.0, hi: float = 1.0, bias: float = 0.5,
                          scale: float = 1.0):
    """Random weights, uniform inputs in [lo, hi]^d, labels = the model's own predictions (clean accuracy 1).

    The bias centres every class on the middle of the box (plus noise of size ``bias``), so the classes are
    roughly balanced and every sample has neighbours of other classes.
    """
    rng = np.random.default_rng(seed)
    W = (scale * rng.normal(size=(k, d))).astype(np.float32)
    b = (-W.astype(np.float64) @ np.full(d, (lo + hi) / 2) + rng.normal(scale=bias, size=k)).astype(np.float32)
    x = rng.uniform(lo, hi, size=(n, d)).astype(np.float32)
    y = (x.astype(np.float64) @ W.T.astype(np.float64) + b).argmax(axis=1).astype(np.int64)
    data = EvalSet(x=x, y=y, ids=np.arange(n), name=f"linear-{seed}")
    return W, b, data


class CountingTarget(Target):
    """A score-only black box around a linear layer that counts the rows its model receives."""

    kind = "stub"
    capabilities = Capability.LABELS | Capability.SCORES

    def __init__(self, module: nn.Module, num_classes: int, *, name: str = "stub", batch_size: int = 256):
        super().__init__(name, batch_size=batch_size)
        self.module = module.eval()
        self.num_classes = num_classes
        self.rows = 0  # every input row the model has been asked about
        self.calls = 0

    def _scores_batch(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += len(x)
        self.calls += 1
        with torch.no_grad():
            return self.module(x.reshape(len(x), -1).float())
