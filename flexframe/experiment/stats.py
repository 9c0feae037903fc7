"""Paired comparisons over seeds: the mean difference, its 95 % t-interval, and a verdict.

The runs of one seed share their initial weights and batch order, so for two configurations the
per-seed differences of an error are real pairs. Their mean comes with a Student-t confidence
interval over the seeds (``mean ± t(0.975, n - 1) * sd / sqrt(n)``), and the verdict says what
the interval allows, for errors (lower is better):

- ``better``: the whole interval lies below 0;
- ``worse``: the whole interval lies above 0;
- ``no detectable difference at this scale``: the interval holds 0 (this includes identical
  results, where every difference is 0);
- ``n/a (one seed)``: one pair gives no interval.

Differences that are all equal (and not 0) give a zero-width interval: with nothing varying over
the seeds, the verdict follows their sign.

The Student-t quantile is computed here, with no SciPy: the t distribution's CDF through the
regularized incomplete beta function (its continued fraction, evaluated by the modified Lentz
method), inverted by bisection.

Example:
    >>> round(student_t_quantile(0.975, df=4), 6)
    2.776445
    >>> c = compare_paired([-0.3, -0.2, -0.25, -0.35, -0.3])
    >>> c.verdict, round(c.mean, 3), round(c.high, 3)
    ('better', -0.28, -0.209)
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from flexframe._checks import check_number

__all__ = [
    "BETTER",
    "NO_DIFFERENCE",
    "ONE_SEED",
    "WORSE",
    "PairedComparison",
    "compare_paired",
    "regularized_incomplete_beta",
    "student_t_cdf",
    "student_t_quantile",
]

BETTER = "better"
WORSE = "worse"
NO_DIFFERENCE = "no detectable difference at this scale"
ONE_SEED = "n/a (one seed)"


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of ``I_x(a, b)`` (modified Lentz), converging for
    ``x < (a + 1) / (a + b + 2)``."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            return h
    raise ArithmeticError(f"the incomplete beta fraction did not converge for a={a}, b={b}")


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """``I_x(a, b)``: the regularized incomplete beta function, for ``a, b > 0``, ``x`` in
    [0, 1].

    Example:
        >>> regularized_incomplete_beta(1.0, 1.0, 0.3)  # the uniform distribution's CDF
        0.3
        >>> round(regularized_incomplete_beta(2.0, 3.0, 0.4), 6)  # 1 - 0.6**4 - 4 * 0.4 * 0.6**3
        0.5248
    """
    a = check_number("a", a, low=0.0, strict_low=True)
    b = check_number("b", b, low=0.0, strict_low=True)
    x = check_number("x", x)
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must lie in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t with ``df`` degrees of freedom.

    Example:
        >>> student_t_cdf(0.0, 3), round(student_t_cdf(1.0, 1), 6)  # Cauchy: 1/2 + atan(1)/pi
        (0.5, 0.75)
    """
    t = check_number("t", t)
    df = check_number("df", df, low=0.0, strict_low=True)
    if t * t < df:  # near 0: P(|T| < |t|) from t^2/(df+t^2), which keeps its digits there
        central = regularized_incomplete_beta(0.5, df / 2.0, t * t / (df + t * t))
        return 0.5 + 0.5 * central if t > 0 else 0.5 - 0.5 * central
    tail = 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """The ``t`` with ``P(T <= t) = p`` for Student's t with ``df`` degrees of freedom.

    Bisection on :func:`student_t_cdf`, to a relative width of 1e-12.

    Example:
        >>> round(student_t_quantile(0.975, 1), 4), round(student_t_quantile(0.025, 9), 4)
        (12.7062, -2.2622)
    """
    p = check_number("p", p, low=0.0, high=1.0, strict_low=True)
    df = check_number("df", df, low=0.0, strict_low=True)
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:
        low, high = high, 2.0 * high
    while high - low > 1e-12 * high:
        middle = 0.5 * (low + high)
        if student_t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


@dataclass(frozen=True)
class PairedComparison:
    """The mean of per-seed differences (``a - b``), its confidence interval and the verdict.

    Attributes:
        num_pairs: seeds with both runs.
        mean: mean difference.
        low, high: the interval's ends (None with one pair).
        confidence: the interval's level.
        verdict: :data:`BETTER`, :data:`WORSE`, :data:`NO_DIFFERENCE` or :data:`ONE_SEED`.
        differences: the per-seed differences, in seed order.
    """

    num_pairs: int
    mean: float
    low: float | None
    high: float | None
    confidence: float
    verdict: str
    differences: list[float] = field(default_factory=list)

    def interval(self, digits: int = 2) -> str:
        """``"-0.0123 [-0.0150, -0.0096]"``, or the mean alone with one pair.

        Example:
            >>> compare_paired([1.0, 2.0, 3.0]).interval()
            '2 [-0.48, 4.5]'
        """
        if self.low is None or self.high is None:
            return f"{self.mean:.{digits + 1}g}"
        return f"{self.mean:.{digits + 1}g} [{self.low:.{digits}g}, {self.high:.{digits}g}]"


def compare_paired(differences: Sequence[float], confidence: float = 0.95) -> PairedComparison:
    """The t-interval of the mean of paired ``differences`` (one per seed), and its verdict for
    an error (a negative difference is better); see the module docstring.

    Example:
        >>> compare_paired([0.5]).verdict, compare_paired([0.0, 0.0, 0.0]).verdict
        ('n/a (one seed)', 'no detectable difference at this scale')
    """
    values = [check_number(f"differences[{i}]", d) for i, d in enumerate(differences)]
    if not values:
        raise ValueError("differences must not be empty: compare at least one pair of runs")
    confidence = check_number("confidence", confidence, low=0.0, high=1.0, strict_low=True)
    mean = statistics.fmean(values)
    if len(values) == 1:
        return PairedComparison(1, mean, None, None, confidence, ONE_SEED, values)
    half = student_t_quantile(0.5 + confidence / 2.0, len(values) - 1)
    half *= statistics.stdev(values) / math.sqrt(len(values))
    low, high = mean - half, mean + half
    verdict = BETTER if high < 0 else WORSE if low > 0 else NO_DIFFERENCE
    return PairedComparison(len(values), mean, low, high, confidence, verdict, values)
