"""Held-out metrics (registry.evaluation): one definition for training and the gate."""

from __future__ import annotations

import numpy as np
import pytest

from bastion.registry.evaluation import (
    binary_metrics,
    ece,
    evaluate_heads,
    metrics_by_source,
    pr_curve,
    wilson,
)


def test_ece_is_zero_when_calibrated_and_large_when_not() -> None:
    calibrated = ece(np.full(400, 0.25), np.r_[np.ones(100), np.zeros(300)])
    overconfident = ece(np.full(400, 0.95), np.zeros(400))
    assert calibrated == pytest.approx(0.0)
    assert overconfident == pytest.approx(0.95)
    # two bins, each off by 0.1, weighted by size: (100 * 0.1 + 300 * 0.1) / 400
    mixed = ece(np.r_[np.full(100, 0.9), np.full(300, 0.1)],
                np.r_[np.ones(100), np.zeros(300)])
    assert mixed == pytest.approx(0.1)
    assert ece(np.array([1.0]), np.array([1.0])) == pytest.approx(0.0)  # 1.0 is in the last bin


def test_ece_of_draws_from_the_probabilities_is_small() -> None:
    rng = np.random.default_rng(1)
    p = rng.random(20000)
    assert ece(p, (rng.random(20000) < p).astype(float)) < 0.02
    assert ece(p, (rng.random(20000) < p**3).astype(float)) > 0.1


def test_ece_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="not logits"):
        ece(np.array([-2.0, 3.0]), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="one label per probability"):
        ece(np.array([0.2, 0.3]), np.array([1.0]))
    with pytest.raises(ValueError, match="at least one item"):
        ece(np.array([]), np.array([]))


def test_wilson_interval() -> None:
    lo, hi = wilson(9, 10)  # type: ignore[misc]
    assert lo < 0.9 < hi and hi <= 1.0
    assert wilson(0, 0) is None


def test_binary_metrics_report_intervals_and_refuse_too_few_positives() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.3).astype(float)
    s = np.clip(y * 0.4 + rng.random(400) * 0.6, 0, 1)
    m = binary_metrics(y, s, {"at": 0.5})
    assert m["auroc_ci"][0] <= m["auroc"] <= m["auroc_ci"][1]
    assert m["ap_ci"][0] <= m["ap"] <= m["ap_ci"][1]
    assert m["at"]["precision_ci"][0] <= m["at"]["precision"] <= m["at"]["precision_ci"][1]
    few = binary_metrics(y[:20] * 0 + np.r_[np.ones(3), np.zeros(17)], s[:20])
    assert "auroc" not in few and "fewer than 10" in few["note"]


def test_weak_negatives_never_enter_a_metric() -> None:
    scores = np.array([[0.9], [0.1], [0.8], [0.7]] * 10, np.float32)
    targets = np.array([[1], [0], [0], [0]] * 10, np.float32)
    mask = np.array([[True], [True], [False], [False]] * 10)
    out = metrics_by_source(scores, targets, mask, ["a", "a", "b", "b"] * 10, ["hate"],
                            ["hate"])
    assert out["hate"]["all"]["n"] == 20 and set(out["hate"]) == {"all", "a"}


def test_pr_curve_is_ordered() -> None:
    y = np.array([0, 0, 1, 1, 1, 0, 1], dtype=float)
    s = np.array([0.1, 0.2, 0.3, 0.8, 0.9, 0.4, 0.7])
    c = pr_curve(y, s)
    assert c["threshold"] == sorted(c["threshold"])
    assert c["recall"] == sorted(c["recall"], reverse=True)
    assert c["recall"][0] == 1.0 and c["precision"][-1] == 1.0


def test_binary_metrics_calibration_is_the_gates_ece() -> None:
    rng = np.random.default_rng(2)
    s = rng.random(300)
    y = (rng.random(300) < s).astype(float)
    assert binary_metrics(y, s)["ece"] == round(ece(s, y), 4)


def test_evaluate_heads_counts_a_score_as_serving_rounds_it() -> None:
    # 0.6999996 is served as 0.7 and its curve's threshold is 0.7: it is flagged there
    y = np.array([[1.0], [1.0], [0.0], [0.0]] * 10)
    s = np.array([[0.9], [0.6999996], [0.2], [0.1]] * 10)
    metrics, curves = evaluate_heads(s, y, np.ones(y.shape, bool), ["hate"],
                                     target_precision=0.9, review_recall=1.0)
    m = metrics["hate"]
    assert 0.7 in curves["hate"]["threshold"]
    assert m["review_threshold_at_r100"] == 0.7
    assert m["recall_at_review"] == 1.0 and m["precision_at_review"] == 1.0
