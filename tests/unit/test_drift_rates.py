"""The flag-rate test and precision on reviewed items (drift.rates)."""

from __future__ import annotations

import numpy as np
import pytest

from bastion.drift.rates import expected_precision, flag_rate_test, precision_test
from bastion.registry.evaluation import pr_curve
from tests.unit._drift_data import assert_clean


def test_flag_rate_jump_is_caught() -> None:
    rng = np.random.default_rng(0)
    result = flag_rate_test(rng.random(5000) < 0.05, rng.random(500) < 0.12, name="flag_rate:hate")
    assert_clean(result)
    assert result.drift
    assert result.statistic == pytest.approx(
        result.detail["window_rate"] - result.detail["reference_rate"]
    )
    assert result.statistic > 0


def test_flag_rate_drop_is_drift_too() -> None:
    rng = np.random.default_rng(1)
    assert flag_rate_test(rng.random(5000) < 0.10, rng.random(500) < 0.01, name="f").drift


def test_flag_rate_same_rate_is_quiet() -> None:
    rng = np.random.default_rng(2)
    result = flag_rate_test(rng.random(5000) < 0.05, rng.random(500) < 0.05, name="f")
    assert not result.drift


def test_flag_rate_with_nothing_flagged_is_quiet_and_finite() -> None:
    result = flag_rate_test(np.zeros(1000, bool), np.zeros(100, bool), name="f")
    assert_clean(result)
    assert not result.drift and result.p_value == 1.0 and result.statistic == 0.0


def test_flag_rate_skips_tiny_windows() -> None:
    result = flag_rate_test(np.ones(1000, bool), np.zeros(3, bool), name="f")
    assert not result.drift and "skipped" in result.detail


# -- precision on reviewed items -------------------------------------------------------------


def heldout(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores and labels where P(positive | score) = score (a calibrated head)."""
    rng = np.random.default_rng(seed)
    s = rng.beta(0.7, 1.5, size=n)
    return s, (rng.random(n) < s).astype(float)


def test_expected_precision_reads_the_held_out_curve_per_score_band() -> None:
    s, y = heldout(20000, 0)
    exp = expected_precision(pr_curve(y, s), np.array([0.1, 0.5, 0.9, 0.999]))
    assert np.allclose(exp, [0.1, 0.5, 0.9, 0.97], atol=0.06)


def test_precision_test_keeps_its_false_alarm_rate_on_review_band_items() -> None:
    s_h, y_h = heldout(20000, 0)
    curve = pr_curve(y_h, s_h)
    alarms = 0
    runs = 400
    for seed in range(runs):
        s, y = heldout(3000, seed + 1)
        band = (s >= 0.4) & (s < 0.8)  # reviewed because they scored in the review band
        r = precision_test(s[band][:150], y[band][:150], curve, 0.4, p_threshold=0.05,
                           name="precision:hate")
        alarms += r.drift
    assert alarms / runs <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / runs)


def test_precision_test_catches_a_drop_and_skips_when_few_were_reviewed() -> None:
    s_h, y_h = heldout(20000, 0)
    curve = pr_curve(y_h, s_h)
    rng = np.random.default_rng(5)
    s = rng.uniform(0.5, 0.9, size=200)
    y = (rng.random(200) < s - 0.2).astype(float)  # 20 points less precise than held-out
    r = precision_test(s, y, curve, 0.5, p_threshold=0.01, name="precision:hate")
    assert r.drift and r.statistic < -0.1 and r.p_value is not None and r.p_value < 0.001
    assert r.detail["n_flagged_reviewed"] == 200
    few = precision_test(s[:5], y[:5], curve, 0.5, name="precision:hate")
    assert "skipped" in few.detail and not few.drift and "at least" in few.detail["skipped"]
    below = precision_test(s, y, curve, 0.95, name="precision:hate")
    assert "skipped" in below.detail  # nothing reviewed was scored that high
