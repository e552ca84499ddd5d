"""The Cauchy combination of one window's tests (drift.combine)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from bastion.drift.combine import cauchy_combination


def test_cauchy_combination_keeps_its_rate_and_a_p_of_one_does_not_silence_the_rest() -> None:
    rng = np.random.default_rng(0)
    w = np.array([0.5] + [0.1] * 5)
    z = rng.normal(size=(20000, 1)) * np.sqrt(0.5) + rng.normal(size=(20000, 6)) * np.sqrt(0.5)
    combined = np.array([cauchy_combination(p, w) for p in norm.sf(z)])
    assert abs((combined <= 0.01).mean() - 0.01) < 0.004
    # one decisive test wins about as weighted Bonferroni would
    assert cauchy_combination(np.array([1e-4, 1.0, 1.0]), np.array([0.5, 0.25, 0.25])) < 3e-4
    # moderate evidence everywhere adds up where no single test is decisive
    assert cauchy_combination(np.full(6, 0.004), w) <= 0.0041
    with pytest.raises(ValueError, match="weights"):
        cauchy_combination(np.array([0.1]), np.array([0.5, 0.5]))
