"""PGD: projected gradient descent (Madry et al. 2018, "Towards Deep Learning Models Resistant to
Adversarial Attacks"), Linf and L2, random start, restarts.

Each step moves up the loss (signed gradient for Linf, unit gradient for L2) by ``step_size * eps`` and
projects back onto the epsilon ball and the input box. The gradient comes from a *source*: autograd for
white-box targets (``pgd``), or a query-based estimate for score-only targets (``pgd-nes``: NES,
Ilyas et al. 2018; ``pgd-spsa``: SPSA, Uesato et al. 2018), with a momentum accumulator (0.9) that steadies the noisy estimate. Samples leave the batch as soon as an iterate
is misclassified, and restarts run only for samples not yet broken.

Defaults: 40 steps of 2.5 * eps / steps, one restart, random start, cross-entropy loss (``margin`` for the
Carlini-Wagner margin); ``eot=N`` averages each autograd gradient over N draws of a randomised model (EOT). ``pgd-nes``: 50 steps of eps/10, 20 antithetic pairs (41 queries a step), margin loss, momentum 0.9.
``pgd-fd``: 20 steps of eps/10 on central finite differences per coordinate (2d+1 queries a step, inputs of at most
4096 values).

Example::

    robust scan model.onnx --data mnist --eps 0.3 --attacks pgd-nes
"""

from __future__ import annotations

import torch

from robustbench_cli.attacks.base import Attack, register
from robustbench_cli.attacks.gradients import NES, SPSA, Autograd, FiniteDifferences, GradientSource, LossFn
from robustbench_cli.attacks.losses import get_loss
from robustbench_cli.attacks.steps import ascent_step, random_start
from robustbench_cli.targets.base import Capability


@register
class PGD(Attack):
    name = "pgd"
    family = "gradient"
    requires = Capability.GRADIENTS
    summary = "projected gradient descent with random start and restarts (Madry et al. 2018)"

    def __init__(self, *, steps: int = 40, step_size: float | None = None, restarts: int = 1,
                 random_start: bool = True, loss: str | LossFn = "ce", momentum: float = 0.0, eot: int = 1,
                 source: GradientSource | None = None, early_stop: bool = True):
        if steps < 1 or restarts < 1:
            raise ValueError("steps and restarts must be >= 1")
        if not 0.0 <= momentum <= 1.0:  # 1.0 is MI-FGSM's own decay (attacks/transfer.py)
            raise ValueError("momentum must be in [0, 1]")
        # a callable loss (z, goal) -> per-sample loss serves training (TRADES' KL to the clean output)
        self._loss_fn = get_loss(loss) if isinstance(loss, str) else loss
        self.steps = steps
        self.step_size = step_size if step_size is not None else 2.5 / steps  # relative to epsilon
        self.restarts = restarts
        self.random_start = random_start
        self.loss = loss if isinstance(loss, str) else getattr(loss, "__name__", "custom")
        self.momentum = momentum  # MI-FGSM accumulator (Dong et al. 2018): steadies noisy gradient estimates
        if source is not None and eot != 1:
            raise ValueError("eot applies to the autograd gradient, not to a given source")
        self._source = source or Autograd(eot=eot)
        # early_stop=False: every sample takes all steps and the last iterate is returned, without the final
        # check query (Madry et al.'s training attack, used by `robust train`); evaluation keeps the early exit
        self._early_stop = early_stop

    def config(self) -> dict:
        return {**super().config(), **self._source.config(), **({} if self._early_stop else {"early_stop": False})}

    def forward_queries(self, sample_shape: tuple[int, ...], num_classes: int) -> int:
        # an estimated gradient is forward queries only: every step's probes
        per_step = 0 if self._source.requires & Capability.GRADIENTS else \
            self._source.queries_per_step(torch.empty(1, *sample_shape))
        return self.restarts * (self.steps * per_step + 2) + 1

    def run(self, oracle, x0, goal, threat, rng):
        loss_fn = self._loss_fn
        src = self._source
        alpha = self.step_size * threat.epsilon
        bounds = oracle.target.bounds
        n = len(x0)
        out = x0.clone()
        found = torch.zeros(n, dtype=torch.bool, device=x0.device)
        need = src.queries_per_step(x0)
        for _ in range(self.restarts):
            act = (~found).nonzero().squeeze(1)
            if not len(act):
                break
            rows = act.cpu()  # the oracle's ledger lives on the host; kept in step with `act`
            x0a = x0[act]
            x = random_start(x0a, threat, rng, rows.tolist(), bounds) if self.random_start else x0a.clone()
            acc = torch.zeros_like(x) if self.momentum else None
            for t in range(self.steps + 1):
                last = t == self.steps
                if oracle.budget is not None:
                    # rows that cannot pay for a full step (plus the final check) stop where they are
                    # (without early exit there is no final check query to keep back)
                    reserve = 1 if self._early_stop else 0
                    afford = oracle.remaining(rows) >= (reserve if last else need + reserve)
                    if not bool(afford.all()):
                        stop = (~afford).to(x.device)
                        out[act[stop]] = x[stop]
                        keep = afford.to(x.device)
                        act, rows, x, x0a = act[keep], rows[afford], x[keep], x0a[keep]
                        acc = acc[keep] if acc is not None else None
                        if not len(act):
                            break
                g_goal = goal.subset(act)
                if last and not self._early_stop:
                    out[act] = x
                    break
                if last:
                    z, g = oracle.logits(x, rows), None
                else:
                    _, g, z = src.value_and_grad(oracle, x, rows, g_goal, loss_fn, rng)
                hit = g_goal.reached(z.argmax(dim=1)) & torch.isfinite(z).all(dim=1)
                if not self._early_stop:
                    hit.zero_()
                if bool(hit.any()):  # broken samples leave the batch: no more work is spent on them
                    out[act[hit]] = x[hit]
                    found[act[hit]] = True
                    keep = ~hit
                    act, rows, x, x0a = act[keep], rows[keep.cpu()], x[keep], x0a[keep]
                    g = g[keep] if g is not None else None
                    acc = acc[keep] if acc is not None else None
                    if not len(act):
                        break
                if last:
                    out[act] = x  # not broken: the last iterate is still a candidate for the harness
                    break
                if acc is not None:
                    acc = self.momentum * acc + g / g.flatten(1).abs().mean(dim=1).clamp_min(1e-12).view(-1, *[1] * (g.dim() - 1))
                    g = acc
                x = threat.project(ascent_step(x, g, alpha, threat.norm), x0a, bounds)
        return out


