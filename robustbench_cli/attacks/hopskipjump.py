"""HopSkipJump (Chen, Jordan & Wainwright 2020, "HopSkipJumpAttack: a query-efficient decision-based attack"),
L2 and Linf, untargeted and targeted. Needs only the predicted label.

From an adversarial starting point it walks along the decision boundary towards the clean input: a binary search
puts the point on the boundary, a Monte-Carlo estimate of the boundary's normal (``B_t = init_evals * sqrt(t)``
random probes, each answered adversarial or not) gives a direction, a geometric search (``|x_t - x0| / sqrt(t)``,
halved until the step stays adversarial) moves along it, and the next binary search returns to the boundary. Linf
uses sign updates and Linf interpolation. The binary-search tolerance is ``gamma / d^1.5`` (L2) or ``gamma / d^2``
(Linf) of the distance, as in the paper.

Two starting points per sample are pulled to the boundary and the closer one is kept: the nearest other input of
the same batch that the model already classifies as the goal requires (found from one query per input), and
uniform noise (the paper's start). Which one ends closer depends on the model: on the benchmark's LeNet5 the batch
input, on another MNIST net the noise.

With ``stop_at_epsilon`` (default) a sample stops as soon as its adversarial lies inside the threat's epsilon; set it
to False to minimise the distance for the whole budget (``robust`` then reports the distance reached).

Example::

    robust scan model.onnx --access labels --threat l2:2 --attacks hopskipjump --queries 5000
"""

from __future__ import annotations

import math

import torch

from robustbench_cli.attacks.base import Attack, register
from robustbench_cli.core.threat_model import Norm
from robustbench_cli.targets.base import Capability


