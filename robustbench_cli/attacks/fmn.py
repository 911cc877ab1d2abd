"""FMN: the Fast Minimum-Norm attack (Pintor, Roli, Brendel & Biggio, NeurIPS 2021, "Fast Minimum-norm Adversarial
Attacks through Adaptive Norm Constraints"), Linf and L2, untargeted and targeted.

A minimum-norm attack: it looks for the *smallest* perturbation that reaches the goal, not for any perturbation
inside a fixed epsilon. Per sample it keeps a radius ``eps_k`` and a perturbation ``delta`` (starting at 0) and
runs, for ``k = 0 .. steps - 1``, on the logit margin ``L`` (own class minus the best other one; for a targeted
goal the best other class minus the target, so that ``L < 0`` means the goal is reached)::

    g       = -grad L(x0 + delta)
    if x0 + delta reaches the goal:  keep delta if it is the smallest so far (delta*);
                                     eps_k = min(eps_{k-1} (1 - gamma_k), ||delta*||)
    elif none was found yet:         eps_k = ||delta|| + |L| / ||g||_dual     (the linearised boundary distance)
    else:                            eps_k = eps_{k-1} (1 + gamma_k)
    delta = delta + alpha_k g / ||g||_2
    delta = projection onto the eps_k ball, then onto the input box

with the dual norm L1 for Linf and L2 for L2, and ``gamma_k``, ``alpha_k`` cosine-annealed from ``gamma0``,
``alpha0`` to ``gamma_final``, ``alpha_final``. The step is along the L2-normalised gradient for both norms, as in
the paper; eps is capped at the largest distance the box allows.

Returned candidate per sample: the smallest-norm point that reached the goal (not clipped to the threat's
epsilon: the harness projects it and verifies it), or, when none did, the last iterate.

Defaults: 100 steps (foolbox's default; the paper's experiments run more, up to 1,000), ``alpha0 = 1``,
``alpha_final = alpha0 / 100``, ``gamma0 = 0.05``, ``gamma_final = 0.001`` (the values of the authors' foolbox
implementation), ``targets = 0``. The paper's optional warm start from an adversarial point (with a binary search
towards the input) is not offered: the attack always starts at the clean input, so it has no ``init_eps``.

``targets = k`` (untargeted goals only): instead of the single untargeted run, run FMN targeted at each of the
``k`` classes with the highest clean scores (one ranking query per sample), as AutoAttack does for FAB-T and
APGD-T, and keep the smallest point that leaves the label over all runs. The untargeted run follows the class that
is the runner-up along its path and can end on that class's boundary when another class is closer: on a
4-class linear model it ends up to 30% above the exact minimum for about 1 sample in 10, and ``targets = 3`` makes
every sample exact. It costs ``k`` times the queries.

Deviations from the paper:

- Coordinates pinned to the input box that the gradient pushes further out are left out of the step and of the
  boundary estimate ``|L| / ||g||_dual``, which otherwise counts directions the box forbids. Without this, an
  iterate held by the box can hover just short of the boundary and never cross it.
- Before the first adversarial, the boundary estimate is overshot by ``(1 + gamma_k)``: on an exactly linear
  model it lands on the boundary itself, and rounding can leave every later iterate a hair short of it.
- One more evaluation after the last step (a forward pass, no gradient): the paper never looks at the final
  iterate, which is the most refined one. So a run spends ``steps + 1`` queries per sample.
- Every judgement of "reached" uses the model's own forward pass (``Oracle.forward``), never a faster stand-in,
  because the best points sit right at the decision boundary, where two routes may disagree.
- L1 and L0, which the paper also covers, are not offered (the threat models here are Linf and L2).

House rules: ``stop_at_epsilon=True`` (for cascades) stops a sample as soon as it holds a point inside the threat's
epsilon that reaches the goal, and returns it, since only breaks inside the ball count there. A row that cannot pay
for its next evaluation stops and returns its best point (as APGD does). The attack is deterministic (no random
start), so it draws nothing from the sample streams; no final refinement is needed to be within 1% of the exact
minimum on linear models (tests/test_fmn.py).

Example::

    robust scan model.pt --data mnist:test --threat linf:0.1 --threat l2:1.5 --attacks fmn
"""

from __future__ import annotations

import math

import torch

from robustbench_cli.attacks.base import Attack, Goal, likeliest_wrong_classes, register
from robustbench_cli.attacks.gradients import Autograd
from robustbench_cli.attacks.losses import margin
from robustbench_cli.core.threat_model import Norm
from robustbench_cli.targets.base import Capability


def _view(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (x.dim() - 1)))


