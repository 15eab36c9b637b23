"""The statistics `compare` needs to say whether B differs from A: Student's t, Welch's test, power.

Pure Python (math only): the product depends on no scipy. The t distribution's CDF is the
regularized incomplete beta function (a continued fraction, Lentz's method); its quantile is found
by bisection on the CDF, which is monotone, so it cannot fail to converge. The tests check every
figure against scipy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs

CONFIDENCE = 0.95
"""The confidence level of every interval `compare` reports."""
ALPHA = 1 - CONFIDENCE
POWER = 0.8
"""The power a "would detect" figure is computed for: the chance of p < ALPHA if the effect is real."""


# ----------------------------------------------------------------------- the t distribution


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if not (a > 0 and b > 0):
        raise ValueError(f"betainc needs a, b > 0 (got {a}, {b})")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc needs 0 <= x <= 1 (got {x})")
    if x == 0.0 or x == 1.0:
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    # the continued fraction converges fast for x < (a+1)/(a+b+2); the symmetry I_x(a,b) = 1 - I_{1-x}(b,a) covers the rest
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            return h
    return h  # (not reached for the a, b a t test uses; the last value is within eps of the limit)


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom (df > 0, not necessarily whole)."""
    if df <= 0:
        raise ValueError(f"t distribution needs df > 0 (got {df})")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t > 0 else tail


def t_sf(t: float, df: float) -> float:
    """P(T > t), computed without the cancellation of 1 - t_cdf for large t."""
    return t_cdf(-t, df)


def t_ppf(p: float, df: float) -> float:
    """The quantile: the t with P(T <= t) = p, for 0 < p < 1."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"t quantile needs 0 < p < 1 (got {p})")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    # bisection on the upper tail, which t_sf computes without cancellation: 1 - p keeps the digits
    # a quantile near 1 needs, where P(T <= t) ~ 1 would have lost them
    tail = 1.0 - p
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > tail:  # (df = 1, p = 1 - 1e-12 needs hi ~ 3e11: the doubling gets there in ~40 steps)
        lo, hi = hi, hi * 2.0
    for _ in range(400):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if t_sf(mid, df) > tail:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


# ------------------------------------------------------------------------------ two samples


def mean(xs: Sequence[float]) -> float:
    return math.fsum(xs) / len(xs)


def sd(xs: Sequence[float]) -> float | None:
    """The sample standard deviation (n - 1 in the denominator); None for fewer than two values."""
    if len(xs) < 2:
        return None
    m = mean(xs)
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1))


@attrs.frozen
class Welch:
    """Welch's two-sample t test of B against A: B's mean minus A's, with its interval."""

    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    difference: float
    """mean(B) - mean(A)."""
    se: float
    """The standard error of the difference."""
    df: float
    """Welch–Satterthwaite degrees of freedom."""
    t: float
    p: float
    """Two-sided p-value of "the means are equal"."""
    low: float
    high: float
    """The CONFIDENCE interval of the difference."""

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0


def welch(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Welch:
    """Welch's t test and interval; needs two values on each side (ValueError otherwise)."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Welch's test needs at least two values on each side (got {len(a)} and {len(b)})")
    ma, mb = mean(a), mean(b)
    va, vb = sd(a) ** 2 / len(a), sd(b) ** 2 / len(b)  # type: ignore[operator]
    se = math.sqrt(va + vb)
    diff = mb - ma
    if se == 0.0:
        # no spread at all (identical replicates): a difference is certain, none is no evidence of one
        p = 1.0 if diff == 0.0 else 0.0
        return Welch(len(a), len(b), ma, mb, diff, 0.0, math.inf, 0.0 if diff == 0 else math.copysign(math.inf, diff), p, diff, diff)
    df = welch_df(va, vb, len(a), len(b))
    t = diff / se
    p = min(1.0, 2.0 * t_sf(abs(t), df))
    q = t_ppf(0.5 + confidence / 2.0, df)
    return Welch(len(a), len(b), ma, mb, diff, se, df, t, p, diff - q * se, diff + q * se)


def n_to_detect(effect: float, sd_a: float, sd_b: float, alpha: float = ALPHA, power: float = POWER, most: int = 100_000) -> int | None:
    """About how many runs on each side a two-sided Welch test at `alpha` needs to find a true
    difference of `effect` with probability `power`, given each side's standard deviation.

    n = (sd_a² + sd_b²)(t_{1-α/2,df} + t_{power,df})² / effect², with df = Welch's for n each,
    iterated to a fixed point (the usual t-based form of the normal approximation). None when no
    n up to `most` suffices (or the effect is 0)."""
    if effect == 0 or not math.isfinite(effect):
        return None
    variance = sd_a**2 + sd_b**2
    if variance == 0:
        return 2
    n = 2
    for _ in range(100):
        df = _equal_n_df(sd_a, sd_b, n)
        need = variance * (t_ppf(1 - alpha / 2, df) + t_ppf(power, df)) ** 2 / effect**2
        nxt = max(2, math.ceil(need))
        if nxt > most:
            return None
        if nxt == n:
            return n
        n = nxt
    return n


def _equal_n_df(sd_a: float, sd_b: float, n: int) -> float:
    va, vb = sd_a**2 / n, sd_b**2 / n
    if va + vb == 0:
        return float(2 * n - 2)
    return welch_df(va, vb, n, n)


def welch_df(va: float, vb: float, n_a: int, n_b: int) -> float:
    """Welch–Satterthwaite: (va + vb)² / (va²/(n_a-1) + vb²/(n_b-1)), va and vb the squared standard
    errors; computed from their shares of va + vb, so that tiny variances do not underflow to 0/0."""
    total = va + vb
    ra, rb = va / total, vb / total
    return 1.0 / (ra**2 / (n_a - 1) + rb**2 / (n_b - 1))


def ratio_interval(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float] | None:
    """mean(B)/mean(A) and its interval (delta method on the log of the ratio, Welch–Satterthwaite df).

    None when a side has fewer than two values or a mean is not positive."""
    if len(a) < 2 or len(b) < 2:
        return None
    ma, mb = mean(a), mean(b)
    if ma <= 0 or mb <= 0:
        return None
    # var(log mean) ~ var(mean) / mean²
    va, vb = (sd(a) / ma) ** 2 / len(a), (sd(b) / mb) ** 2 / len(b)  # type: ignore[operator]
    ratio = mb / ma
    if va + vb == 0:
        return ratio, ratio, ratio
    df = welch_df(va, vb, len(a), len(b))
    half = t_ppf(0.5 + confidence / 2.0, df) * math.sqrt(va + vb)
    return ratio, ratio * math.exp(-half), ratio * math.exp(half)