def _per(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


@register
class HopSkipJump(Attack):
    name = "hopskipjump"
    batch_dependent = True  # it starts from the batch's inputs the model already puts in the goal class
    family = "query"
    requires = Capability.LABELS
    summary = "decision-based boundary walk, labels only (Chen et al. 2020)"

    def __init__(self, *, max_queries: int = 5000, init_evals: int = 100, max_evals: int = 10000, gamma: float = 1.0,
                 init_tries: int = 50, stop_at_epsilon: bool = True, max_probe_rows: int = 16384):
        if max_queries < 2 or init_evals < 1 or max_evals < init_evals or gamma <= 0 or init_tries < 1:
            raise ValueError("need max_queries >= 2, 1 <= init_evals <= max_evals, gamma > 0, init_tries >= 1")
        self.max_queries = max_queries
        self.init_evals = init_evals
        self.max_evals = max_evals
        self.gamma = gamma
        self.init_tries = init_tries
        self.stop_at_epsilon = stop_at_epsilon
        self._max_probe_rows = max_probe_rows

    def forward_queries(self, sample_shape: tuple[int, ...], num_classes: int) -> int:
        return self.max_queries

    def run(self, oracle, x0, goal, threat, rng):
        n = len(x0)
        self._oracle, self._goal, self._lo_hi = oracle, goal, oracle.target.bounds
        self._linf = threat.norm is Norm.LINF
        d = x0[0].numel()
        self._theta = self.gamma / (d ** 2 if self._linf else d ** 1.5)
        # the attack's own cap, on top of the oracle's budget
        self._left = oracle.remaining().clamp(max=self.max_queries).clone()
        dist_fn = threat.distance

        # two starts per row, each pulled to the boundary; the closer one wins
        dist = torch.full((n,), math.inf, device=x0.device)
        x_adv = x0.clone()
        for x_s, has_s in self._starts(x0, rng):
            rows = has_s.nonzero().squeeze(1)
            if not len(rows):
                continue
            x_s[rows] = self._binary_search(x0[rows], x_s[rows], rows.cpu())
            d_s = torch.full((n,), math.inf, device=x0.device)
            d_s[rows] = dist_fn(x_s[rows], x0[rows])
            closer = d_s < dist
            x_adv[closer], dist[closer] = x_s[closer], d_s[closer]
        has = torch.isfinite(dist)
        done = ~has
        bin_steps = self._binary_steps()
        for t in range(1, 1 << 30):
            if self.stop_at_epsilon:
                done |= dist <= threat.epsilon
            # a row goes on only if it can pay for some probes, a step and a full binary search
            can = self._left >= bin_steps + 4
            act = (~done & can.to(done.device)).nonzero().squeeze(1)
            if not len(act):
                break
            rows = act.cpu()
            xa, x0a = x_adv[act], x0[act]
            evals = min(int(self.init_evals * math.sqrt(t)), self.max_evals)
            probes = (self._left[rows] - bin_steps - 2).clamp(min=1, max=evals)
            if t == 1:
                delta = torch.full((len(act),), 0.1 * (self._lo_hi[1] - self._lo_hi[0]), device=x0.device)
            else:
                delta = (d if self._linf else math.sqrt(d)) * self._theta * dist[act]
            grad = self._estimate(xa, rows, delta, probes, rng)
            v = grad.sign() if self._linf else grad / _per(grad.flatten(1).norm(dim=1).clamp_min(1e-12), grad)
            step = dist[act] / math.sqrt(t)
            moved, ok = self._geometric(xa, v, step, rows)
            if bool(ok.any()):
                sel = ok.nonzero().squeeze(1)
                new = self._binary_search(x0a[sel], moved[sel], rows[sel.cpu()])
                nd = dist_fn(new, x0a[sel])
                better = nd < dist[act[sel]]
                upd = act[sel[better]]
                x_adv[upd] = new[better]
                dist[upd] = nd[better]
        return x_adv

    # --- queries ---------------------------------------------------------------------------------
    def _phi(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Is each input adversarial for its row? One counted query each; callers check ``_left`` first."""
        return self._goal.subset(rows.to(x.device)).reached(self._phi_pred(x, rows))

    def _starts(self, x0, rng):
        """Adversarial starting points per row: the nearest batch input already on the goal's side, and noise."""
        n, dev = len(x0), x0.device
        x_b, has_b = x0.clone(), torch.zeros(n, dtype=torch.bool, device=dev)
        rows = (self._left >= 1).nonzero().squeeze(1)
        if not len(rows):
            return [(x_b, has_b)]
        pred = torch.full((n,), -1, dtype=torch.long, device=dev)
        pred[rows.to(dev)] = self._phi_pred(x0[rows.to(dev)], rows)
        lab = self._goal.labels
        reach = (pred[None, :] == lab[:, None]) if self._goal.targeted else (pred[None, :] != lab[:, None])
        reach &= pred[None, :] >= 0  # (row i, start j): j was queried and is on i's goal side
        own = reach.diagonal().clone()  # already adversarial as it is: the clean input is its own answer
        has_b |= own
        flat = x0.flatten(1)
        D = torch.cdist(flat, flat, p=math.inf if self._linf else 2.0)
        D[~reach] = math.inf
        D.fill_diagonal_(math.inf)
        j = D.argmin(dim=1)
        cand = (~has_b & torch.isfinite(D.gather(1, j[:, None]).squeeze(1))).nonzero().squeeze(1)
        cand = cand[(self._left[cand.cpu()] >= 1).to(dev)]
        if len(cand):  # the row pays for the check of its own start
            ok = self._phi(x0[j[cand]], cand.cpu())
            x_b[cand[ok]] = x0[j[cand[ok]]]
            has_b[cand[ok]] = True
        # uniform noise: a start from another direction (on some models it ends closer than any batch input)
        lo, hi = self._lo_hi
        x_n, has_n = x0.clone(), torch.zeros(n, dtype=torch.bool, device=dev)
        for _ in range(self.init_tries):
            need = (~has_n & ~own & (self._left >= 1).to(dev)).nonzero().squeeze(1)
            if not len(need):
                break
            noise = lo + (hi - lo) * rng.uniform(x0.shape[1:], need.tolist()).to(dev)
            ok = self._phi(noise, need.cpu())
            x_n[need[ok]] = noise[ok]
            has_n[need[ok]] = True
        return [(x_b, has_b), (x_n, has_n)]

    def _phi_pred(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The predicted class of each input (one counted query each)."""
        self._left -= torch.bincount(rows, minlength=len(self._left))
        return self._oracle.predict(x, rows).to(x.device)

    def _estimate(self, x, rows, delta, probes, rng):
        """Monte-Carlo estimate of the boundary normal at ``x``: ``probes[i]`` random directions for row i."""
        lo, hi = self._lo_hi
        B = int(probes.max())
        per = max(1, self._max_probe_rows // B)
        out = []
        for s in range(0, len(x), per):
            xs, rs, ds, ps = x[s: s + per], rows[s: s + per], delta[s: s + per], probes[s: s + per]
            m = len(xs)
            if self._linf:
                u = rng.uniform((B, *x.shape[1:]), rs.tolist()).to(x.device) * 2 - 1
            else:
                u = rng.normal((B, *x.shape[1:]), rs.tolist()).to(x.device)
            u = u / u.flatten(2).norm(dim=2).clamp_min(1e-12).view(m, B, *([1] * (x.dim() - 1)))
            valid = torch.arange(B)[None, :] < ps[:, None]  # (m, B) on the host
            pts = (xs[:, None] + ds.view(m, 1, *([1] * (x.dim() - 1))) * u).clamp(lo, hi)
            u = (pts - xs[:, None]) / ds.view(m, 1, *([1] * (x.dim() - 1)))  # the directions actually taken
            owner = rs[:, None].expand(m, B)[valid]
            f = torch.zeros(m, B, device=x.device)
            vd = valid.to(x.device)
            f[vd] = self._phi(pts[vd], owner).float() * 2 - 1
            cnt = vd.sum(dim=1).clamp_min(1).float()
            mean = f.sum(dim=1) / cnt
            # baseline subtraction (variance reduction); all-agreeing probes keep their plain mean
            centred = torch.where(vd, f - mean[:, None], torch.zeros_like(f))
            agree = mean.abs() == 1
            w = torch.where(agree[:, None], f, centred)
            g = (w.view(m, B, *([1] * (x.dim() - 1))) * u).sum(dim=1) / cnt.view(m, *([1] * (x.dim() - 1)))
            out.append(g)
        return torch.cat(out)

    def _geometric(self, x, v, step, rows):
        """Halve the step along ``v`` until the moved point is adversarial (one query per try)."""
        lo, hi = self._lo_hi
        moved = x.clone()
        ok = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        pending = torch.ones(len(x), dtype=torch.bool, device=x.device)
        step = step.clone()
        for _ in range(30):
            idx = (pending & (self._left[rows] >= self._binary_steps() + 2).to(x.device)).nonzero().squeeze(1)
            if not len(idx):
                break
            cand = (x[idx] + _per(step[idx], x) * v[idx]).clamp(lo, hi)
            hit = self._phi(cand, rows[idx.cpu()])
            moved[idx[hit]] = cand[hit]
            ok[idx[hit]] = True
            pending[idx[hit]] = False
            step[idx[~hit]] /= 2
        return moved, ok

    def _binary_steps(self) -> int:
        return int(math.ceil(math.log2(1.0 / self._theta))) + 1

    def _interpolate(self, x0, x, alpha):
        if self._linf:
            a = _per(alpha, x)
            return torch.minimum(torch.maximum(x, x0 - a), x0 + a)
        a = _per(alpha, x)
        return (1 - a) * x0 + a * x

    def _binary_search(self, x0, x, rows):
        """Move each adversarial ``x`` towards ``x0`` until the boundary is bracketed to the tolerance."""
        if self._linf:
            hi = (x - x0).flatten(1).abs().amax(dim=1)
            tol = torch.clamp(hi * self._theta, max=self._theta)
        else:
            hi = torch.ones(len(x), device=x.device)
            tol = torch.full((len(x),), self._theta, device=x.device)
        lo = torch.zeros_like(hi)
        while True:
            idx = ((hi - lo > tol) & (self._left[rows] >= 1).to(x.device)).nonzero().squeeze(1)
            if not len(idx):
                break
            mid = (hi[idx] + lo[idx]) / 2
            adv = self._phi(self._interpolate(x0[idx], x[idx], mid), rows[idx.cpu()])
            hi[idx[adv]] = mid[adv]
            lo[idx[~adv]] = mid[~adv]
        return self._interpolate(x0, x, hi)