def _norm(d: torch.Tensor, norm: Norm) -> torch.Tensor:
    d = d.flatten(1)
    return d.abs().amax(dim=1) if norm is Norm.LINF else d.norm(p=2, dim=1)


def _dual_norm(g: torch.Tensor, norm: Norm) -> torch.Tensor:
    g = g.flatten(1)
    return g.abs().sum(dim=1) if norm is Norm.LINF else g.norm(p=2, dim=1)


def _project(x: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, norm: Norm, bounds) -> torch.Tensor:
    """Onto the ball of per-sample radius ``eps`` around ``x0``, then onto the input box."""
    d = x - x0
    e = _view(eps, d)
    if norm is Norm.LINF:
        d = torch.maximum(torch.minimum(d, e), -e)
    else:
        n = _view(d.flatten(1).norm(p=2, dim=1).clamp_min(1e-12), d)
        d = d * torch.clamp(e / n, max=1.0)
    return (x0 + d).clamp(*bounds)


def cosine(start: float, end: float, k: int, steps: int) -> float:
    """Cosine annealing from ``start`` (k = 0) towards ``end`` (k = steps)."""
    return end + (start - end) * (1 + math.cos(math.pi * k / steps)) / 2


@register
class FMN(Attack):
    name = "fmn"
    family = "gradient"
    requires = Capability.GRADIENTS
    minimum_norm = True
    summary = "Fast Minimum-Norm: the smallest perturbation found, with an adaptive epsilon (Pintor et al. 2021)"

    def __init__(self, *, steps: int = 100, alpha0: float = 1.0, alpha_final: float | None = None,
                 gamma0: float = 0.05, gamma_final: float = 0.001, targets: int = 0, stop_at_epsilon: bool = False):
        for what, v in (("steps", steps), ("targets", targets)):
            if not isinstance(v, int) or isinstance(v, bool) or v < (1 if what == "steps" else 0):
                raise ValueError(f"{what} must be an integer >= {1 if what == 'steps' else 0}, got {v!r}")
        alpha_final = alpha0 / 100 if alpha_final is None else alpha_final
        for what, value in (("alpha0", alpha0), ("alpha_final", alpha_final), ("gamma0", gamma0),
                            ("gamma_final", gamma_final)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{what} must be a finite number > 0, got {value!r}")
        if alpha_final > alpha0:
            raise ValueError(f"alpha_final ({alpha_final}) must not exceed alpha0 ({alpha0})")
        if not gamma_final <= gamma0 < 1:
            raise ValueError(f"need 0 < gamma_final <= gamma0 < 1, got gamma0={gamma0}, gamma_final={gamma_final}")
        if not isinstance(stop_at_epsilon, bool):
            raise TypeError(f"stop_at_epsilon must be true or false, got {stop_at_epsilon!r}")
        self.steps = steps
        self.alpha0 = float(alpha0)
        self.alpha_final = float(alpha_final)
        self.gamma0 = float(gamma0)
        self.gamma_final = float(gamma_final)
        self.targets = targets
        self.stop_at_epsilon = stop_at_epsilon
        self._source = Autograd()

    def _passes(self, oracle, x0, goal) -> list[Goal]:
        """The goal each pass pursues: the harness's goal, or (``targets`` > 0, untargeted) each of the most likely
        wrong classes at the clean input in turn, ranked with one query per sample."""
        if goal.targeted or self.targets == 0:
            return [goal]
        k = oracle.num_classes
        ranked = likeliest_wrong_classes(oracle, x0, goal, module=True)
        return [Goal(ranked[:, j], True) for j in range(min(self.targets, k - 1))]

    def run(self, oracle, x0, goal, threat, rng):
        n, dev = len(x0), x0.device
        out = x0.clone()  # the candidates: the smallest point reaching the goal over all passes, else a last iterate
        cand_norm = torch.full((n,), math.inf, device=dev)
        cand_found = torch.zeros(n, dtype=torch.bool, device=dev)
        for pass_goal in self._passes(oracle, x0, goal):
            todo = torch.ones_like(cand_found)
            if self.stop_at_epsilon:  # rows that already hold a break inside the ball are done
                todo &= ~(cand_found & (cand_norm <= threat.epsilon))
            if oracle.budget is not None:  # a row with nothing left keeps what earlier passes gave it
                todo &= (oracle.remaining() >= 1).to(x0.device)
            act = todo.nonzero().squeeze(1)
            if len(act):
                self._search(oracle, x0, goal, pass_goal, threat, rng, act, out, cand_norm, cand_found)
        return out

    def _search(self, oracle, x0, goal, pass_goal, threat, rng, act, out, cand_norm, cand_found) -> None:
        """One FMN run from the clean input on the rows ``act``, pursuing ``pass_goal``. Any point that reaches
        ``goal`` (implied by ``pass_goal``) and is the closest so far becomes the row's candidate in ``out``."""
        norm, bounds = threat.norm, oracle.target.bounds
        lo, hi = bounds
        dev = x0.device
        m = len(act)
        # per-sample state of the rows still running, compacted together as rows leave
        rows = act.cpu()
        x0a = x0[act]
        x = x0a.clone()
        rg, pg = goal.subset(act), pass_goal.subset(act)
        eps = torch.zeros(m, device=dev)
        best_norm = torch.full((m,), math.inf, device=dev)  # the smallest point reaching pass_goal: it steers eps
        found = torch.zeros(m, dtype=torch.bool, device=dev)
        worst = _norm(torch.maximum(x0a - lo, hi - x0a), norm)  # no point in the box is farther than this

        def leave(mask: torch.Tensor) -> None:
            """Rows in ``mask`` stop; a row that never reached the goal in any pass keeps its last iterate."""
            sel = mask & ~cand_found[act]
            out[act[sel]] = x[sel]

        def keep_rows(keep: torch.Tensor) -> None:
            nonlocal act, rows, x0a, x, rg, pg, eps, best_norm, found, worst
            act, rows, x0a, x = act[keep], rows[keep.cpu()], x0a[keep], x[keep]
            rg, pg = rg.subset(keep), pg.subset(keep)
            eps, best_norm, found, worst = eps[keep], best_norm[keep], found[keep], worst[keep]

        for k in range(self.steps + 1):
            if oracle.budget is not None:  # rows that cannot pay for this evaluation stop with their best point
                afford = (oracle.remaining(rows) >= 1).to(dev)
                if not bool(afford.all()):
                    leave(~afford)
                    keep_rows(afford)
                    if not len(act):
                        return
            last = k == self.steps
            if last:  # the final iterate is only judged: the module's own forward pass, no gradient
                with torch.no_grad():
                    z = oracle.forward(x, rows)
                loss, g = margin(z, pg), None
            else:
                loss, g, z = self._source.value_and_grad(oracle, x, rows, pg, margin, rng)
                g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
                # coordinates pinned to the box that the gradient pushes further out cannot move: leave them out
                # of the step and of the boundary estimate (the paper's estimate ignores the box)
                g = torch.where(((x <= lo) & (g < 0)) | ((x >= hi) & (g > 0)), torch.zeros_like(g), g)
            pred, finite = z.argmax(dim=1), torch.isfinite(z).all(dim=1)
            reached = pg.reached(pred) & finite
            dist = _norm(x - x0a, norm)
            # the candidate: any point reaching the harness's goal that is the closest so far, whatever the pass
            better = rg.reached(pred) & finite & (dist <= cand_norm[act])
            if bool(better.any()):
                out[act[better]] = x[better]
                cand_norm[act[better]] = dist[better]
                cand_found[act[better]] = True
            best_norm = torch.where(reached & (dist <= best_norm), dist, best_norm)
            found = found | reached
            if self.stop_at_epsilon:  # a cascade only needs a break inside the ball
                done = cand_found[act] & (cand_norm[act] <= threat.epsilon)
                if bool(done.any()):
                    keep = ~done
                    keep_rows(keep)
                    reached, dist, loss = reached[keep], dist[keep], loss[keep]
                    g = g[keep] if g is not None else None
                    if not len(act):
                        return
            if last:
                break
            assert g is not None  # every step but the last computes the gradient

            gamma = cosine(self.gamma0, self.gamma_final, k, self.steps)
            alpha = cosine(self.alpha0, self.alpha_final, k, self.steps)
            # |L| / ||grad||_dual: how far the boundary is if the model were linear around x; overshot by gamma so
            # that an exactly linear model does not leave the iterate a rounding error short of the boundary
            to_boundary = loss.abs() / _dual_norm(g, norm).clamp_min(1e-12)
            eps = torch.where(reached, torch.minimum(eps * (1 - gamma), best_norm),
                              torch.where(found, eps * (1 + gamma), (dist + to_boundary) * (1 + gamma)))
            eps = torch.minimum(eps, worst)
            step = g / _view(g.flatten(1).norm(p=2, dim=1).clamp_min(1e-12), g)
            x = _project(x + alpha * step, x0a, eps, norm, bounds)

        leave(torch.ones(len(act), dtype=torch.bool, device=dev))