class _QueryPGD(PGD):
    """PGD whose gradient is estimated from score queries; the subclasses name the estimator."""

    family = "query"
    requires = Capability.SCORES
    _estimator: type = NES
    _sigma: float = 1e-3

    def __init__(self, *, steps: int = 50, step_size: float = 0.1, restarts: int = 1, random_start: bool = False,
                 loss: str = "margin", momentum: float = 0.9, samples: int = 20, sigma: float | None = None):
        source = self._estimator(samples=samples, sigma=self._sigma if sigma is None else sigma)
        super().__init__(steps=steps, step_size=step_size, restarts=restarts, random_start=random_start,
                         loss=loss, momentum=momentum, source=source)


@register
class PGDFD(PGD):
    name = "pgd-fd"
    family = "query"
    requires = Capability.SCORES
    summary = "PGD on coordinate-wise finite differences, 2d+1 queries a step (small inputs only)"

    def __init__(self, *, steps: int = 20, step_size: float = 0.1, restarts: int = 1, random_start: bool = False,
                 loss: str = "margin", momentum: float = 0.0, sigma: float = 1e-3, max_dim: int = 4096):
        super().__init__(steps=steps, step_size=step_size, restarts=restarts, random_start=random_start,
                         loss=loss, momentum=momentum, source=FiniteDifferences(sigma=sigma, max_dim=max_dim))

    def unsupported_reason(self, capabilities, threat, dim=None):
        reason = super().unsupported_reason(capabilities, threat, dim)
        max_dim = self._source.max_dim
        if reason is None and dim is not None and dim > max_dim:
            reason = f"finite differences cost 2d+1 = {2 * dim + 1} queries a step here; it runs on inputs of at most {max_dim} values"
        return reason


@register
class PGDNES(_QueryPGD):
    name = "pgd-nes"
    summary = "PGD on a NES gradient estimate from score queries (Ilyas et al. 2018)"
    _estimator, _sigma = NES, 1e-3


@register
class PGDSPSA(_QueryPGD):
    name = "pgd-spsa"
    summary = "PGD on an SPSA gradient estimate from score queries (Uesato et al. 2018)"
    _estimator, _sigma = SPSA, 1e-2
