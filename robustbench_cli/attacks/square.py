"""Square Attack (Andriushchenko, Croce, Flammarion & Hein 2020, "Square Attack: a query-efficient black-box
adversarial attack via random search"), Linf and L2, untargeted and targeted.

A random search that needs scores only: each iteration changes the current perturbation inside one random square
window (Linf: the window is set to +-eps per channel; L2: mass is moved from a second window into the first with a
pseudo-Gaussian pattern, keeping the norm at eps) and keeps the change when the margin loss improves. One query per
sample and iteration, plus one for the initial point (vertical stripes for Linf, a grid of pseudo-Gaussian tiles for
L2). The window's share ``p`` of the image follows the paper's schedule: ``p_init`` halved at iterations 10, 50, 200,
500, 1000, 2000, 4000, 6000 and 8000 of 10,000, rescaled to the number of iterations the budget allows, so a smaller
``--queries`` budget shrinks the windows sooner.

Loss: the margin (best other class minus the goal class, on logits, or on log-probabilities when the model returns
probabilities); ``ce`` for cross-entropy. A sample stops as soon as a query shows its goal reached.

``restarts=k`` runs the search k times, each from a fresh start and its own random stream (``<stream>/restart<r>``),
the later ones only for samples not yet broken, each with up to ``max_queries`` more; the best point over the
searches is returned.

Defaults: ``max_queries=5000`` per sample (the harness's ``--queries`` caps it further), ``p_init=0.3`` for Linf
(measured on MNIST: fewer queries per success than 0.8 at about the same success rate; see benchmarks/) and ``0.8``
for L2 (the paper's setting; 0.1 and 0.3 broke fewer samples in 1,000 queries on the embedded MNIST CNN).

Example::

    robust scan model.onnx --data mnist --eps 0.3 --attacks square --queries 1000
"""

from __future__ import annotations

import math

import torch

from robustbench_cli.attacks.base import Attack, register
from robustbench_cli.attacks.losses import get_loss
from robustbench_cli.attacks.rng import SampleRng
from robustbench_cli.core.threat_model import Norm
from robustbench_cli.targets.base import Capability

_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(p_init: float, it: int, n_iters: int) -> float:
    """The paper's piecewise-constant schedule of the window's share of the image, on a 10,000-iteration scale."""
    scaled = int(it / max(n_iters, 1) * 10000)
    return p_init / 2 ** sum(scaled > h for h in _HALVINGS)


def _rectangle_pattern(h: int, w: int) -> torch.Tensor:
    """Nested rectangles with weights 1/(k+1)^2 around the centre, unit L2 norm (the paper's pseudo-Gaussian)."""
    d = torch.zeros(h, w)
    ch, cw = h // 2, w // 2
    for k in range(max(ch, cw) + 1):
        d[max(ch - k, 0): min(ch + k + 1, h), max(cw - k, 0): min(cw + k + 1, w)] += 1.0 / (k + 1) ** 2
    return d / d.norm()


