"""Sound per-sample Linf certificates for small feed-forward nets: IBP and CROWN (used by bench_autoattack.py).

A sample is *certified* at epsilon when no input in the box ``[x - eps, x + eps] ∩ [0, 1]`` changes the predicted
class away from the label: every margin ``z_y - z_j`` (j ≠ y) has a lower bound above 0. A certified sample can
never be broken by any attack, so an attack that "breaks" one is wrong, and a robust accuracy below the certified
accuracy of the same samples is a bug.

* **IBP**, interval bound propagation (Gowal et al. 2018, "On the effectiveness of interval bound propagation"):
  lower/upper bounds through affine layers as centre ± |W| radius, through ReLU and max-pool (both monotone) by
  applying them to each bound. The last layer is folded into the margins (``(W_y - W_j) h``), which is exact for
  an affine layer and tighter than subtracting two intervals.
* **CROWN** (Zhang et al. 2018, "Efficient neural network robustness certification with general activation
  functions"): linear bounds propagated backwards from the margins to the input, each unstable ReLU (l < 0 < u)
  relaxed between the chord ``u (z - l) / (u - l)`` above and ``alpha z`` below, ``alpha = 1 if u > -l else 0``
  (CROWN-Ada). The pre-activation bounds of each ReLU come from the same backward pass run from that layer, after
  IBP (the tighter of the two is kept). Conv/Linear/ReLU/Flatten only; a net with max-pool gets IBP alone.

Both work in float64 on the net's exact arithmetic, with any per-channel normalisation folded into the input box
(``(x - mean) / std`` with std > 0 is increasing). The nets the attacks query run in float32; a certified margin
of ~1e-6 could in principle disagree with float32 rounding, so the margins are returned for a flagged sample.

Deviation from the papers: no optimised slopes (alpha-CROWN) and no branch and bound, so the bounds are looser
than the published certificates (Wong & Kolter's dual bound is close to CROWN's); they are sound, not tight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

AFFINE = (nn.Conv2d, nn.Linear)


def input_box(x: torch.Tensor, eps: float, mean=None, std=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The Linf ball clipped to [0,1], in float64, mapped through the normalisation when there is one."""
    lo = (x.double() - eps).clamp(0, 1)
    hi = (x.double() + eps).clamp(0, 1)
    if mean is not None or std is not None:
        c = x.shape[1]
        m = torch.as_tensor(mean if mean is not None else [0.0], dtype=torch.float64).view(1, -1, 1, 1).expand(1, c, 1, 1)
        s = torch.as_tensor(std if std is not None else [1.0], dtype=torch.float64).view(1, -1, 1, 1).expand(1, c, 1, 1)
        if bool((s <= 0).any()):
            raise ValueError("std must be > 0")
        lo, hi = (lo - m) / s, (hi - m) / s
    return lo, hi


