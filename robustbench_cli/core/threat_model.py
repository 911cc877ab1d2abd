"""Threat models: a norm, an epsilon and a goal, parsed once and passed everywhere.

The threat model owns the geometry: it projects candidates onto the epsilon ball around the clean input
and onto the input box, and it measures distances. Every success the harness records went through
:meth:`ThreatModel.project` first, so no attack can claim a point outside the ball.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from fractions import Fraction

import torch

from robustbench_cli.core.errors import UserError


class Norm(str, enum.Enum):
    LINF = "linf"
    L2 = "l2"


_NORM_ALIASES = {"linf": Norm.LINF, "inf": Norm.LINF, "l_inf": Norm.LINF, "l2": Norm.L2, "2": Norm.L2}


def parse_number(text: str) -> float:
    """Parse '0.3', '8/255' or '1e-2' into a float; anything else is a user error."""
    text = text.strip()
    try:
        value = float(Fraction(text)) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise UserError(f"epsilon {text!r} is not a number (write e.g. 0.3 or 8/255)") from None
    if not math.isfinite(value):
        raise UserError(f"epsilon {text!r} must be a finite number")
    return value


@dataclass(frozen=True)
class ThreatModel:
    norm: Norm
    epsilon: float
    eps_text: str
    targeted: bool = False

    def __post_init__(self) -> None:
        if self.epsilon <= 0:
            raise UserError(f"epsilon must be > 0, got {self.eps_text}")
        if self.norm is Norm.LINF and self.epsilon >= 1:
            raise UserError(
                f"linf epsilon {self.eps_text} covers the whole [0,1] input box: every image is reachable "
                "(did you mean a value in pixels/255, e.g. 8/255?)"
            )

    @classmethod
    def parse(cls, spec: str, *, targeted: bool = False) -> ThreatModel:
        """'linf:8/255', 'l2:0.5', 'linf:0.3:targeted' or a bare '0.3' (Linf)."""
        parts = [p.strip() for p in spec.strip().split(":")]
        if len(parts) == 1:
            parts = ["linf", parts[0]]
        if len(parts) == 3:
            if parts[2].lower() != "targeted":
                raise UserError(f"threat {spec!r}: third part must be 'targeted', got {parts[2]!r}")
            targeted = True
            parts = parts[:2]
        if len(parts) != 2 or not parts[1]:
            raise UserError(f"threat {spec!r} is not NORM:EPS (e.g. linf:8/255 or l2:0.5)")
        norm = _NORM_ALIASES.get(parts[0].lower())
        if norm is None:
            raise UserError(f"unknown norm {parts[0]!r} in threat {spec!r} (known: linf, l2)")
        eps_text = re.sub(r"\s+", "", parts[1])
        return cls(norm, parse_number(eps_text), eps_text, targeted)

    @property
    def name(self) -> str:
        return f"{self.norm.value}:{self.eps_text}" + (":targeted" if self.targeted else "")

    def check_against_dim(self, dim: int) -> None:
        """An L2 ball larger than the box's diagonal is nonsensical."""
        if self.norm is Norm.L2 and self.epsilon >= math.sqrt(dim):
            raise UserError(
                f"l2 epsilon {self.eps_text} is at least the diagonal of the [0,1]^{dim} input box "
                f"({math.sqrt(dim):.2f}): every image is reachable"
            )

    # geometry -----------------------------------------------------------------------------------
    def distance(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        d = (x - x0).flatten(1)
        if self.norm is Norm.LINF:
            return d.abs().amax(dim=1)
        return d.norm(p=2, dim=1)

    def project(self, x: torch.Tensor, x0: torch.Tensor, bounds: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
        """Closest-enough point in ball(x0, eps) intersected with the input box.

        For Linf this is the exact Euclidean projection. For L2 we project on the ball, then clip to the
        box; clipping towards x0 (which lies in the box) never increases the L2 distance, so the result
        is always inside both sets.
        """
        lo, hi = bounds
        if self.norm is Norm.LINF:
            x = torch.minimum(torch.maximum(x, x0 - self.epsilon), x0 + self.epsilon)
        else:
            d = x - x0
            n = d.flatten(1).norm(p=2, dim=1).clamp_min(1e-12)
            factor = (self.epsilon / n).clamp(max=1.0).view(-1, *([1] * (x.dim() - 1)))
            x = x0 + d * factor
        return x.clamp(lo, hi)

    def exact_distance(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The distance in float64 between the values as stored (float32 inputs are exact in float64): what
        "inside epsilon" means, with no tolerance."""
        return self.distance(x.double(), x0.double())

    def tighten(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """``x`` moved towards ``x0`` just enough that :meth:`exact_distance` is at most epsilon.

        A float32 projection can land a rounding step outside the ball (``x0 + 0.15`` stored as a float32 can be
        0.15000004 away from ``x0``). Linf: each coordinate outside goes to the float32 nearest its exact boundary
        ``x0 +- eps`` on the inside. L2: rows outside scale their perturbation to the exact radius, less a relative
        2^-20 that doubles until they are inside. Moving towards ``x0`` never leaves the box, since ``x0`` is in
        it. A row still outside after that (never seen) falls back to ``x0`` itself."""
        eps = self.epsilon
        if self.norm is Norm.LINF:
            d = x.double() - x0.double()
            outside = d.abs() > eps
            if bool(outside.any()):
                edge = (x0.double() + torch.sign(d) * eps).to(x.dtype)
                edge = torch.where((edge.double() - x0.double()).abs() > eps, torch.nextafter(edge, x0), edge)
                x = torch.where(outside, edge, x)
        else:
            for k in range(12):
                dist = self.exact_distance(x, x0)
                over = dist > eps
                if not bool(over.any()):
                    break
                factor = torch.where(over, eps / dist.clamp_min(1e-300) * (1 - 2.0 ** (k - 20)), 1.0)
                scaled = x0.double() + (x.double() - x0.double()) * factor.view(-1, *([1] * (x.dim() - 1)))
                x = torch.where(over.view(-1, *([1] * (x.dim() - 1))), scaled.to(x.dtype), x)
        over = self.exact_distance(x, x0) > eps
        return torch.where(over.view(-1, *([1] * (x.dim() - 1))), x0, x)

    def contains(self, x: torch.Tensor, x0: torch.Tensor, bounds: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
        """Per-sample check that x is finite and lies in the box and in the ball, exactly (no tolerance)."""
        lo, hi = bounds
        inside_box = ((x >= lo) & (x <= hi)).flatten(1).all(dim=1)
        finite = torch.isfinite(x).flatten(1).all(dim=1)
        return finite & inside_box & (self.exact_distance(x, x0) <= self.epsilon)
