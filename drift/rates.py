"""Drift of what moderators see: the block rate, and precision on reviewed items.

- :func:`flag_rate_test`, **one category's block rate**: Fisher's exact test of the window's
  share of ``score >= block threshold`` against the reference's; the number moderators feel.
- :func:`language_mix_test`, **the languages of the traffic**: the chi-square test of the
  window's language shares against the reference's (a new market, a raid in another
  language); rare languages pooled.
- :func:`precision_test`, **performance** where human labels exist: of the reviewed items the
  model flagged (score at or above the review threshold), are fewer confirmed by moderators
  than the champion's held-out precision at those very scores predicts? An exact one-sided
  test against the Poisson-binomial count the held-out curve implies.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats
from sklearn.isotonic import IsotonicRegression

from bastion.drift.result import (
    MIN_SAMPLES,
    DriftResult,
    check_rate,
    finite_1d,
    skipped,
    too_few,
)

__all__ = ["expected_precision", "flag_rate_test", "language_mix_test", "precision_test"]

MIN_EXPECTED = 5.0  # chi-square's usual condition: languages rarer than this are pooled


def flag_rate_test(
    reference_flags: np.ndarray, window_flags: np.ndarray, *, p_threshold: float = 0.01, name: str
) -> DriftResult:
    """Fisher's exact test of the window's flag rate against the reference's, two-sided.

    Both rates are estimates, so the test is of the 2x2 table (flagged / not, reference /
    window) rather than of the window against the reference rate as if it were known. A drop
    is drift too (a head that stopped firing), hence two-sided.

    Args:
        reference_flags: 1-d booleans, ``score >= block threshold`` on the reference.
        window_flags: 1-d booleans on the window.
        p_threshold: Alarm when the p-value is at most this.
        name: Result name, e.g. ``"flag_rate:hate"``.

    Returns:
        ``statistic`` = window rate minus reference rate; ``detail`` holds both counts and rates.
    """
    check_rate(p_threshold, "flag_rate_test: p_threshold")
    ref = _flags(reference_flags, "flag_rate_test: reference_flags")
    win = _flags(window_flags, "flag_rate_test: window_flags")
    base: dict[str, Any] = {"n_reference": ref.size, "n_window": win.size}
    reason = too_few(ref.size, win.size)
    if reason:
        return skipped(name, p_threshold, reason, **base)
    ref_k, win_k = int(ref.sum()), int(win.sum())
    table = [[ref_k, ref.size - ref_k], [win_k, win.size - win_k]]
    p_value = float(stats.fisher_exact(table).pvalue)
    ref_rate, win_rate = ref_k / ref.size, win_k / win.size
    return DriftResult(
        name,
        win_rate - ref_rate,
        p_value,
        p_threshold,
        p_value <= p_threshold,
        {
            **base,
            "reference_flagged": ref_k,
            "window_flagged": win_k,
            "reference_rate": ref_rate,
            "window_rate": win_rate,
        },
    )


def _flags(values: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a 1-d array of booleans, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        arr = arr[np.isfinite(arr)]
    return arr.astype(bool)


def expected_precision(curve: dict[str, list[float]], scores: np.ndarray) -> np.ndarray:
    """The champion's held-out probability that an item scored ``s`` is positive, per score.

    Read from the held-out precision/recall curve (``registry.evaluation.pr_curve``: ascending
    thresholds with the precision and the number of items at or above each): differencing the
    cumulative true positives ``precision * n_pred`` gives each score band's share of
    positives, and an isotonic fit (weighted by the band's items; a head's probability of a
    positive does not fall as its score rises) turns the noisy bands into a curve.
    """
    thr = np.asarray(curve["threshold"], dtype=np.float64)
    n_pred = np.asarray(curve["n_pred"], dtype=np.float64)
    tp = np.asarray(curve["precision"], dtype=np.float64) * n_pred
    n_band = n_pred - np.r_[n_pred[1:], 0.0]  # items in [thr[i], thr[i+1])
    tp_band = tp - np.r_[tp[1:], 0.0]
    mid = (thr + np.r_[thr[1:], thr[-1]]) / 2.0  # a band's middle stands for its scores
    ok = n_band > 0
    if not ok.any():
        return np.full(np.shape(scores), float(tp[0] / max(n_pred[0], 1.0)))
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    iso.fit(mid[ok], tp_band[ok] / n_band[ok], sample_weight=n_band[ok])
    return np.asarray(iso.predict(np.asarray(scores, dtype=np.float64)), dtype=np.float64)


def _poisson_binomial_cdf(probs: np.ndarray, k: int) -> float:
    """P(X <= k) for X a sum of independent Bernoulli(p_i): exact, by dynamic programming."""
    dist = np.zeros(len(probs) + 1)
    dist[0] = 1.0
    for i, p in enumerate(probs):
        dist[1:i + 2] = dist[1:i + 2] * (1.0 - p) + dist[:i + 1] * p
        dist[0] *= 1.0 - p
    return float(min(1.0, dist[:k + 1].sum()))


def precision_test(
    scores: np.ndarray,
    labels: np.ndarray,
    curve: dict[str, list[float]],
    threshold: float,
    *,
    p_threshold: float = 0.01,
    name: str,
    max_items: int = 5000,
) -> DriftResult:
    """Did precision on reviewed items fall below the champion's held-out precision?

    Of the reviewed items the champion scored at or above ``threshold`` (what it flags), count
    those moderators confirmed (aggregated label >= 0.5). If the champion is as precise on this
    traffic as on its held-out data, that count is a sum of independent Bernoulli variables
    with the held-out precision at each item's score (:func:`expected_precision`): the test is
    exact against that Poisson-binomial law and one-sided (only a drop is drift). Conditioning
    on the score makes it fair to items reviewed *because* of their score (the review band),
    which a plain comparison of precisions would not be.

    Limits: the held-out curve is itself an estimate (a few hundred items per category), so the
    test is somewhat anti-conservative when held-out data were few; a reviewed item's label is
    the moderators' aggregate, not the truth.

    Args:
        scores: the champion's scores of reviewed items, 1-d.
        labels: their aggregated labels in [0, 1], 1-d.
        curve: the champion's held-out curve for this category (``threshold``, ``precision``,
            ``n_pred`` lists).
        threshold: items scored at or above it are the flagged ones (the review threshold).
        p_threshold: alarm when the p-value is at most this.
        name: result name, e.g. ``"precision:hate"``.
        max_items: the most recent this many flagged items are used (bounds the O(n^2) exact
            computation).

    Returns:
        ``statistic`` = observed minus expected precision (negative: worse than held-out);
        ``detail`` holds the counts and both precisions.
    """
    check_rate(p_threshold, "precision_test: p_threshold")
    s, _ = finite_1d(scores, "precision_test: scores")
    y = np.asarray(labels, dtype=np.float64)
    if y.shape != np.asarray(scores).shape:
        raise ValueError("precision_test: scores and labels must have the same shape")
    y = y[np.isfinite(np.asarray(scores, dtype=np.float64))]
    flagged = s >= threshold
    s, y = s[flagged][-max_items:], y[flagged][-max_items:]
    base: dict[str, Any] = {"n_flagged_reviewed": int(s.size), "flag_threshold": threshold}
    if s.size < MIN_SAMPLES:
        return skipped(name, p_threshold,
                        f"{s.size} reviewed item(s) scored at or above {threshold:g}; the test "
                        f"needs at least {MIN_SAMPLES}", **base)
    if not curve.get("threshold"):
        return skipped(name, p_threshold, "the champion has no held-out curve for it", **base)
    expected = expected_precision(curve, s)
    k = int((y >= 0.5).sum())
    p_value = _poisson_binomial_cdf(expected, k)
    observed = k / s.size
    return DriftResult(
        name, observed - float(expected.mean()), p_value, p_threshold, p_value <= p_threshold,
        {**base, "confirmed": k, "observed_precision": observed,
         "expected_precision": float(expected.mean())},
    )


def language_mix_test(reference: list[str | None], window: list[str | None], *,
                      p_threshold: float = 0.01, name: str = "language_mix") -> DriftResult:
    """Chi-square test of homogeneity of the languages (ISO 639-1) of the window against the
    reference. Items with no language (None: no letters, or logged before languages were)
    are left out; languages whose expected count falls under 5 on either side are pooled as
    ``other``.

    Returns:
        ``statistic`` = the total variation distance between the two language mixes;
        ``detail`` holds both sides' shares of each language.
    """
    check_rate(p_threshold, "language_mix_test: p_threshold")
    ref = [x for x in reference if x]
    win = [x for x in window if x]
    base: dict[str, Any] = {"n_reference": len(ref), "n_window": len(win)}
    reason = too_few(len(ref), len(win))
    if reason:
        return skipped(name, p_threshold, reason, **base)
    langs = sorted(set(ref) | set(win))
    counts = np.array([[ref.count(x) for x in langs], [win.count(x) for x in langs]], float)
    n = counts.sum()
    expected = counts.sum(1, keepdims=True) * counts.sum(0, keepdims=True) / n
    keep = expected.min(0) >= MIN_EXPECTED
    names = [x for x, k in zip(langs, keep, strict=True) if k]
    table = counts[:, keep]
    if (~keep).any():
        table = np.column_stack([table, counts[:, ~keep].sum(1)])
        names.append("other")
    shares = counts / counts.sum(1, keepdims=True)
    detail = base | {"languages": {x: {"reference": round(float(shares[0, i]), 4),
                                       "window": round(float(shares[1, i]), 4)}
                                   for i, x in enumerate(langs)}}
    tvd = float(0.5 * np.abs(shares[0] - shares[1]).sum())
    if table.shape[1] < 2:  # one language on both sides: nothing moved
        return DriftResult(name, tvd, 1.0, p_threshold, False, detail | {"tested": names})
    p_value = float(stats.chi2_contingency(table, correction=False).pvalue)
    return DriftResult(name, tvd, p_value, p_threshold, p_value <= p_threshold,
                       detail | {"tested": names})
