"""Sound per-sample certificates for small feed-forward nets (IBP and CROWN): samples no attack can break.

A sample is *certified* at Linf epsilon when no input in the box ``[x - eps, x + eps] ∩ [lo, hi]`` (the target's
input box) can reach the attack's goal: every margin ``z_y - z_j`` over the classes ``j`` the goal could reach (all
other classes for an untargeted attack, the target class for a targeted one) has a lower bound above a small
tolerance. A certified sample is robust, whatever attack comes: the harness stops attacking it (work the math does
not need) and the report gives the certified accuracy, a *lower* bound on the true robust accuracy, next to the
attacks' upper bound.

* **IBP**, interval bound propagation (Gowal et al. 2018, "On the effectiveness of interval bound propagation"):
  lower/upper bounds through affine layers as centre ± |W| radius, through ReLU and max-pool (both monotone) by
  applying them to each bound. The last layer is folded into the margins (``(W_y - W_j) h``), which is exact for
  an affine layer and tighter than subtracting two intervals.
* **CROWN** (Zhang et al. 2018, "Efficient neural network robustness certification with general activation
  functions"): linear bounds propagated backwards from the margins to the input, each unstable ReLU (l < 0 < u)
  relaxed between the chord ``u (z - l) / (u - l)`` above and ``alpha z`` below, ``alpha = 1 if u > -l else 0``
  (CROWN-Ada). The pre-activation bounds of each ReLU come from the same backward pass run from that layer, after
  IBP (the tighter of the two is kept). Conv/Linear/ReLU/Flatten only; a net with max-pool gets IBP alone.

Both work in float64 on the net's weights, with any per-channel normalisation folded into the input box
(``(x - mean) / std`` with std > 0 is increasing). The model itself runs in float32, so the harness widens the box
by 1e-6 and asks the margin bound to clear ``1e-4 * (1 + max |logit|)``, far above float32 rounding of these nets.

Deviation from the papers: no optimised slopes (alpha-CROWN) and no branch and bound, so the bounds are looser
than the published certificates (Wong & Kolter's dual bound is close to CROWN's); they are sound, not tight.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustbench_cli.core.threat_model import Norm
from robustbench_cli.targets.pytorch import Normalize, TorchTarget

AFFINE = (nn.Conv2d, nn.Linear)


class UnsupportedNet(ValueError):
    """The bounds do not cover this net (a layer type, an order of layers, a size): no certificate, say why."""

MAX_DENSE = 25_000_000  # entries of one dense hidden layer for CROWN (200 MB in float64)


def input_box(x: torch.Tensor, eps: float, mean=None, std=None, bounds=(0.0, 1.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """The Linf ball clipped to the input box ``bounds``, in float64, mapped through the normalisation if any."""
    lo = (x.double() - eps).clamp(*bounds)
    hi = (x.double() + eps).clamp(*bounds)
    if mean is not None or std is not None:
        c = x.shape[1]
        m = torch.as_tensor(mean if mean is not None else [0.0], dtype=torch.float64).view(1, -1, 1, 1).expand(1, c, 1, 1)
        s = torch.as_tensor(std if std is not None else [1.0], dtype=torch.float64).view(1, -1, 1, 1).expand(1, c, 1, 1)
        if bool((s <= 0).any()):
            raise ValueError("std must be > 0")
        lo, hi = (lo - m) / s, (hi - m) / s
    return lo, hi


def _affine_interval(layer: nn.Conv2d | nn.Linear, lo: torch.Tensor, hi: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    c, r = (hi + lo) / 2, (hi - lo) / 2
    w = layer.weight.double()
    b = None if layer.bias is None else layer.bias.double()
    if isinstance(layer, nn.Conv2d):
        kw: dict[str, Any] = {"stride": layer.stride, "padding": layer.padding, "dilation": layer.dilation,
                              "groups": layer.groups}
        c2, r2 = F.conv2d(c, w, b, **kw), F.conv2d(r, w.abs(), None, **kw)
    else:
        c2, r2 = F.linear(c, w, b), F.linear(r, w.abs())
    return c2 - r2, c2 + r2


def _margin_matrix(last: nn.Linear, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``W_y - W_j`` and ``b_y - b_j`` for every class j, per sample: (n, k, h) and (n, k)."""
    w = last.weight.double()
    b = last.bias.double() if last.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    return w[y].unsqueeze(1) - w.unsqueeze(0), b[y].unsqueeze(1) - b.unsqueeze(0)


