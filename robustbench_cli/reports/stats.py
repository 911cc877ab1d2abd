"""The numbers behind comparisons and gates: displayed rounding, Wilson intervals, the exact McNemar test.

Decisions are taken on the number a person reads. :func:`pct` turns a fraction into the percentage shown (a
``Decimal`` with a fixed number of decimals, rounded the way the display rounds it), and every comparison works
on those decimals, never on the raw float behind them.
"""

from __future__ import annotations

import math
from decimal import Decimal

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def pct(fraction: float | None, places: int = 1) -> Decimal | None:
    """The percentage displayed for ``fraction`` with ``places`` decimals (``None`` stays ``None``)."""
    if fraction is None or fraction != fraction:
        return None
    return Decimal(f"{100.0 * float(fraction):.{places}f}")


def pct_text(fraction: float | None, places: int = 1) -> str:
    p = pct(fraction, places)
    return "–" if p is None else f"{p}%"


def signed(d: Decimal | float | None, unit: str = "pp") -> str:
    """A difference with its sign: ``+1.5pp``, ``-0.3pp``, ``±0.0pp``."""
    if d is None:
        return "–"
    if d == 0:
        return f"±{abs(d)}{unit}"
    return f"{'+' if d > 0 else '-'}{abs(d)}{unit}"


def decimals(d: Decimal) -> int:
    """Decimal places ``d`` needs: ``Decimal('40.50')`` needs 1, ``Decimal('40.00')`` none."""
    return max(0, -int(d.normalize().as_tuple().exponent))


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval for ``k`` successes in ``n`` trials (None when n is 0)."""
    if n <= 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs (a binomial test with p = 1/2).

    Computed with integers: the tail sum of binomial coefficients over 2**(b+c), so it stays exact for any n.
    """
    if b < 0 or c < 0:
        raise ValueError("counts must be >= 0")
    n = b + c
    if n == 0:
        return 1.0
    m = min(b, c)
    tail = 0
    coef = 1  # C(n, 0)
    for k in range(m + 1):
        tail += coef
        coef = coef * (n - k) // (k + 1)
    return min(1.0, 2 * tail / 2**n)


def count_of(fraction: float, n: int) -> int:
    """The count behind a fraction of ``n`` samples (reports store fractions of n)."""
    return int(round(fraction * n))
