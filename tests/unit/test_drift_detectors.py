from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from bastion.drift.combine import cauchy_combination
from bastion.drift.mmd import MMDDetector
from bastion.drift.rates import flag_rate_test
from bastion.drift.result import MIN_SAMPLES, DriftResult
from bastion.drift.univariate import ks_test, psi

DIM = 384
N_CLUSTERS = 6


def embeddings(
    n: int,
    seed: int,
    *,
    weights: np.ndarray | None = None,
    shift: float = 0.0,
) -> np.ndarray:
    """Sentence-encoder-like rows: a Gaussian mixture around fixed unit centres (topics), on the
    unit sphere, as float16 like the event log stores them. ``weights`` sets the topic mix;
    ``shift`` moves every row along one fixed direction before normalising."""
    centres = np.random.default_rng(1234).normal(size=(N_CLUSTERS, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    direction = np.random.default_rng(99).normal(size=DIM)
    direction /= np.linalg.norm(direction)
    rng = np.random.default_rng(seed)
    if weights is None:
        weights = np.r_[np.full(N_CLUSTERS - 1, 1.0 / (N_CLUSTERS - 1)), 0.0]  # last topic unseen
    topic = rng.choice(N_CLUSTERS, size=n, p=weights)
    # noise of norm ~1 against a unit centre: rows of one topic have cosine ~0.5, like MiniLM's
    x = centres[topic] + rng.normal(scale=1.0 / math.sqrt(DIM), size=(n, DIM)) + shift * direction
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float16)


def scores(n: int, seed: int, a: float = 2.0, b: float = 8.0) -> np.ndarray:
    return np.random.default_rng(seed).beta(a, b, size=n)


def assert_clean(result: DriftResult) -> None:
    """Finite numbers everywhere: nothing a dashboard would render as NaN."""

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v)
        elif isinstance(value, float | np.floating):
            assert math.isfinite(value), result

    assert math.isfinite(result.statistic)
    assert math.isfinite(result.threshold)
    if result.p_value is not None:
        assert 0.0 < result.p_value <= 1.0
    walk(result.detail)


# --- MMD on embeddings ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return embeddings(800, seed=0)


@pytest.fixture(scope="module")
def mmd(reference: np.ndarray) -> MMDDetector:
    return MMDDetector(reference, p_threshold=0.01, n_permutations=200)


def test_mmd_detects_a_new_topic_and_points_at_it(mmd: MMDDetector) -> None:
    # a quarter of the window (its last 75 rows) comes from a topic the reference never saw
    new_topic = embeddings(75, seed=1, weights=np.eye(N_CLUSTERS)[-1])
    window = np.concatenate([embeddings(225, seed=2), new_topic])
    result = mmd.test(window)
    assert_clean(result)
    assert result.drift
    assert result.name == "embedding_mmd"
    assert result.p_value is not None and result.p_value <= 0.01
    assert result.statistic > result.detail["null_q99"]
    assert result.detail["n_reference"] == 800 and result.detail["n_window"] == 300
    assert len(result.detail["top_window_rows"]) == 10
    assert all(i >= 225 for i in result.detail["top_window_rows"])


def test_mmd_detects_a_change_of_topic_mix(mmd: MMDDetector) -> None:
    # same topics, but one of them now makes up half of the traffic
    window = embeddings(300, seed=2, weights=np.array([0.5, 0.125, 0.125, 0.125, 0.125, 0.0]))
    assert mmd.test(window).drift


def test_mmd_detects_a_mean_shift(mmd: MMDDetector) -> None:
    window = embeddings(300, seed=3, shift=0.3)
    assert mmd.test(window).drift


def test_mmd_keeps_quiet_on_a_window_from_the_reference_distribution(mmd: MMDDetector) -> None:
    result = mmd.test(embeddings(300, seed=4))
    assert_clean(result)
    assert not result.drift
    assert result.threshold == 0.01


