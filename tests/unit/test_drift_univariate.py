"""KS and calibrated PSI on one category's scores (drift.univariate)."""

from __future__ import annotations

import numpy as np
import pytest

from bastion.drift.univariate import ks_test, psi
from tests.unit._drift_data import assert_clean, scores


def test_ks_catches_a_score_shift() -> None:
    result = ks_test(scores(2000, 0), scores(500, 1, a=2.6), name="score_ks:hate")
    assert_clean(result)
    assert result.drift
    assert result.name == "score_ks:hate"
    assert result.detail["sign"] == 1  # the window moved up
    assert result.detail["window"]["mean"] > result.detail["reference"]["mean"]


def test_ks_false_alarm_rate_is_near_the_stated_rate() -> None:
    reference = scores(2000, 0)
    alarms = sum(
        ks_test(reference, scores(300, 100 + i), p_threshold=0.05, name="s").drift
        for i in range(100)
    )
    assert alarms <= 15


def test_ks_on_constant_scores_says_no_drift() -> None:
    result = ks_test(np.zeros(100), np.zeros(50), name="score_ks:spam")
    assert_clean(result)
    assert not result.drift and result.p_value == 1.0


def test_ks_skips_tiny_windows_and_drops_nan() -> None:
    tiny = ks_test(scores(100, 0), scores(3, 1), name="s")
    assert not tiny.drift and "skipped" in tiny.detail and tiny.p_value is None
    window = scores(50, 2)
    window[:4] = np.nan
    result = ks_test(scores(100, 0), window, name="s")
    assert_clean(result)
    assert result.detail["dropped_non_finite"] == 4 and result.detail["n_window"] == 46


def test_psi_catches_a_score_shift() -> None:
    result = psi(scores(2000, 0), scores(500, 1, a=2.6), name="score_psi:hate")
    assert_clean(result)
    assert result.drift
    assert result.statistic > result.threshold
    assert result.p_value is not None and result.p_value <= 0.01
    assert len(result.detail["edges"]) == 9
    assert len(result.detail["window_share"]) == 10
    assert result.detail["calibration"]["window_size"] == 500


def test_psi_calibrated_threshold_has_the_stated_false_alarm_rate() -> None:
    reference = scores(2000, 0)
    results = [psi(reference, scores(300, 100 + i), name="s", false_alarm=0.05) for i in range(100)]
    assert sum(r.drift for r in results) <= 15
    # one window size, one reference: the calibration is computed once and reused
    assert len({r.threshold for r in results}) == 1


def test_psi_threshold_grows_as_windows_shrink() -> None:
    # the folklore 0.1 / 0.25 ignores sample size; the calibrated threshold does not
    reference = scores(2000, 0)
    small = psi(reference, scores(100, 1), name="s")
    large = psi(reference, scores(2000, 2), name="s")
    assert small.threshold > large.threshold
    # PSI under no drift is about (bins - 1)(1/n + 1/m): the null median says the same
    expected = 9 * (1 / 2000 + 1 / 2000)
    assert large.detail["calibration"]["null_median"] == pytest.approx(expected, rel=0.25)


def test_psi_calibrates_for_the_stated_window_size() -> None:
    reference = scores(1000, 0)
    own = psi(reference, scores(200, 1), name="s")
    stated = psi(reference, scores(200, 1), name="s", window_size=1000)
    assert stated.detail["calibration"]["window_size"] == 1000
    assert stated.threshold < own.threshold


def test_psi_with_a_fixed_threshold_skips_calibration() -> None:
    result = psi(scores(2000, 0), scores(500, 1), name="s", threshold=0.25)
    assert result.threshold == 0.25 and result.p_value is None
    assert "calibration" not in result.detail
    assert not result.drift


def test_psi_on_constant_scores_is_zero_and_quiet() -> None:
    result = psi(np.full(200, 0.5), np.full(50, 0.5), name="s")
    assert_clean(result)
    assert result.statistic == 0.0 and not result.drift
    moved = psi(np.full(200, 0.5), np.full(50, 0.9), name="s")
    assert_clean(moved)
    assert moved.drift  # every score changed: that is drift, and PSI says so


def test_psi_handles_saturated_scores() -> None:
    # half of the reference is exactly 0 (a head that saturates): quantile edges repeat
    rng = np.random.default_rng(0)
    reference = np.where(rng.random(2000) < 0.5, 0.0, rng.beta(2, 5, 2000))
    window = np.where(rng.random(400) < 0.5, 0.0, rng.beta(2, 5, 400))
    result = psi(reference, window, name="s")
    assert_clean(result)
    assert len(result.detail["edges"]) < 9
    assert not result.drift


def test_psi_skips_tiny_windows() -> None:
    result = psi(scores(100, 0), scores(2, 1), name="s")
    assert_clean(result)
    assert not result.drift and "skipped" in result.detail


def test_psi_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="bins must be >= 2"):
        psi(scores(100, 0), scores(50, 1), name="s", bins=1)
    with pytest.raises(ValueError, match=r"false_alarm must be in \(0, 1\)"):
        psi(scores(100, 0), scores(50, 1), name="s", false_alarm=0.0)