def _pattern(h: int, w: int) -> torch.Tensor:
    """Two pseudo-Gaussian halves of opposite sign (split along the longer side), unit L2 norm."""
    d = torch.zeros(h, w)
    if h >= 2:
        d[: h // 2] = _rectangle_pattern(h // 2, w)
        d[h // 2:] = -_rectangle_pattern(h - h // 2, w)
    elif w >= 2:
        d[:, : w // 2] = _rectangle_pattern(1, w // 2)
        d[:, w // 2:] = -_rectangle_pattern(1, w - w // 2)
    else:
        d[:] = 1.0
    return d / d.norm()


class _Pool:
    """Per-sample random numbers drawn in blocks of iterations: the stream of a sample depends only on its seed."""

    def __init__(self, rng, n: int, width: int, block: int = 64):
        self.rng, self.width, self.block = rng, width, block
        self.buf = torch.zeros(n, block, width)

    def take(self, it: int, rows: torch.Tensor) -> torch.Tensor:
        if it % self.block == 0:
            self.buf[rows] = self.rng.uniform((self.block, self.width), rows.tolist()).cpu()
        return self.buf[rows, it % self.block]


@register
class Square(Attack):
    name = "square"
    family = "query"
    requires = Capability.SCORES
    summary = "random search over square windows, scores only (Andriushchenko et al. 2020)"

    def __init__(self, *, max_queries: int = 5000, p_init: float | None = None, loss: str = "margin",
                 restarts: int = 1, triage_after: int | None = None, triage_ratio: float = 0.3):
        if triage_after is not None:
            if not 1 <= triage_after < max_queries:
                raise ValueError("triage_after must be in 1..max_queries - 1")
            if not 0.0 < triage_ratio < 1.0:
                raise ValueError("triage_ratio must be in (0, 1)")
            if loss != "margin":
                raise ValueError("triage needs the margin loss (it compares margins)")
        if max_queries < 2:
            raise ValueError("max_queries must be >= 2")
        if restarts < 1:
            raise ValueError("restarts must be >= 1")
        if p_init is not None and not 0 < p_init <= 1:
            raise ValueError("p_init must be in (0, 1]")
        get_loss(loss)
        self.max_queries = max_queries
        self.p_init = p_init
        self.loss = loss
        self._restarts = restarts  # recorded in config() only when > 1 (older reports stay comparable)
        self._triage = None if triage_after is None else (triage_after, triage_ratio)

    def config(self) -> dict:
        extra: dict[str, float] = {"restarts": self._restarts} if self._restarts > 1 else {}
        if self._triage:
            extra.update(triage_after=self._triage[0], triage_ratio=self._triage[1])
        return {**super().config(), **extra}

    def forward_queries(self, sample_shape: tuple[int, ...], num_classes: int) -> int:
        return self.max_queries * self._restarts

    def _p_init(self, norm: Norm) -> float:
        if self.p_init is not None:
            return self.p_init
        return 0.3 if norm is Norm.LINF else 0.8

    def run(self, oracle, x0, goal, threat, rng):
        shape = x0.shape
        n = len(x0)
        x0 = x0.reshape(n, *self._image_shape(shape[1:]))
        c, h, w = x0.shape[1:]
        eps, (lo, hi) = threat.epsilon, oracle.target.bounds
        loss_fn = get_loss(self.loss)
        dev = x0.device
        rows_all = torch.arange(n)
        linf = threat.norm is Norm.LINF

        init = self._init_linf if linf else self._init_l2
        width = (2 + 4 * c) if linf else (5 + c)
        p_init = self._p_init(threat.norm)
        ar_h, ar_w = torch.arange(h, device=dev), torch.arange(w, device=dev)
        found = torch.zeros(n, dtype=torch.bool, device=dev)
        keep_x, keep = x0.clone(), torch.full((n,), -math.inf, device=dev)  # the best point over the restarts
        for r in range(self._restarts):
            # a restart searches again, from a fresh start and its own random stream, for the samples not yet done
            rng_r = rng if r == 0 else SampleRng(rng.seed, f"{rng.stream}/restart{r}", rng.ids, rng.device)
            rows = ((~found).cpu() & (oracle.remaining() >= 2)).nonzero().squeeze(1) if r else rows_all
            if not len(rows):
                break
            start = oracle.remaining(rows).clamp(max=self.max_queries)
            n_iters = int(start.max()) - 1
            x_best = init(x0, eps, rng_r, lo, hi)
            rows_d = rows.to(dev)
            z = oracle.logits(x_best[rows_d].reshape(len(rows), *shape[1:]), rows).to(dev)
            best = torch.full((n,), -math.inf, device=dev)
            g = goal.subset(rows_d)
            loss = loss_fn(z, g)
            best[rows_d] = torch.where(torch.isfinite(loss), loss, torch.full_like(loss, -math.inf))
            found[rows_d] |= g.reached(z.argmax(dim=1)) & torch.isfinite(z).all(dim=1)
            in_round = torch.zeros(n, dtype=torch.bool)
            in_round[rows] = True
            self._search(oracle, x0, x_best, best, found, in_round, goal, loss_fn, _Pool(rng_r, n, width), p_init,
                         n_iters, shape, eps, lo, hi, linf, ar_h, ar_w)
            better = ((best > keep) | found) & in_round.to(dev)
            keep_x[better], keep[better] = x_best[better], best[better]
        return keep_x.reshape(shape)

    def _search(self, oracle, x0, x_best, best, found, in_round, goal, loss_fn, pool, p_init, n_iters, shape, eps,
                lo, hi, linf, ar_h, ar_w) -> None:
        """One random search: improve ``x_best``/``best`` in place for the rows ``in_round`` until each is found
        (``found``, in place) or out of iterations or budget."""
        c, h, w = x0.shape[1:]
        dev = x0.device
        start = best.clone()  # each row's margin at its start point
        in_round = in_round.clone()  # triage narrows it here; the caller keeps the round's rows
        for it in range(n_iters):
            if self._triage and it == self._triage[0] - 1:  # the start point took one query: this is query triage_after
                # triage: a row goes on only when its own search has closed the share 1 - ratio of its starting gap
                # (margins are < 0 until the goal is reached); a per-row rule, so no row's fate depends on another's
                far = (best < self._triage[1] * start).cpu() & ~found.cpu()
                in_round &= ~far
            act = (in_round & (~found).cpu() & (oracle.remaining() >= 1)).nonzero().squeeze(1)
            if not len(act):
                break
            u = pool.take(it, act).to(dev)
            act_d = act.to(dev)
            xa, xb = x0[act_d], x_best[act_d]
            p = p_schedule(p_init, it, n_iters)
            sh, sw = self._window(p, c, h, w, l2=not linf)
            if linf:
                x_new = self._step_linf(xa, xb, u, sh, sw, eps, lo, hi, ar_h, ar_w)
            else:
                x_new = self._step_l2(xa, xb, u, sh, sw, eps, lo, hi, ar_h, ar_w)
            z = oracle.logits(x_new.reshape(len(act), *shape[1:]), act).to(dev)
            g = goal.subset(act_d)
            loss = loss_fn(z, g)
            reached = g.reached(z.argmax(dim=1)) & torch.isfinite(z).all(dim=1)
            # keep a point that reaches the goal even when the loss (cross-entropy) did not improve
            better = (loss > best[act_d]) | reached  # NaN (out of budget) is never better
            if bool(better.any()):
                idx = act_d[better]
                x_best[idx] = x_new[better]
                best[idx] = loss[better]
            found[act_d] |= reached

    # --- geometry -------------------------------------------------------------------------------
    @staticmethod
    def _image_shape(sample_shape) -> tuple[int, int, int]:
        if len(sample_shape) == 3:
            return tuple(sample_shape)
        d = math.prod(sample_shape)
        r = math.isqrt(d)
        return (1, r, r) if r * r == d else (1, 1, d)

    @staticmethod
    def _window(p: float, c: int, h: int, w: int, *, l2: bool) -> tuple[int, int]:
        s = int(round(math.sqrt(p * h * w)))
        if h == 1:  # a flat input: windows are segments of about the same area
            return 1, max(1, min(s * s, w - 1 if w > 1 else 1))
        if l2:
            s = max(s, 3)
            s += s % 2 == 0
            s = min(s, h, w)
        else:
            s = min(max(s, 1), h - 1, w - 1) if min(h, w) > 1 else 1
        return s, s

    @staticmethod
    def _mask(ch, cw, sh, sw, ar_h, ar_w) -> torch.Tensor:
        mh = (ar_h[None] >= ch[:, None]) & (ar_h[None] < ch[:, None] + sh)
        mw = (ar_w[None] >= cw[:, None]) & (ar_w[None] < cw[:, None] + sw)
        return (mh[:, :, None] & mw[:, None, :])[:, None]  # (m, 1, h, w)

    @staticmethod
    def _corner(u: torch.Tensor, size: int, full: int) -> torch.Tensor:
        return (u * (full - size + 1)).long().clamp(max=full - size)

    def _init_linf(self, x0, eps, rng, lo, hi):
        n, c, h, w = x0.shape
        signs = torch.where(rng.uniform((c, 1, w)).to(x0.device) < 0.5, -1.0, 1.0)  # vertical stripes
        return (x0 + eps * signs).clamp(lo, hi)

    def _init_l2(self, x0, eps, rng, lo, hi):
        n, c, h, w = x0.shape
        dev = x0.device
        sh, sw = (max(h // 5, 1), max(w // 5, 1)) if h > 1 else (1, max(w // 25, 1))
        th, tw = h // sh, w // sw
        oh, ow = (h - sh * th) // 2, (w - sw * tw) // 2
        draws = rng.uniform((th * tw, c + 1)).to(dev)  # per tile: a transpose flag and a sign per channel
        pat = _pattern(sh, sw).to(dev)
        pats = torch.stack([pat, pat.T if sh == sw else pat])
        delta = torch.zeros_like(x0)
        for t in range(th * tw):
            i, j = divmod(t, tw)
            tile = pats[(draws[:, t, 0] < 0.5).long()]  # (n, sh, sw)
            sign = torch.where(draws[:, t, 1:] < 0.5, -1.0, 1.0)  # (n, c)
            delta[:, :, oh + i * sh: oh + (i + 1) * sh, ow + j * sw: ow + (j + 1) * sw] += tile[:, None] * sign[:, :, None, None]
        norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return (x0 + delta / norm * eps).clamp(lo, hi)

    def _step_linf(self, xa, xb, u, sh, sw, eps, lo, hi, ar_h, ar_w):
        m, c, h, w = xa.shape
        ch, cw = self._corner(u[:, 0], sh, h), self._corner(u[:, 1], sw, w)
        # the window's pixels of every sample, gathered: the work below is on the window, not the whole image
        flat = ((ch[:, None] + ar_h[None, :sh])[:, :, None] * w + (cw[:, None] + ar_w[None, :sw])[:, None, :])
        idx = flat.reshape(m, 1, sh * sw).expand(m, c, sh * sw)
        xa_w, xb_w = xa.reshape(m, c, h * w).gather(2, idx), xb.reshape(m, c, h * w).gather(2, idx)
        tries = torch.where(u[:, 2:].view(m, 4, c) < 0.5, -1.0, 1.0)
        signs = tries[:, 0]
        # the paper redraws the signs while the window would stay as it is (up to 3 more draws here)
        for k in range(1, 4):
            cand = (xa_w + eps * signs[:, :, None]).clamp(lo, hi)
            same = ((cand - xb_w).abs() < 1e-7).flatten(1).all(dim=1)
            if not bool(same.any()):
                break
            signs = torch.where(same[:, None], tries[:, k], signs)
        cand = (xa_w + eps * signs[:, :, None]).clamp(lo, hi)
        return xb.reshape(m, c, h * w).scatter(2, idx, cand).view(m, c, h, w)

    def _step_l2(self, xa, xb, u, sh, sw, eps, lo, hi, ar_h, ar_w):
        m, c, h, w = xa.shape
        ch1, cw1 = self._corner(u[:, 0], sh, h), self._corner(u[:, 1], sw, w)
        ch2, cw2 = self._corner(u[:, 2], sh, h), self._corner(u[:, 3], sw, w)
        m1 = self._mask(ch1, cw1, sh, sw, ar_h, ar_w).float()
        m2 = self._mask(ch2, cw2, sh, sw, ar_h, ar_w).float()
        delta = xb - xa
        norm_w1 = (delta * m1).pow(2).sum(dim=(2, 3), keepdim=True).sqrt()  # (m, c, 1, 1)
        norm_img = delta.pow(2).sum(dim=(1, 2, 3), keepdim=True).sqrt()  # (m, 1, 1, 1)
        m12 = torch.maximum(m1, m2)
        norm_w12 = (delta * m12).pow(2).sum(dim=(2, 3), keepdim=True).sqrt()
        # the pseudo-Gaussian pattern, transposed for half of the samples, placed at each sample's window 1
        pat = _pattern(sh, sw).to(xa.device)
        pats = torch.stack([pat, pat.T if sh == sw else pat])[(u[:, 4] < 0.5).long()]  # (m, sh, sw)
        ih = (ar_h[None] - ch1[:, None]).clamp(0, sh - 1)
        iw = (ar_w[None] - cw1[:, None]).clamp(0, sw - 1)
        placed = pats[torch.arange(m, device=xa.device)[:, None, None], ih[:, :, None], iw[:, None, :]][:, None] * m1
        signs = torch.where(u[:, 5: 5 + c] < 0.5, -1.0, 1.0)[:, :, None, None]
        new = placed * signs + delta * m1 / (norm_w1 + 1e-10)
        new_norm = new.pow(2).sum(dim=(2, 3), keepdim=True).sqrt().clamp_min(1e-12)
        budget = ((eps ** 2 - norm_img ** 2).clamp_min(0) / c + norm_w12 ** 2).sqrt()
        delta = delta * (1 - m12) + new / new_norm * budget * m1
        scale = eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return (xa + delta * scale).clamp(lo, hi)