def _margins_ok(low: torch.Tensor, y: torch.Tensor, reach: torch.Tensor | None = None, tol=0.0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Certified flag and the smallest margin lower bound over the classes the goal could reach: every j ≠ y, or
    where ``reach`` (n, k) is given, the classes it marks (a targeted goal: the target class only)."""
    low = low.clone()
    low[torch.arange(len(y)), y] = float("inf")
    if reach is not None:
        low = torch.where(reach.to(low.device), low, torch.full_like(low, float("inf")))
    worst = low.min(dim=1).values
    return worst > torch.as_tensor(tol, dtype=worst.dtype), worst


def _check_layers(layers: list[nn.Module]) -> None:
    if not layers or not isinstance(layers[-1], nn.Linear):
        raise UnsupportedNet("the last layer must be nn.Linear (the logits)")
    for layer in layers:
        if not isinstance(layer, (*AFFINE, nn.ReLU, nn.MaxPool2d, nn.Flatten)):
            raise UnsupportedNet(f"no bound propagation for {type(layer).__name__}")


@torch.no_grad()
def ibp_certify(layers: list[nn.Module], x: torch.Tensor, y: torch.Tensor, eps: float, mean=None, std=None, *,
                reach=None, bounds=(0.0, 1.0), tol=0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """IBP: (certified flags, smallest margin lower bound) per sample. ``layers`` computes the logits in order;
    ``reach``, ``tol``: see :func:`_margins_ok`; ``bounds``: the input box."""
    _check_layers(layers)
    y = torch.as_tensor(y, dtype=torch.long)
    lo, hi = input_box(x, eps, mean, std, bounds)
    for layer in layers[:-1]:
        if isinstance(layer, AFFINE):
            lo, hi = _affine_interval(layer, lo, hi)
        elif isinstance(layer, nn.Flatten):
            lo, hi = lo.flatten(1), hi.flatten(1)
        else:  # ReLU, MaxPool2d: monotone, elementwise on the bounds
            lo, hi = layer(lo), layer(hi)
    cm, dm = _margin_matrix(cast(nn.Linear, layers[-1]), y)  # _check_layers: the last layer is nn.Linear
    c, r = (hi + lo) / 2, (hi - lo) / 2
    low = torch.einsum("nkh,nh->nk", cm, c) - torch.einsum("nkh,nh->nk", cm.abs(), r) + dm
    return _margins_ok(low, y, reach, tol)


# --- CROWN -----------------------------------------------------------------------------------------------------
class _Chain:
    """The net as affine blocks A_1..A_L with a ReLU between consecutive ones, with the shapes they see."""

    def __init__(self, layers: list[nn.Module], sample_shape: tuple[int, ...]):
        _check_layers(layers)
        self.affine: list[nn.Conv2d | nn.Linear] = []
        self._dense: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.in_shape: list[tuple[int, ...]] = []
        self.out_shape: list[tuple[int, ...]] = []
        shape = tuple(sample_shape)
        pending_relu = False
        probe = torch.zeros(1, *shape, dtype=torch.float64)
        for layer in layers:
            if isinstance(layer, nn.MaxPool2d):
                raise UnsupportedNet("CROWN here covers Conv/Linear/ReLU nets; max-pool is not relaxed")
            if isinstance(layer, nn.Flatten):
                probe = probe.flatten(1)
                continue
            if isinstance(layer, nn.ReLU):
                if pending_relu or not self.affine:
                    raise UnsupportedNet("expected affine and ReLU layers in alternation")
                pending_relu = True
                continue
            if self.affine and not pending_relu:
                raise UnsupportedNet("two affine layers without a ReLU between them")
            assert isinstance(layer, AFFINE)  # _check_layers let no other layer through
            self.in_shape.append(tuple(probe.shape[1:]))
            probe = _affine_interval(layer, probe, probe)[0]
            self.out_shape.append(tuple(probe.shape[1:]))
            self.affine.append(layer)
            pending_relu = False
        for i in range(1, len(self.affine)):  # rows() keeps each hidden layer as a dense float64 matrix
            size = int(torch.tensor(self.in_shape[i]).prod()) * int(torch.tensor(self.out_shape[i]).prod())
            if size > MAX_DENSE:
                raise UnsupportedNet(f"layer {i + 1} is too large for CROWN here ({size:,} weights dense)")

    def rows(self, i: int, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The weight rows (over A_i's input) and biases of A_i's outputs ``idx``: the first backward step from
        those neurons, read from A_i's dense matrix (built once; cheaper than a transposed convolution per sample)."""
        if i not in self._dense:
            self._dense[i] = _dense(self.affine[i], self.in_shape[i], self.out_shape[i])
        w, b = self._dense[i]
        return w[idx].reshape(len(idx), *self.in_shape[i]), b[idx]

    def back(self, i: int, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float]:
        """Rows ``lam`` over A_i's output -> (rows over A_i's input, lam · bias)."""
        layer = self.affine[i]
        w = layer.weight.double()
        rows = lam.shape[0]
        if isinstance(layer, nn.Conv2d):
            lam4 = lam.reshape(rows, *self.out_shape[i])
            bias = 0.0 if layer.bias is None else (lam4.sum(dim=(2, 3)) * layer.bias.double()).sum(1)
            want = self.in_shape[i][1:]
            padding = cast("tuple[int, ...]", layer.padding)  # for_target refuses string padding
            got = [(o - 1) * s - 2 * p + d * (k - 1) + 1 for o, s, p, d, k in
                   zip(self.out_shape[i][1:], layer.stride, padding, layer.dilation, layer.kernel_size)]
            pad = [a - b for a, b in zip(want, got)]
            out = F.conv_transpose2d(lam4, w, None, layer.stride, padding, pad, layer.groups, layer.dilation)
            return out.reshape(rows, *self.in_shape[i]), bias
        lam2 = lam.reshape(rows, -1)
        bias = 0.0 if layer.bias is None else lam2 @ layer.bias.double()
        return (lam2 @ w).reshape(rows, *self.in_shape[i]), bias


def _dense(layer: nn.Conv2d | nn.Linear, in_shape, out_shape) -> tuple[torch.Tensor, torch.Tensor]:
    """An affine layer as (weight matrix over the flat input, bias per flat output), float64. A convolution's
    matrix is written entry by entry from its kernel: (output, input) pairs that a kernel tap connects."""
    w = layer.weight.double()
    n_out = int(torch.tensor(out_shape).prod())
    bias = layer.bias.double() if layer.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    if isinstance(layer, nn.Linear):
        return w.contiguous(), bias
    (c, h, wd), (o, oh, ow) = in_shape, out_shape
    kh, kw = w.shape[2:]
    grid = torch.meshgrid(*(torch.arange(k) for k in (o, oh, ow, c, kh, kw)), indexing="ij")
    oc, oy, ox, ic, ky, kx = (g.flatten() for g in grid)
    padding = cast("tuple[int, ...]", layer.padding)  # for_target refuses string padding
    iy = oy * layer.stride[0] - padding[0] + ky * layer.dilation[0]
    ix = ox * layer.stride[1] - padding[1] + kx * layer.dilation[1]
    ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < wd)
    rows = ((oc * oh + oy) * ow + ox)[ok]
    cols = ((ic * h + iy) * wd + ix)[ok]
    dense = torch.zeros(n_out, c * h * wd, dtype=torch.float64)
    dense.index_put_((rows, cols), w[oc[ok], ic[ok], ky[ok], kx[ok]], accumulate=True)
    return dense, bias.repeat_interleave(oh * ow)


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
        lam = lam.reshape(lam.shape[0], -1)
        neg = lam.clamp(max=0)
        const = const + neg @ up_b.flatten()
        # rows over A_i's output (pre-activation): the lower slope where a row's weight is >= 0, the upper elsewhere
        lam = torch.where(lam >= 0, lam * low.flatten(), neg * up.flatten())
        lam, bias = chain.back(i, lam)
        const = const + bias
    lo, hi = box
    c, r = ((hi + lo) / 2).reshape(1, -1), ((hi - lo) / 2).reshape(1, -1)
    flat = lam.reshape(lam.shape[0], -1)
    return flat @ c[0] - flat.abs() @ r[0] + const


