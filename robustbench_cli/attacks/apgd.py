"""APGD: Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks"), Linf and L2, with the cross-entropy (``apgd-ce``) or the DLR loss (``apgd-dlr``).

PGD with a step size that needs no tuning. It starts at ``eta = 2 * eps`` and takes momentum steps::

    z_{k+1} = P(x_k + eta * s(grad f(x_k)))
    x_{k+1} = P(x_k + alpha * (z_{k+1} - x_k) + (1 - alpha) * (x_k - x_{k-1}))      (alpha = 0.75)

where ``s`` is the sign for Linf and the unit gradient for L2, and the first step is the plain ``x_1 = z_1``.
At the checkpoints ``w_j = ceil(p_j * steps)`` with ``p_0 = 0``, ``p_1 = 0.22`` and
``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` (for 100 steps: 0, 22, 41, 57, 70, 80, 87, 93, 99), a
sample halves its step size and restarts from its best point (highest loss so far) when

1. fewer than ``rho = 0.75`` of its steps since the last checkpoint increased the loss, or
2. its step size was not reduced at the last checkpoint and its best loss has not improved since.

All of this is per sample (step size, counters, best point). The DLR loss is
``-(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3 + 1e-12)`` with the scores sorted in decreasing order; the targeted
version is ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)``.

House rules, as in :mod:`pgd`: samples leave the batch as soon as an iterate reaches the goal (that iterate is
the candidate); a sample that cannot pay for the next forward/backward stops and returns its best point; the
random start draws from the sample's own stream, so results do not depend on the batch size.

Deviations from the paper:

- DLR needs 3 classes (4 targeted); with fewer the Carlini-Wagner margin loss is used instead (it is the DLR
  numerator, without the scale normalisation that needs the third and fourth scores).
- Targeted DLR: the attack sees only the target class ``t``, not the true label, so ``z_y`` is the largest
  non-target score (it equals ``z_y`` at the clean point, and reaching ``t`` means beating every other class).
- Restarts (``restarts > 1``) run from fresh random starts for samples not yet broken; the candidate of an
  unbroken sample is its best point over all restarts.

Defaults: 100 steps, one restart, rho 0.75, momentum 0.75, random start (uniform in the ball); ``eot=N`` averages
each gradient over N draws of a randomised model (EOT, Athalye et al. 2018), N queries a step.

Example::

    robust scan model.pt --data cifar10 --eps 8/255 --attacks apgd-ce,apgd-dlr
"""

from __future__ import annotations

import torch

from robustbench_cli.attacks.base import Attack, Goal, likeliest_wrong_classes, register
from robustbench_cli.attacks.gradients import Autograd
from robustbench_cli.attacks.losses import cross_entropy, margin
from robustbench_cli.attacks.steps import ascent_step, random_start
from robustbench_cli.core.threat_model import Norm
from robustbench_cli.targets.base import Capability