def test_mmd_false_alarm_rate_is_near_the_stated_rate() -> None:
    # 100 drift-free windows against one reference at p = 0.05: about 5 alarms expected,
    # at most 15 allowed (3x; P(Binomial(100, 0.05) > 15) ~ 1e-4). Small sizes keep it fast.
    detector = MMDDetector(embeddings(300, seed=10), p_threshold=0.05, n_permutations=100)
    alarms = sum(detector.test(embeddings(100, seed=100 + i)).drift for i in range(100))
    assert alarms <= 15


def test_mmd_is_reproducible_and_accepts_float16(mmd: MMDDetector) -> None:
    window = embeddings(200, seed=5)
    assert window.dtype == np.float16
    first, second = mmd.test(window), mmd.test(window.astype(np.float32))
    assert first.statistic == second.statistic
    assert first.p_value == second.p_value


def test_mmd_subsamples_a_large_reference() -> None:
    detector = MMDDetector(embeddings(600, seed=6), max_reference=200)
    result = detector.test(embeddings(50, seed=7))
    assert result.detail["n_reference"] == 200
    assert detector.n_reference_given == 600


def test_mmd_skips_a_tiny_window_and_explains(mmd: MMDDetector) -> None:
    result = mmd.test(embeddings(MIN_SAMPLES - 1, seed=8))
    assert_clean(result)
    assert not result.drift and "skipped" in result.detail
    assert "too few" in result.detail["skipped"]
    assert result.p_value is None
    empty = mmd.test(np.empty((0, DIM), dtype=np.float16))
    assert not empty.drift and "skipped" in empty.detail


def test_mmd_drops_non_finite_rows(mmd: MMDDetector) -> None:
    window = embeddings(100, seed=9).astype(np.float32)
    window[:5, 0] = np.nan
    window[50:60] = embeddings(10, seed=13, weights=np.eye(N_CLUSTERS)[-1])  # unseen topic
    result = mmd.test(window)
    assert_clean(result)
    assert result.detail["dropped_non_finite"] == 5
    assert result.detail["n_window"] == 95
    # indices refer to the window as given, not to its finite rows
    assert set(result.detail["top_window_rows"]) == set(range(50, 60))


def test_mmd_handles_a_constant_window(mmd: MMDDetector) -> None:
    window = np.repeat(embeddings(1, seed=11), 50, axis=0)  # one message spammed 50 times
    result = mmd.test(window)
    assert_clean(result)
    assert result.drift


def test_mmd_handles_identical_reference_rows() -> None:
    same = np.repeat(embeddings(1, seed=12), 40, axis=0)
    result = MMDDetector(same).test(same[:20])
    assert_clean(result)
    assert not result.drift


def test_mmd_rejects_wrong_shapes(mmd: MMDDetector) -> None:
    with pytest.raises(ValueError, match=r"window must be \(rows, 384\)"):
        mmd.test(np.zeros((10, 16), dtype=np.float32))
    with pytest.raises(ValueError, match=r"window must be \(rows, 384\)"):
        mmd.test(np.zeros(DIM, dtype=np.float32))
    with pytest.raises(ValueError, match="reference must be"):
        MMDDetector(np.zeros(DIM, dtype=np.float32))
    with pytest.raises(ValueError, match="finite rows"):
        MMDDetector(embeddings(MIN_SAMPLES - 1, seed=0))


def test_mmd_refuses_a_threshold_its_permutations_cannot_reach() -> None:
    with pytest.raises(ValueError, match="could never alarm; use n_permutations >= 1000"):
        MMDDetector(embeddings(50, seed=0), p_threshold=0.001, n_permutations=200)


# --- KS and PSI on scores -------------------------------------------------------------------


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


# --- flag rate ------------------------------------------------------------------------------


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


# --- the family of tests on one window ------------------------------------------------------


def test_cauchy_combination_keeps_its_rate_and_a_p_of_one_does_not_silence_the_rest() -> None:
    from scipy.stats import norm

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