def _local_first_step(chain: _Chain, idx: torch.Tensor, relax0, box: tuple[torch.Tensor, torch.Tensor]
                      ) -> torch.Tensor | None:
    """Lower bounds of ``z`` and of ``-z`` (2m values) for the outputs ``idx`` of A_1, computed as
    :func:`_backward_lower` from A_1's rows would, but on each neuron's receptive field only: when A_0 and A_1 are
    both convolutions (no dilation), a neuron of A_1 sees a kernel-sized patch of A_0's outputs and, through A_0, a
    patch of the input. The dense rows are over all of A_0's outputs (on the 28x28 MNIST nets 12 times the patch),
    so this is the same sum over the nonzero terms only. None when the layers do not fit (the dense route runs)."""
    a0, a1 = chain.affine[0], chain.affine[1]
    if not (isinstance(a0, nn.Conv2d) and isinstance(a1, nn.Conv2d)) or len(chain.in_shape[0]) != 3:
        return None
    if any(d != 1 for d in (*a0.dilation, *a1.dilation)) or a0.groups != 1 or a1.groups != 1:
        return None
    if chain.out_shape[0] != chain.in_shape[1]:
        return None
    low, up, up_b = relax0
    c0, h0, w0 = chain.out_shape[0]
    c1, h1, w1 = chain.out_shape[1]
    (kh1, kw1), (sh1, sw1) = a1.kernel_size, a1.stride
    ph1, pw1 = cast("tuple[int, int]", a1.padding)
    sh0, sw0 = a0.stride
    ph0, pw0 = cast("tuple[int, int]", a0.padding)
    oc, q = idx // (h1 * w1), idx % (h1 * w1)

    def patches(maps: torch.Tensor, kernel, stride, pad_before, size_after) -> torch.Tensor:
        """(m, C * kh * kw): the kernel-sized window of ``maps`` (C, H, W) at each neuron's position (zero
        outside), for windows starting at ``position * stride - pad_before``."""
        cin, h, w = maps.shape
        pads = [pad_before[1], max(0, size_after[1] - w - pad_before[1]),
                pad_before[0], max(0, size_after[0] - h - pad_before[0])]
        padded = F.pad(maps[None], pads)
        cols = F.unfold(padded, kernel, stride=stride)[0]  # (C * kh * kw, positions)
        ncol = (padded.shape[3] - kernel[1]) // stride[1] + 1
        return cols[:, (q // w1) * ncol + q % w1].T

    span1 = ((h1 - 1) * sh1 + kh1, (w1 - 1) * sw1 + kw1)
    lo_p, up_p, ub_p = (patches(t.reshape(c0, h0, w0), (kh1, kw1), (sh1, sw1), (ph1, pw1), span1)
                        for t in (low, up, up_b))
    w = a1.weight.double()[oc].reshape(len(idx), -1)
    b1 = a1.bias.double()[oc] if a1.bias is not None else torch.zeros(len(idx), dtype=torch.float64)
    pos, neg = w.clamp(min=0), w.clamp(max=0)
    # rows for z and for -z (the lower bound of -z is minus the upper bound of z), relaxed as _backward_lower does
    lam = torch.cat([pos * lo_p + neg * up_p, -(neg * lo_p + pos * up_p)])
    const = torch.cat([b1 + (neg * ub_p).sum(1), -b1 - (pos * ub_p).sum(1)])
    lam4 = lam.reshape(len(lam), c0, kh1, kw1)
    if a0.bias is not None:
        const = const + (lam4.sum(dim=(2, 3)) * a0.bias.double()).sum(1)
    back = F.conv_transpose2d(lam4, a0.weight.double(), None, (sh0, sw0))  # the input patch of each row
    rh, rw = back.shape[2:]
    lo, hi = (t.reshape(chain.in_shape[0]) for t in box)
    before = (ph1 * sh0 + ph0, pw1 * sw0 + pw0)
    step = (sh1 * sh0, sw1 * sw0)
    span = ((h1 - 1) * step[0] + rh, (w1 - 1) * step[1] + rw)
    cen, rad = (patches(t, (rh, rw), step, before, span) for t in ((hi + lo) / 2, (hi - lo) / 2))
    flat = back.flatten(1)
    return (flat * cen.repeat(2, 1)).sum(1) - (flat.abs() * rad.repeat(2, 1)).sum(1) + const


@torch.no_grad()
def crown_certify(layers: list[nn.Module], x: torch.Tensor, y: torch.Tensor, eps: float, mean=None, std=None, *,
                  reach=None, bounds=(0.0, 1.0), tol=0.0, chain: _Chain | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """CROWN: (certified flags, smallest margin lower bound) per sample; one sample at a time (its relaxation is
    its own). Raises UnsupportedNet for layers it does not relax (max-pool). ``chain``: the net's
    :class:`_Chain`, built once by a caller that certifies many batches."""
    chain = chain if chain is not None else _Chain(layers, tuple(x.shape[1:]))
    y = torch.as_tensor(y, dtype=torch.long)
    flags = torch.zeros(len(x), dtype=torch.bool)
    worst = torch.full((len(x),), -float("inf"), dtype=torch.float64)
    for s in range(len(x)):
        # a Flatten may come before the first affine layer
        box = cast("tuple[torch.Tensor, torch.Tensor]",
                   tuple(b.reshape(1, *chain.in_shape[0]) for b in input_box(x[s : s + 1], eps, mean, std, bounds)))
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
                bound = _local_first_step(chain, todo, relax[0], box) if i == 1 else None
                if bound is None:
                    w, b = chain.rows(i, todo)
                    # rows for z and for -z: the lower bound of -z is minus the upper bound of z
                    bound = _backward_lower(chain, i, torch.cat([w, -w]), torch.cat([b, -b]), relax, box)
                flat_lo[todo] = torch.maximum(flat_lo[todo], bound[:m])
                flat_hi[todo] = torch.minimum(flat_hi[todo], -bound[m:])
                lo, hi = flat_lo.reshape(lo.shape), flat_hi.reshape(hi.shape)
        # the margins' rows W_y - W_j are already over the last layer's input
        last = len(chain.affine) - 1
        cm, dm = _margin_matrix(cast(nn.Linear, chain.affine[last]), y[s : s + 1])  # _check_layers: nn.Linear
        low = _backward_lower(chain, last, cm[0].reshape(-1, *chain.in_shape[last]), dm[0], relax, box)
        t = tol[s : s + 1] if isinstance(tol, torch.Tensor) and tol.dim() else tol
        ok, w = _margins_ok(low.unsqueeze(0), y[s : s + 1], None if reach is None else reach[s : s + 1], t)
        flags[s], worst[s] = ok[0], w[0]
    return flags, worst


# --- the harness's certifier ---------------------------------------------------------------------------------------
SLACK = 1e-6  # the box is widened by this much: the harness's projection runs in float32
REL_TOL = 1e-4  # a margin bound must clear REL_TOL * (1 + max |clean logit|): float32 rounding stays far below it


def module_layers(module: nn.Module) -> list[nn.Module] | None:
    """The module as a flat list of layers applied in order, or None when it is not such a chain: an
    ``nn.Sequential`` (nested ones are flattened) of the layers the bounds know. Other modules would need their
    ``forward`` read; they are not certified (the attacks still run on them)."""
    if not isinstance(module, nn.Sequential) or isinstance(module, torch.jit.ScriptModule):
        return None
    out: list[nn.Module] = []
    for m in module:
        if isinstance(m, nn.Sequential):
            inner = module_layers(m)
            if inner is None:
                return None
            out.extend(inner)
        elif isinstance(m, nn.Flatten) and (m.start_dim != 1 or m.end_dim != -1):
            return None
        elif type(m) in (*AFFINE, nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Identity):
            if not isinstance(m, nn.Identity):
                out.append(m)
        else:
            return None
    return out


class Certifier:
    """Certificates for one PyTorch target: IBP for every sample, then CROWN for those IBP leaves (when the net has
    no max-pool). Build it with :func:`for_target`; :meth:`certify` takes a batch of clean-correct samples."""

    def __init__(self, layers: list[nn.Module], sample_shape: tuple[int, ...], mean=None, std=None,
                 bounds=(0.0, 1.0)):
        _check_layers(layers)
        # float64 copies on the CPU: the bounds' arithmetic, whatever device the model runs on
        layers = [copy.deepcopy(m).cpu().double() for m in layers]
        self.layers, self.mean, self.std, self.bounds = layers, mean, std, bounds
        self.crown_skipped: str | None = None  # why CROWN does not apply (IBP alone), when it does not
        try:
            self.chain: _Chain | None = _Chain(layers, sample_shape)
            self.method = "crown"
        except UnsupportedNet as e:
            self.chain, self.method, self.crown_skipped = None, "ibp", str(e)

    def certify(self, x: torch.Tensor, y: torch.Tensor, eps: float, reach: torch.Tensor | None,
                clean_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(certified, margin lower bound) per sample of ``x`` (float32 inputs, labels ``y``)."""
        x = x.detach().cpu()
        y = torch.as_tensor(y, dtype=torch.long).cpu()
        reach = None if reach is None else reach.cpu()
        tol = REL_TOL * (1 + clean_logits.detach().abs().amax(dim=1).double().cpu())
        eps_box = eps + SLACK
        flags, worst = ibp_certify(self.layers, x, y, eps_box, self.mean, self.std, reach=reach, bounds=self.bounds,
                                   tol=tol)
        todo = (~flags).nonzero().squeeze(1)
        if self.chain is not None and len(todo):
            f2, w2 = crown_certify(self.layers, x[todo], y[todo], eps_box, self.mean, self.std,
                                   reach=None if reach is None else reach[todo], bounds=self.bounds, tol=tol[todo],
                                   chain=self.chain)
            flags[todo], worst[todo] = f2, torch.maximum(worst[todo], w2)
        return flags, worst


def for_target(target, sample_shape: tuple[int, ...], probe: torch.Tensor | None = None,
               probe_scores: torch.Tensor | None = None) -> tuple[Certifier | None, str]:
    """A :class:`Certifier` for ``target``, or None and the reason there is none. Only a plain PyTorch target
    qualifies (no detector, no EOT/BPDA wrapper, no TorchScript), and only when the layer chain reproduces the
    target's own logits ``probe_scores`` on ``probe`` (float32 inputs): the certificate must be about the model the harness asks."""

    if type(target) is not TorchTarget:
        return None, f"{type(target).__name__} targets are not certified (a plain PyTorch module is needed)"
    if target.details.get("bpda"):
        return None, "--bpda changes the gradients, not the model; the certificates need a plain model"
    layers = module_layers(target.model)
    if layers is None:
        return None, "the module is not an nn.Sequential of Conv2d/Linear/ReLU/MaxPool2d/Flatten layers"
    if not layers or not isinstance(layers[-1], nn.Linear):
        return None, "the module does not end with a Linear layer (its logits)"
    if any(isinstance(m, nn.Conv2d) and (m.padding_mode != "zeros" or isinstance(m.padding, str) or m.groups != 1)
           for m in layers):
        return None, "a Conv2d with grouped channels, non-zero or string padding is not covered"
    if len(sample_shape) != 3 and any(isinstance(m, (nn.Conv2d, nn.MaxPool2d)) for m in layers[:1]):
        return None, "a convolution needs (C, H, W) inputs"
    mean = std = None
    pre = target.preprocess
    if pre is not None:
        if not isinstance(pre, Normalize):
            return None, "unknown preprocessing"
        c = sample_shape[0] if len(sample_shape) == 3 else 1
        mean = pre.mean.detach().cpu().flatten().expand(c).tolist() if pre.mean.numel() == 1 else pre.mean.flatten().tolist()
        std = pre.std.detach().cpu().flatten().expand(c).tolist() if pre.std.numel() == 1 else pre.std.flatten().tolist()
        if len(sample_shape) != 3:
            return None, "--mean/--std with flat inputs is not covered"
    try:
        cert = Certifier(layers, tuple(sample_shape), mean, std, target.bounds)
        if probe is not None and len(probe):
            assert probe_scores is not None  # given with the probe
            with torch.no_grad():
                h = probe.detach().cpu().double()
                if mean is not None:
                    h = (h - torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)) / torch.tensor(
                        std, dtype=torch.float64).view(1, -1, 1, 1)
                for layer in cert.layers:
                    h = layer(h)
                z = probe_scores.detach().cpu().double()
            if h.shape != z.shape or not bool(((h - z).abs() <= 1e-4 * (1 + z.abs())).all()):
                return None, "the layer chain does not reproduce the model's outputs (not certified)"
    except UnsupportedNet as e:
        return None, str(e)
    except (RuntimeError, ValueError) as e:  # shapes the chain cannot take: no certificate, the attacks still run
        return None, f"the layer chain cannot be bounded ({str(e).strip().splitlines()[0][:120]})"
    return cert, ""


# --- in the cascade -------------------------------------------------------------------------------------------------
CERT_FIRST, CERT_CHUNK = 4, 8  # samples certified in the first round, then in each further round
# The share of samples the bounds must keep proving for "auto" certification to go on. A certified sample spares the
# rest of `standard` 27-37x the first attack's time per sample (wk-mnist-0.1, eran-cifar-pgd at 2/255, wk-cifar-8px
# at 8/255: benchmarks/results/bench_autoattack_*_n{500,1000}.json) while CROWN costs 1-25x it, so a quarter pays.
# A count, not a timing: which samples are certified must not depend on the machine (the undecided entry reads it).
CERT_MIN_SHARE = 0.25


def would_run(threat, built: tuple[Certifier | None, str]) -> bool:
    """Whether :func:`certify_remaining` would certify anything under ``threat`` with ``built`` (else it only
    records why not)."""
    return threat.norm is Norm.LINF and built[0] is not None


def certify_remaining(res, built: tuple[Certifier | None, str], x_all, clean_scores: torch.Tensor,
                      targeted: bool, *, auto: bool, deadline: float | None = None,
                      progress: Callable[[str, int, int], None] | None = None) -> str | None:
    """Certify the samples of ``res`` (a ThreatResult) still robust, a few at a time (``x_all``: its rows, a tensor
    or anything indexed by a tensor of rows into one, with a ``device``); ``built`` is
    :func:`for_target`'s answer. ``auto``: stop as soon as fewer than CERT_MIN_SHARE of the samples tried so far are
    certified: a model the bounds cannot prove gets a few samples' worth of bounds, then the attacks. A sample
    certified here is robust; the rest are attacked as usual. Sets ``res.certificate``; returns why the whole scan
    must stop (the deadline, Ctrl-C), or None."""

    threat = res.threat
    certifier, reason = built
    if threat.norm is not Norm.LINF:  # would_run() says the same
        res.certificate = {"method": None, "skipped": f"certificates cover Linf threats only, not {threat.norm.value}"}
        return None
    if certifier is None:
        res.certificate = {"method": None, "skipped": reason}
        return None
    rows = np.flatnonzero(res.robust & ~res.certified)
    t0, done, stopped, halt = time.perf_counter(), 0, None, None
    k = clean_scores.shape[1]
    label = f"{res.target} {threat.name} certificate ({certifier.method})"
    starts = [0, *range(min(CERT_FIRST, len(rows)), len(rows), CERT_CHUNK)] if len(rows) else []
    for b, e in zip(starts, [*starts[1:], len(rows)]):
        if deadline is not None and time.monotonic() > deadline:
            stopped = halt = "time budget spent"
            break
        got = int(res.certified.sum())
        if auto and done and got < CERT_MIN_SHARE * done:
            stopped = (f"stopped after {done} samples, {got} certified (under {CERT_MIN_SHARE:.0%}): the bounds "
                       "prove too little here to pay; the rest were attacked (--certify certifies them all)")
            break
        idx = rows[b:e]
        reach = None
        if targeted:
            reach = torch.zeros(len(idx), k, dtype=torch.bool)
            reach[torch.arange(len(idx)), torch.as_tensor(res.goal[idx])] = True
        try:
            flags, _ = certifier.certify(x_all[torch.as_tensor(idx, device=x_all.device)],
                                         torch.as_tensor(res.labels[idx]), threat.epsilon, reach,
                                         clean_scores[torch.as_tensor(idx, device=clean_scores.device)])
        except KeyboardInterrupt:
            stopped = halt = "interrupted"
            break
        res.certified[idx[flags.numpy()]] = True
        done += len(idx)
        if progress:
            progress(label, done, len(rows))
    res.certificate = {"method": certifier.method, "attempted": done, "certified": int(res.certified.sum()),
                       "seconds": round(time.perf_counter() - t0, 4), "stopped": stopped}
    if certifier.crown_skipped:
        res.certificate["crown_skipped"] = certifier.crown_skipped
    return halt
