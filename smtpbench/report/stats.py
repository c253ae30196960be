"""Welch's t-test on per-interval samples, with its confidence interval: no scipy needed.

Why Welch: a comparison sets one run's 1 s intervals (per-interval msgs/s, per-interval p99…)
against another's. Each interval value summarises hundreds or thousands of transactions, so its
sampling distribution is close to normal; the two runs have different sample counts and, under
different configurations, different variances, which is exactly what Welch's test allows for
(Student's pooled test would not). It yields a confidence interval for the difference of means
directly, which is what a reader wants next to "faster" or "slower".

Why no scipy: the only special function needed is Student's t distribution. Substituting
u = √ν·tan θ turns its density into C·cos^(ν-1) θ on [0, π/2), a smooth bounded integrand for
ν ≥ 1 (Welch's degrees of freedom are at least 1 with two or more samples per side), so Simpson's
rule on a fixed grid gives the CDF to ~1e-9 (~1e-6 in the far tail, |t| > 1e4, where any p is
"< 0.001" anyway) and bisection gives quantiles. That is twenty lines instead of a 40 MB dependency;
the tests check it against scipy when scipy happens to be present.

Caveat, stated in reports: intervals of one run are not fully independent (drift, GC pauses span
interval boundaries), so these intervals are a lower bound on run-to-run noise; repeated runs
are the stronger evidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_GRID = 2001  # Simpson points (odd)


def _theta_integral(theta: float, df: float) -> float:
    """∫_0^theta cos^(df-1) φ dφ by Simpson's rule."""
    if theta <= 0.0:
        return 0.0
    phi = np.linspace(0.0, theta, _GRID)
    f = np.cos(phi) ** (df - 1.0)
    h = theta / (_GRID - 1)
    return float(h / 3.0 * (f[0] + f[-1] + 4.0 * f[1:-1:2].sum() + 2.0 * f[2:-1:2].sum()))


def _norm(df: float) -> float:
    return math.exp(math.lgamma((df + 1.0) / 2.0) - math.lgamma(df / 2.0)) / math.sqrt(math.pi)


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t with ``df`` ≥ 1 degrees of freedom (fractional allowed)."""
    df = max(float(df), 1.0)
    theta = math.atan(abs(t) / math.sqrt(df))
    half = min(_norm(df) * _theta_integral(theta, df), 0.5)
    return 0.5 + half if t >= 0 else 0.5 - half


def t_quantile(q: float, df: float) -> float:
    """The t with P(T ≤ t) = q (0 < q < 1), by bisection on the angle θ = atan(t/√df)."""
    if not 0.0 < q < 1.0:
        raise ValueError("q must be strictly between 0 and 1")
    if q < 0.5:
        return -t_quantile(1.0 - q, df)
    df = max(float(df), 1.0)
    target = (q - 0.5) / _norm(df)
    lo, hi = 0.0, math.pi / 2.0
    for _ in range(60):
        mid = (lo + hi) / 2.0
        if _theta_integral(mid, df) < target:
            lo = mid
        else:
            hi = mid
    return math.sqrt(df) * math.tan((lo + hi) / 2.0)


@dataclass
class Difference:
    """Welch's comparison of sample ``a`` (baseline) and ``b`` (contender): ``diff`` = mean(b) − mean(a)."""

    mean_a: float
    mean_b: float
    diff: float
    low: float          # confidence interval of diff
    high: float
    confidence: float
    t: float
    df: float
    p: float            # two-sided p-value
    n_a: int
    n_b: int

    @property
    def significant(self) -> bool:
        """The confidence interval excludes 0."""
        return not (self.low <= 0.0 <= self.high)

    def relative(self) -> tuple[float, float, float] | None:
        """``diff``, ``low`` and ``high`` as fractions of the baseline mean (None when that is 0)."""
        if self.mean_a == 0:
            return None
        scale = abs(self.mean_a)
        return self.diff / scale, self.low / scale, self.high / scale


def welch(a, b, confidence: float = 0.95) -> Difference | None:
    """Welch's t-test of mean(b) − mean(a) with its ``confidence`` interval; None with < 2 samples a side."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.size < 2 or b.size < 2:
        return None
    ma, mb = float(a.mean()), float(b.mean())
    va, vb = float(a.var(ddof=1)) / a.size, float(b.var(ddof=1)) / b.size
    diff = mb - ma
    se = math.sqrt(va + vb)
    if se == 0.0:  # both samples constant: the difference is exact
        return Difference(ma, mb, diff, diff, diff, confidence, math.copysign(math.inf, diff) if diff else 0.0,
                          float(a.size + b.size - 2), 0.0 if diff else 1.0, int(a.size), int(b.size))
    # Welch–Satterthwaite degrees of freedom.
    df = (va + vb) ** 2 / ((va ** 2 / (a.size - 1) if va else 0.0) + (vb ** 2 / (b.size - 1) if vb else 0.0))
    t = diff / se
    half = t_quantile(0.5 + confidence / 2.0, df) * se
    p = 2.0 * (1.0 - t_cdf(abs(t), df))
    return Difference(ma, mb, diff, diff - half, diff + half, confidence, t, df, max(p, 0.0), int(a.size), int(b.size))