def _affine_interval(layer: nn.Module, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c, r = (hi + lo) / 2, (hi - lo) / 2
    w = layer.weight.double()
    b = None if layer.bias is None else layer.bias.double()
    if isinstance(layer, nn.Conv2d):
        kw = {"stride": layer.stride, "padding": layer.padding, "dilation": layer.dilation, "groups": layer.groups}
        c2, r2 = F.conv2d(c, w, b, **kw), F.conv2d(r, w.abs(), None, **kw)
    else:
        c2, r2 = F.linear(c, w, b), F.linear(r, w.abs())
    return c2 - r2, c2 + r2


def _margin_matrix(last: nn.Linear, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``W_y - W_j`` and ``b_y - b_j`` for every class j, per sample: (n, k, h) and (n, k)."""
    w = last.weight.double()
    b = last.bias.double() if last.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    return w[y].unsqueeze(1) - w.unsqueeze(0), b[y].unsqueeze(1) - b.unsqueeze(0)


def _margins_ok(low: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Certified flag and the smallest margin lower bound over j ≠ y."""
    low = low.clone()
    low[torch.arange(len(y)), y] = float("inf")
    worst = low.min(dim=1).values
    return worst > 0, worst


def _check_layers(layers: list[nn.Module]) -> None:
    if not layers or not isinstance(layers[-1], nn.Linear):
        raise NotImplementedError("the last layer must be nn.Linear (the logits)")
    for layer in layers:
        if not isinstance(layer, (*AFFINE, nn.ReLU, nn.MaxPool2d, nn.Flatten)):
            raise NotImplementedError(f"no bound propagation for {type(layer).__name__}")


@torch.no_grad()
def ibp_certify(layers: list[nn.Module], x: torch.Tensor, y: torch.Tensor, eps: float, mean=None, std=None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """IBP: (certified flags, smallest margin lower bound) per sample. ``layers`` computes the logits in order."""
    _check_layers(layers)
    y = torch.as_tensor(y, dtype=torch.long)
    lo, hi = input_box(x, eps, mean, std)
    for layer in layers[:-1]:
        if isinstance(layer, AFFINE):
            lo, hi = _affine_interval(layer, lo, hi)
        elif isinstance(layer, nn.Flatten):
            lo, hi = lo.flatten(1), hi.flatten(1)
        else:  # ReLU, MaxPool2d: monotone, elementwise on the bounds
            lo, hi = layer(lo), layer(hi)
    cm, dm = _margin_matrix(layers[-1], y)
    c, r = (hi + lo) / 2, (hi - lo) / 2
    low = torch.einsum("nkh,nh->nk", cm, c) - torch.einsum("nkh,nh->nk", cm.abs(), r) + dm
    return _margins_ok(low, y)


# --- CROWN -----------------------------------------------------------------------------------------------------
class _Chain:
    """The net as affine blocks A_1..A_L with a ReLU between consecutive ones, with the shapes they see."""

    def __init__(self, layers: list[nn.Module], sample_shape: tuple[int, ...]):
        _check_layers(layers)
        self.affine: list[nn.Module] = []
        self._dense: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.in_shape: list[tuple[int, ...]] = []
        self.out_shape: list[tuple[int, ...]] = []
        shape = tuple(sample_shape)
        pending_relu = False
        probe = torch.zeros(1, *shape, dtype=torch.float64)
        for layer in layers:
            if isinstance(layer, nn.MaxPool2d):
                raise NotImplementedError("CROWN here covers Conv/Linear/ReLU nets; max-pool is not relaxed")
            if isinstance(layer, nn.Flatten):
                probe = probe.flatten(1)
                continue
            if isinstance(layer, nn.ReLU):
                if pending_relu or not self.affine:
                    raise NotImplementedError("expected affine and ReLU layers in alternation")
                pending_relu = True
                continue
            if self.affine and not pending_relu:
                raise NotImplementedError("two affine layers without a ReLU between them")
            self.in_shape.append(tuple(probe.shape[1:]))
            probe = _affine_interval(layer, probe, probe)[0]
            self.out_shape.append(tuple(probe.shape[1:]))
            self.affine.append(layer)
            pending_relu = False

    def rows(self, i: int, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The weight rows (over A_i's input) and biases of A_i's outputs ``idx``: the first backward step from
        those neurons, read from A_i's dense matrix (built once; cheaper than a transposed convolution per sample)."""
        if i not in self._dense:
            n_in = int(torch.tensor(self.in_shape[i]).prod())
            eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, *self.in_shape[i])
            layer = self.affine[i]
            bias = layer.bias.double() if layer.bias is not None else None
            zero = _affine_interval(layer, torch.zeros_like(eye[:1]), torch.zeros_like(eye[:1]))[0].flatten()
            cols = _affine_interval(layer, eye, eye)[0].reshape(n_in, -1) - zero  # the linear part, column by column
            self._dense[i] = (cols.T.contiguous(), zero if bias is not None else torch.zeros_like(zero))
        w, b = self._dense[i]
        return w[idx].reshape(len(idx), *self.in_shape[i]), b[idx]

    def back(self, i: int, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``lam`` over A_i's output -> (rows over A_i's input, lam · bias)."""
        layer = self.affine[i]
        w = layer.weight.double()
        rows = lam.shape[0]
        if isinstance(layer, nn.Conv2d):
            lam4 = lam.reshape(rows, *self.out_shape[i])
            bias = 0.0 if layer.bias is None else (lam4.sum(dim=(2, 3)) * layer.bias.double()).sum(1)
            want = self.in_shape[i][1:]
            got = [(o - 1) * s - 2 * p + d * (k - 1) + 1 for o, s, p, d, k in
                   zip(self.out_shape[i][1:], layer.stride, layer.padding, layer.dilation, layer.kernel_size)]
            pad = [a - b for a, b in zip(want, got)]
            out = F.conv_transpose2d(lam4, w, None, layer.stride, layer.padding, pad, layer.groups, layer.dilation)
            return out.reshape(rows, *self.in_shape[i]), bias
        lam2 = lam.reshape(rows, -1)
        bias = 0.0 if layer.bias is None else lam2 @ layer.bias.double()
        return (lam2 @ w).reshape(rows, *self.in_shape[i]), bias


def _relax(lo: torch.Tensor, hi: torch.Tensor):
    """Per neuron: lower slope, upper slope, upper intercept of the ReLU relaxation on [lo, hi]."""
    active, unstable = lo >= 0, (lo < 0) & (hi > 0)
    denom = torch.where(unstable, hi - lo, torch.ones_like(hi))
    up = torch.where(unstable, hi / denom, active.double())
    up_b = torch.where(unstable, -hi * lo / denom, torch.zeros_like(hi))
    low = torch.where(unstable, (hi > -lo).double(), active.double())
    return low, up, up_b


def _backward_lower(chain: _Chain, top: int, lam: torch.Tensor, const: torch.Tensor, relax: list,
                    box: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Lower bounds of ``lam · a_top + const`` over the input box, where ``a_top`` is the input of A_top (the ReLU
    output after A_{top-1}; ``top`` = 0 means the input itself). ``relax[i]`` relaxes the ReLU after A_i."""
    for i in range(top - 1, -1, -1):
        low, up, up_b = relax[i]
        lam = lam.reshape(lam.shape[0], *chain.out_shape[i])
        pos, neg = lam.clamp(min=0), lam.clamp(max=0)
        const = const + (neg * up_b).flatten(1).sum(1)
        lam = pos * low + neg * up  # rows over A_i's output (pre-activation)
        lam, bias = chain.back(i, lam)
        const = const + bias
    lo, hi = box
    c, r = ((hi + lo) / 2).reshape(1, -1), ((hi - lo) / 2).reshape(1, -1)
    flat = lam.reshape(lam.shape[0], -1)
    return flat @ c[0] - flat.abs() @ r[0] + const


@torch.no_grad()
def crown_certify(layers: list[nn.Module], x: torch.Tensor, y: torch.Tensor, eps: float, mean=None, std=None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """CROWN: (certified flags, smallest margin lower bound) per sample; one sample at a time (its relaxation is
    its own). Raises NotImplementedError for layers it does not relax (max-pool)."""
    chain = _Chain(layers, tuple(x.shape[1:]))
    y = torch.as_tensor(y, dtype=torch.long)
    flags = torch.zeros(len(x), dtype=torch.bool)
    worst = torch.full((len(x),), -float("inf"), dtype=torch.float64)
    for s in range(len(x)):
        # a Flatten may come before the first affine layer
        box = tuple(b.reshape(1, *chain.in_shape[0]) for b in input_box(x[s : s + 1], eps, mean, std))
        relax: list = []
        lo, hi = _affine_interval(chain.affine[0], *box)  # exact for the first layer
        for i in range(1, len(chain.affine)):
            relax.append(_relax(lo[0], hi[0]))
            # IBP for the next pre-activation, then CROWN on the neurons IBP leaves unstable
            shape = (1, *chain.in_shape[i])  # a Flatten may sit between A_{i-1} and A_i
            lo, hi = _affine_interval(chain.affine[i], torch.relu(lo).reshape(shape), torch.relu(hi).reshape(shape))
            flat_lo, flat_hi = lo.flatten(), hi.flatten()
            todo = torch.nonzero((flat_lo < 0) & (flat_hi > 0)).flatten()
            if len(todo):
                m = len(todo)
                w, b = chain.rows(i, todo)
                # rows for z and for -z: the lower bound of -z is minus the upper bound of z
                bound = _backward_lower(chain, i, torch.cat([w, -w]), torch.cat([b, -b]), relax, box)
                flat_lo[todo] = torch.maximum(flat_lo[todo], bound[:m])
                flat_hi[todo] = torch.minimum(flat_hi[todo], -bound[m:])
                lo, hi = flat_lo.reshape(lo.shape), flat_hi.reshape(hi.shape)
        # the margins' rows W_y - W_j are already over the last layer's input
        last = len(chain.affine) - 1
        cm, dm = _margin_matrix(chain.affine[last], y[s : s + 1])
        low = _backward_lower(chain, last, cm[0].reshape(-1, *chain.in_shape[last]), dm[0], relax, box)
        ok, w = _margins_ok(low.unsqueeze(0), y[s : s + 1])
        flags[s], worst[s] = ok[0], w[0]
    return flags, worst
