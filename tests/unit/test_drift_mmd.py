"""The MMD detector on embeddings: power, false alarms, degenerate input (drift.mmd)."""

from __future__ import annotations

import numpy as np
import pytest

from bastion.drift.mmd import MMDDetector
from bastion.drift.result import MIN_SAMPLES
from tests.unit._drift_data import DIM, N_CLUSTERS, assert_clean, embeddings


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
