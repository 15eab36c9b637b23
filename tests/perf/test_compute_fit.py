"""The ladder's fit L(C) = E + A·C^-alpha recovers the law that made the points."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, strategies as st

from nanogpt.perf.laws import fit_compute_law


@given(st.floats(0.5, 3.0), st.floats(1.0, 1e3), st.floats(0.05, 0.5), st.integers(4, 8), st.floats(1e12, 1e16))
def test_the_fit_recovers_a_known_law_within_one_percent(E, A, alpha, rungs, start):
    compute = [start * 4**i for i in range(rungs)]  # rungs a factor 4 apart, as a ladder's are
    loss = [E + A * c**-alpha for c in compute]
    if min(loss) - E < 1e-3 * E:
        return  # the curve is flat at E over these computes: no data can tell alpha apart
    fit = fit_compute_law(compute, loss)
    assert fit.alpha == pytest.approx(alpha, rel=0.01)
    assert fit.E == pytest.approx(E, rel=0.01)
    assert fit.A == pytest.approx(A, rel=0.05)  # (A is the intercept at C = 1, far off the data: it moves most)
    for c in compute:
        assert fit.loss(c) == pytest.approx(E + A * c**-alpha, rel=1e-4)
        assert fit.compute_for(fit.loss(c)) == pytest.approx(c, rel=1e-6)


def test_with_e_known_the_fit_is_a_straight_line_in_log_space_with_its_errors():
    compute = [1e12, 1e13, 1e14, 1e15]
    noise = [0.01, -0.012, 0.008, -0.006]
    loss = [1.5 + 200 * c**-0.2 * math.exp(n) for c, n in zip(compute, noise)]
    fit = fit_compute_law(compute, loss, E=1.5)
    assert fit.E == 1.5
    assert fit.alpha == pytest.approx(0.2, abs=3 * fit.se_alpha) and 0 < fit.se_alpha < 0.01
    assert fit.rms_log_error == pytest.approx(math.sqrt(sum(n * n for n in noise) / 4), rel=0.5)


@pytest.mark.parametrize(("compute", "loss", "message"), [
    ([1e12, 1e13], [3.0, 2.5], "at least 3"),
    ([1e12, 1e12, 1e12], [3.0, 2.9, 2.8], "two different computes"),
    ([0, 1e13, 1e14], [3.0, 2.5, 2.2], "above 0"),
])
def test_what_cannot_be_fitted_is_refused(compute, loss, message):
    with pytest.raises(ValueError, match=message):
        fit_compute_law(compute, loss)