def checkpoints(steps: int) -> list[int]:
    """The iterations ``w_j = ceil(p_j * steps)`` where the step size may be halved (distinct, ascending, <= steps).

    The fractions are kept in whole percent (0.22, 0.03 and 0.06 are all whole percents) so that the ceiling
    is exact: ``0.41 * 100`` in floating point is 41.00000000000001 and would round up to 42.
    """
    p_prev, p = 0, 22  # percent
    fractions = [0]
    while p <= 100:
        fractions.append(p)
        p_prev, p = p, p + max(p - p_prev - 3, 6)
    return sorted({-(-f * steps // 100) for f in fractions})


def dlr(z: torch.Tensor, goal: Goal) -> torch.Tensor:
    """Difference of Logits Ratio (to maximise); falls back to the margin loss when there are too few classes."""
    k = z.shape[1]
    if k < (4 if goal.targeted else 3):
        return margin(z, goal)
    srt = z.sort(dim=1, descending=True).values
    own = z.gather(1, goal.labels[:, None]).squeeze(1)
    others = z.scatter(1, goal.labels[:, None], float("-inf")).amax(dim=1)
    if goal.targeted:  # own is the target's score; the true class is unknown here: the best other class stands in
        return -(others - own) / (srt[:, 0] - (srt[:, 2] + srt[:, 3]) / 2 + 1e-12)
    return -(own - others) / (srt[:, 0] - srt[:, 2] + 1e-12)


def _bcast(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (x.dim() - 1)))


class _APGD(Attack):
    family = "gradient"
    requires = Capability.GRADIENTS
    _loss_name: str = "ce"

    def __init__(self, *, steps: int = 100, restarts: int = 1, rho: float = 0.75, momentum: float = 0.75,
                 random_start: bool = True, eot: int = 1):
        if steps < 1 or restarts < 1:
            raise ValueError("steps and restarts must be >= 1")
        if not 0.0 < rho <= 1.0:
            raise ValueError("rho must be in (0, 1]")
        if not 0.0 < momentum <= 1.0:
            raise ValueError("momentum must be in (0, 1]")
        self.steps = steps
        self.restarts = restarts
        self.rho = rho
        self.momentum = momentum
        self.random_start = random_start
        self.loss = self._loss_name
        self._source = Autograd(eot=eot)  # eot > 1: each gradient averaged over draws of a randomised model

    def config(self) -> dict:
        return {**super().config(), **{k: v for k, v in self._source.config().items() if k == "eot"}}

    def _loss_fn(self):
        return cross_entropy if self._loss_name == "ce" else dlr

    def _passes(self, oracle, x0, goal, threat, rng) -> list[Goal]:
        """The goal each pass's loss pursues (success is always judged on ``goal``): one per restart here."""
        return [goal] * self.restarts

    def run(self, oracle, x0, goal, threat, rng):
        loss_fn = self._loss_fn()
        src = self._source
        bounds = oracle.target.bounds
        n = len(x0)
        dev = x0.device
        out = x0.clone()
        best_all = torch.full((n,), float("-inf"), device=dev)  # best loss over restarts, for unbroken samples
        found = torch.zeros(n, dtype=torch.bool, device=dev)
        marks = set(checkpoints(self.steps)) - {0}
        a = self.momentum

        for pass_goal in self._passes(oracle, x0, goal, threat, rng):
            act = (~found).nonzero().squeeze(1)
            if not len(act):
                break
            rows = act.cpu()
            x0a = x0[act]
            x = random_start(x0a, threat, rng, rows.tolist(), bounds) if self.random_start else x0a.clone()
            st: dict[str, torch.Tensor] = {}  # per-sample state, compacted along with act

            def settle(mask):
                """Unbroken rows leaving the batch: keep their best point if it beats earlier restarts."""
                if not st:  # never evaluated in this restart: the start point, unless an earlier restart left one
                    fresh = torch.isinf(best_all[act[mask]])
                    out[act[mask][fresh]] = x[mask][fresh]
                    return
                better = st["f_best"][mask] > best_all[act[mask]]
                sel = act[mask][better]
                out[sel] = st["x_best"][mask][better]
                best_all[sel] = st["f_best"][mask][better]

            def keep_rows(keep):
                nonlocal act, rows, x, x0a
                act, rows, x, x0a = act[keep], rows[keep.cpu()], x[keep], x0a[keep]
                for name in st:
                    st[name] = st[name][keep]

            last_mark = 0
            for k in range(self.steps + 1):
                if k > 0:  # step from x_{k-1} to x_k
                    eta = st["eta"]
                    zk = threat.project(x + _bcast(eta, x) * _direction(st["g"], threat.norm), x0a, bounds)
                    if k == 1:
                        x_new = zk
                    else:
                        x_new = threat.project(x + a * (zk - x) + (1 - a) * (x - st["x_prev"]), x0a, bounds)
                    st["x_prev"], x = x, x_new
                if oracle.budget is not None:  # rows that cannot pay for this evaluation stop with their best point
                    afford = oracle.remaining(rows) >= (1 if k == self.steps else src.queries_per_step(x))
                    if not bool(afford.all()):
                        stop = (~afford).to(dev)
                        settle(stop)
                        keep_rows(afford.to(dev))
                        if not len(act):
                            break
                g_goal, l_goal = goal.subset(act), pass_goal.subset(act)
                last = k == self.steps
                if last:
                    z = oracle.logits(x, rows)
                    loss, g = loss_fn(z, l_goal), None
                else:
                    loss, g, z = src.value_and_grad(oracle, x, rows, l_goal, loss_fn, rng)
                hit = g_goal.reached(z.argmax(dim=1)) & torch.isfinite(z).all(dim=1)
                if bool(hit.any()):  # broken samples leave the batch with the iterate that broke them
                    out[act[hit]] = x[hit]
                    found[act[hit]] = True
                    keep = ~hit
                    keep_rows(keep)
                    loss, g = loss[keep], (g[keep] if g is not None else None)
                    if not len(act):
                        break
                if k == 0:
                    m = len(act)
                    st.update(x_best=x.clone(), f_best=loss.clone(), g_best=g.clone(), g=g, f_prev=loss,
                              eta=torch.full((m,), 2.0 * threat.epsilon, device=dev),
                              count=torch.zeros(m, dtype=torch.long, device=dev),
                              reduced=torch.zeros(m, dtype=torch.bool, device=dev), f_mark=loss.clone())
                    continue
                st["count"] = st["count"] + (loss > st["f_prev"]).long()
                up = loss > st["f_best"]
                st["x_best"] = torch.where(_bcast(up, x), x, st["x_best"])
                st["f_best"] = torch.where(up, loss, st["f_best"])
                if g is not None:
                    st["g_best"] = torch.where(_bcast(up, g), g, st["g_best"])
                    st["g"] = g
                st["f_prev"] = loss
                if last:
                    break
                if k in marks:
                    cond1 = st["count"].float() < self.rho * (k - last_mark)
                    cond2 = ~st["reduced"] & (st["f_best"] <= st["f_mark"])
                    red = cond1 | cond2
                    st["eta"] = torch.where(red, st["eta"] / 2, st["eta"])
                    rb = _bcast(red, x)
                    x = torch.where(rb, st["x_best"], x)
                    st["x_prev"] = torch.where(rb, st["x_best"], st["x_prev"])  # no momentum across a restart
                    st["g"] = torch.where(rb, st["g_best"], st["g"])
                    st["f_prev"] = torch.where(red, st["f_best"], st["f_prev"])
                    st["reduced"] = red
                    st["f_mark"] = st["f_best"].clone()
                    st["count"] = torch.zeros_like(st["count"])
                    last_mark = k
            if len(act):
                settle(torch.ones(len(act), dtype=torch.bool, device=dev))
        return out


def _direction(g: torch.Tensor, norm) -> torch.Tensor:
    """The unit ascent direction: ``sign(g)`` for Linf, ``g / ||g||_2`` for L2."""
    return ascent_step(torch.zeros_like(g), g, 1.0, norm)


@register
class APGDCE(_APGD):
    name = "apgd-ce"
    summary = "Auto-PGD on the cross-entropy: momentum, self-tuning step size (Croce & Hein 2020)"
    _loss_name = "ce"


@register
class APGDDLR(_APGD):
    name = "apgd-dlr"
    summary = "Auto-PGD on the scale-invariant DLR loss (Croce & Hein 2020)"
    _loss_name = "dlr"


@register
class APGDT(_APGD):
    """Targeted APGD-DLR against each of the ``targets`` most likely wrong classes in turn (AutoAttack's APGD-T).

    On an untargeted goal, the clean scores (one query per sample) rank the other classes; pass ``j`` pursues the
    ``j``-th most likely of them with the targeted DLR loss, on the samples earlier passes left unbroken. Success
    is still judged on the untargeted goal: any wrong class counts, not only the pass's target. With a targeted
    goal it is APGD-DLR on that target. ``restarts`` repeats the whole round of targets.

    ``order="linearised"`` (the target choice of MALT, Melamed et al. 2023) keeps the ``candidates`` likeliest wrong
    classes (default: ``targets``) and attacks them nearest first by the linearised distance to their decision
    boundary at the clean point, ``(z_y - z_t) / ||grad_x (z_y - z_t)||_*`` (the dual norm: L1 under Linf, L2
    under L2); that ranking costs one gradient per candidate and sample. With ``targets < candidates`` only the
    nearest ``targets`` of them are attacked: on the reference nets the classes that APGD-T breaks beyond the third
    likeliest are among the nearest three by this distance (benchmarks/README.md, ``probe_standard.py``).
    """

    name = "apgd-t"
    summary = "APGD with the targeted DLR loss against each of the top-k other classes in turn (Croce & Hein 2020)"
    _loss_name = "dlr"
    ORDERS = ("logits", "linearised")

    def __init__(self, *, targets: int = 9, steps: int = 100, restarts: int = 1, rho: float = 0.75,
                 momentum: float = 0.75, random_start: bool = True, eot: int = 1, order: str = "logits",
                 candidates: int | None = None):
        if targets < 1:
            raise ValueError("targets must be >= 1")
        if order not in self.ORDERS:
            raise ValueError(f"order must be one of {', '.join(self.ORDERS)}")
        if candidates is not None and candidates < targets:
            raise ValueError("candidates must be >= targets")
        super().__init__(steps=steps, restarts=restarts, rho=rho, momentum=momentum, random_start=random_start,
                         eot=eot)
        self.targets = targets
        self._order = order
        self._candidates = targets if candidates is None else candidates

    def config(self) -> dict:
        # the default (AutoAttack's order) is left out, so that reports written before the option stay comparable
        extra = {} if self._order == "logits" else {"order": self._order, "candidates": self._candidates}
        return {**super().config(), **extra}

    def _passes(self, oracle, x0, goal, threat, rng):
        if goal.targeted:
            return [goal] * self.restarts
        k = oracle.num_classes
        ranked = likeliest_wrong_classes(oracle, x0, goal)
        if self._order == "linearised" and k > 2:
            ranked = self._nearest_first(oracle, x0, goal, ranked[:, : min(self._candidates, k - 1)], threat, rng)
        return [Goal(ranked[:, j], True) for _ in range(self.restarts) for j in range(min(self.targets, k - 1))]

    def _nearest_first(self, oracle, x0, goal, cands, threat, rng):
        """``cands`` (n, c) reordered per row by the linearised distance to each class's boundary, nearest first.
        Rows that cannot pay for the gradients keep the logit order."""
        n, c = cands.shape
        rows = torch.arange(n)
        if oracle.budget is not None:
            rows = rows[oracle.remaining(rows) >= c]
        if not len(rows):
            return cands
        r = rows.to(x0.device)
        y = goal.labels[r]
        dist = torch.empty(len(r), c, device=x0.device)
        dual = 1.0 if threat.norm is Norm.LINF else 2.0
        for j in range(c):
            t = cands[r, j]

            def gap(z, _goal, t=t):  # z_t - z_y: its gradient points towards class t's side of the boundary
                return z.gather(1, t[:, None]).squeeze(1) - z.gather(1, y[:, None]).squeeze(1)

            value, g, _ = self._source.value_and_grad(oracle, x0[r], rows, goal.subset(r), gap, rng)
            dist[:, j] = -value / g.flatten(1).norm(p=dual, dim=1).clamp_min(1e-12)
        out = cands.clone()
        out[r] = cands[r].gather(1, dist.argsort(dim=1, stable=True))
        return out
