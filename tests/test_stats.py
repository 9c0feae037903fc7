"""The ablation's statistics: the Student-t quantile written here, and the paired comparisons.

The references are independent of the code: published t tables, closed forms of the t CDF for
1 and 2 degrees of freedom, the incomplete beta function's closed forms (a binomial sum for
integer parameters), a Simpson integral of the t density, and intervals computed in the test
from known per-seed numbers with the table's quantiles.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexframe.experiment.stats import (
    BETTER,
    NO_DIFFERENCE,
    ONE_SEED,
    WORSE,
    compare_paired,
    regularized_incomplete_beta,
    student_t_cdf,
    student_t_quantile,
)

# Two-sided 95 % (p = 0.975), 90 % (0.95) and 99 % (0.995) quantiles of Student's t, from the
# standard tables (e.g. NIST/SEMATECH e-Handbook, table 1.4.2.7.1, to the digits printed there).
T_TABLE = {
    0.975: {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
            9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000, 100: 1.984},
    0.95: {1: 6.314, 2: 2.920, 4: 2.132, 9: 1.833, 30: 1.697, 100: 1.660},
    0.995: {1: 63.657, 2: 9.925, 4: 4.604, 9: 3.250, 30: 2.750, 100: 2.626},
}  # fmt: skip


@pytest.mark.parametrize(
    "p, df, want", [(p, df, want) for p, row in T_TABLE.items() for df, want in row.items()]
)
def test_the_t_quantile_matches_the_published_table(p, df, want):
    assert student_t_quantile(p, df) == pytest.approx(want, abs=6e-4)
    assert student_t_quantile(1 - p, df) == pytest.approx(-want, abs=6e-4)  # symmetric


def test_the_t_quantile_to_many_digits():
    # Values to 9 digits (Abramowitz & Stegun table 26.10; the normal limit for large df).
    assert student_t_quantile(0.975, 1) == pytest.approx(12.706204736, rel=1e-9)
    assert student_t_quantile(0.975, 4) == pytest.approx(2.776445105, rel=1e-9)
    assert student_t_quantile(0.975, 10**6) == pytest.approx(1.959966, rel=1e-6)
    assert student_t_quantile(0.5, 3) == 0.0


@given(st.floats(-50, 50, allow_nan=False))
def test_the_cdf_has_the_closed_forms_of_one_and_two_degrees_of_freedom(t):
    assert student_t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
    assert student_t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)


def simpson_t_cdf(t: float, df: float, n: int = 4000) -> float:
    """The t density integrated from 0 to ``t`` by Simpson's rule, plus 1/2."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    density = lambda x: c * (1 + x * x / df) ** (-(df + 1) / 2)  # noqa: E731
    h = t / n
    total = density(0) + density(t)
    total += sum((4 if i % 2 else 2) * density(i * h) for i in range(1, n))
    return 0.5 + total * h / 3


@given(st.floats(-8, 8, allow_nan=False), st.floats(0.5, 60))
@settings(max_examples=30)
def test_the_cdf_is_the_integral_of_the_density(t, df):
    assert student_t_cdf(t, df) == pytest.approx(simpson_t_cdf(t, df), abs=1e-8)


@given(st.floats(1e-6, 1 - 1e-6), st.integers(1, 200))
def test_the_quantile_inverts_the_cdf(p, df):
    assert student_t_cdf(student_t_quantile(p, df), df) == pytest.approx(p, abs=1e-10)


@given(st.integers(1, 12), st.integers(1, 12), st.floats(0, 1))
def test_the_incomplete_beta_is_a_binomial_tail_for_integer_parameters(a, b, x):
    # I_x(a, b) = P(Binomial(a + b - 1, x) >= a)
    n = a + b - 1
    want = sum(math.comb(n, j) * x**j * (1 - x) ** (n - j) for j in range(a, n + 1))
    assert regularized_incomplete_beta(a, b, x) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("a, b, x", [(0, 1, 0.5), (1, -1, 0.5), (1, 1, 1.5), (1, 1, float("nan"))])
def test_the_incomplete_beta_refuses_values_outside_its_domain(a, b, x):
    with pytest.raises(ValueError):
        regularized_incomplete_beta(a, b, x)


@pytest.mark.parametrize("p, df", [(0.0, 3), (1.0, 3), (0.5, 0), (1.2, 3), (0.9, -1)])
def test_the_quantile_refuses_probabilities_and_degrees_outside_their_range(p, df):
    with pytest.raises(ValueError):
        student_t_quantile(p, df)


# -- paired comparisons ---------------------------------------------------------------------------
def reference_interval(differences: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % t-interval by hand, with the table's quantile."""
    n = len(differences)
    mean = sum(differences) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    half = T_TABLE[0.975][n - 1] * sd / math.sqrt(n)
    return mean, mean - half, mean + half


@pytest.mark.parametrize(
    "differences, verdict",
    [
        ([-0.012, -0.009, -0.011, -0.010, -0.013], BETTER),  # all below: better
        ([0.004, 0.006, 0.003, 0.007, 0.005], WORSE),
        ([-0.002, 0.003, -0.001, 0.002, 0.0005], NO_DIFFERENCE),  # straddles 0
        ([-0.02, 0.001], NO_DIFFERENCE),  # two seeds: t(1) makes the interval wide
        ([-0.5, -0.4, -0.45], BETTER),
        ([0.01, -0.03, 0.02, 0.015, -0.01, 0.0, 0.005, -0.002, 0.001, 0.003], NO_DIFFERENCE),
    ],
)
def test_a_paired_comparison_is_the_t_interval_of_the_mean_difference(differences, verdict):
    got = compare_paired(differences)
    mean, low, high = reference_interval(differences)
    assert got.num_pairs == len(differences) and got.differences == differences
    assert got.mean == pytest.approx(mean, rel=1e-12)
    assert got.low == pytest.approx(low, rel=2e-4, abs=1e-12)
    assert got.high == pytest.approx(high, rel=2e-4, abs=1e-12)
    assert got.verdict == verdict


def test_one_seed_gives_no_interval_and_says_so():
    got = compare_paired([-0.25])
    assert (got.num_pairs, got.mean, got.low, got.high, got.verdict) == (1, -0.25, None, None,
                                                                          ONE_SEED)  # fmt: skip
    assert got.interval() == "-0.25"


@pytest.mark.parametrize("n", [2, 5])
def test_identical_runs_have_no_difference_and_an_interval_of_zero_width(n):
    got = compare_paired([0.0] * n)
    assert (got.mean, got.low, got.high, got.verdict) == (0.0, 0.0, 0.0, NO_DIFFERENCE)


@pytest.mark.parametrize("value, verdict", [(-0.003, BETTER), (0.003, WORSE)])
def test_equal_nonzero_differences_give_a_point_interval_and_their_sign(value, verdict):
    got = compare_paired([value] * 5)
    assert got.low == got.high == pytest.approx(value) and got.verdict == verdict


@pytest.mark.parametrize(
    "differences, error",
    [([], ValueError), ([0.1, float("nan")], ValueError), ([0.1, "a"], TypeError)],
)
def test_bad_differences_are_refused(differences, error):
    with pytest.raises(error):
        compare_paired(differences)
