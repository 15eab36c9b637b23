"""The statistics behind `compare`'s verdict, against scipy as an independent oracle (the product
itself has no scipy), and the properties a difference of means must have."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, strategies as st

from nanogpt.runs import stats

scipy_stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("df", [1, 1.7, 2, 4.93, 10, 29.5, 200, 5000])
def test_t_cdf_and_quantile_match_scipy(df):
    for t in (-40.0, -3.2, -1.0, -0.01, 0.0, 0.3, 2.1, 7.5, 1e3):
        assert stats.t_cdf(t, df) == pytest.approx(scipy_stats.t.cdf(t, df), rel=1e-10, abs=1e-14)
    for p in (1e-6, 0.01, 0.025, 0.3, 0.5, 0.8, 0.975, 0.999, 1 - 1e-9):
        assert stats.t_ppf(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-8, abs=1e-10)


def test_betainc_matches_scipy():
    special = pytest.importorskip("scipy.special")
    for a, b in ((0.5, 0.5), (1, 3), (2.5, 0.5), (40, 60), (0.1, 12)):
        for x in (1e-9, 0.01, 0.3, 0.5, 0.77, 0.999999):
            assert stats.betainc(a, b, x) == pytest.approx(special.betainc(a, b, x), rel=1e-10, abs=1e-15)


samples = st.lists(st.floats(min_value=-10, max_value=10).map(lambda x: round(x, 9)), min_size=2, max_size=12)
"""Losses and such: values to nine decimals (a variance of 1e-300 underflows, in scipy as here)."""


@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")  # (scipy's, on near-identical samples)
@given(samples, samples)
def test_welch_matches_scipys_test_and_interval(a, b):
    if len(set(a)) == 1 and len(set(b)) == 1:
        return  # no spread: scipy gives nan, stats.welch a certain answer (tested below)
    w = stats.welch(a, b)
    oracle = scipy_stats.ttest_ind(b, a, equal_var=False)
    assert w.t == pytest.approx(oracle.statistic, rel=1e-7, abs=1e-9)
    assert w.p == pytest.approx(oracle.pvalue, rel=1e-6, abs=1e-12)
    low, high = oracle.confidence_interval(0.95)
    assert (w.low, w.high) == (pytest.approx(low, rel=1e-7, abs=1e-9), pytest.approx(high, rel=1e-7, abs=1e-9))
    assert w.df == pytest.approx(oracle.df, rel=1e-9)


@given(samples, samples)
def test_swapping_a_and_b_flips_the_difference_and_keeps_p(a, b):
    ab, ba = stats.welch(a, b), stats.welch(b, a)
    assert ab.difference == -ba.difference
    assert ab.p == pytest.approx(ba.p, rel=1e-12, abs=1e-15)
    assert (ab.low, ab.high) == (pytest.approx(-ba.high, abs=1e-12), pytest.approx(-ba.low, abs=1e-12))


@given(samples)
def test_identical_groups_show_no_difference(a):
    w = stats.welch(a, list(a))
    assert w.difference == 0
    assert w.p == 1.0
    assert w.low <= 0 <= w.high


def test_groups_without_spread_are_certain_either_way():
    assert stats.welch([1.0, 1.0], [1.0, 1.0, 1.0]).p == 1.0
    w = stats.welch([1.0, 1.0], [2.0, 2.0])
    assert w.p == 0.0 and w.low == w.high == 1.0


def test_welch_needs_two_values_a_side():
    with pytest.raises(ValueError, match="two values on each side"):
        stats.welch([1.0], [1.0, 2.0])


def test_the_n_to_detect_has_the_power_it_claims():
    """At the n returned, a simulated Welch test finds the effect about POWER of the time; at n - 2, less."""
    import random

    def power(n: int, effect: float, sd: float, trials: int = 1500) -> float:
        rng = random.Random(0)
        hits = 0
        for _ in range(trials):
            a = [rng.gauss(0, sd) for _ in range(n)]
            b = [rng.gauss(effect, sd) for _ in range(n)]
            hits += stats.welch(a, b).p < stats.ALPHA
        return hits / trials

    n = stats.n_to_detect(0.005, 0.004, 0.004)
    assert n == 12  # (0.004² · 2)(t_.975 + t_.8)² / 0.005² at df 22: the textbook figure is 11-12
    assert 0.75 <= power(n, 0.005, 0.004) <= 0.9
    assert power(n - 4, 0.005, 0.004) < 0.75
    assert stats.n_to_detect(0.0, 1.0, 1.0) is None
    assert stats.n_to_detect(1e-9, 1.0, 1.0) is None  # more runs than anyone would make


@given(st.lists(st.floats(min_value=1, max_value=1e4), min_size=2, max_size=10),
       st.lists(st.floats(min_value=1, max_value=1e4), min_size=2, max_size=10))
def test_the_ratio_interval_holds_the_ratio_and_flips_with_a_and_b(a, b):
    ratio, low, high = stats.ratio_interval(a, b)
    assert ratio == pytest.approx(stats.mean(b) / stats.mean(a))
    assert low <= ratio * (1 + 1e-12) and ratio <= high * (1 + 1e-12)
    back, back_low, back_high = stats.ratio_interval(b, a)
    assert back == pytest.approx(1 / ratio) and back_low == pytest.approx(1 / high) and back_high == pytest.approx(1 / low)


def test_the_ratio_interval_covers_the_true_ratio_about_95_percent_of_the_time():
    import random

    rng = random.Random(1)
    covered = 0
    for _ in range(2000):
        a = [rng.gauss(1000, 30) for _ in range(6)]
        b = [rng.gauss(800, 30) for _ in range(6)]
        _, low, high = stats.ratio_interval(a, b)
        covered += low <= 0.8 <= high
    assert 0.93 <= covered / 2000 <= 0.97
    assert stats.ratio_interval([1.0], [1.0, 2.0]) is None
    assert math.isfinite(stats.ratio_interval([1.0, 1.0], [2.0, 2.0])[0])
