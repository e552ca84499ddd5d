"""Honest held-out measurement of heads: per category, per source, across sources, with
confidence intervals.

A text counts for a category only where someone labelled it for that category (the strict
``mask`` of a :class:`~training.datasets.LabelledSet`); weak negatives never enter a metric.
Soft targets are binarised at 0.5. Every number comes with its number of positives and a 95%
interval: percentile bootstrap (resampling items) for AUROC, average precision and the
calibration error, Wilson score intervals for precision and recall at a threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["wilson", "bootstrap_ci", "expected_calibration_error", "binary_metrics",
           "metrics_by_source"]

MIN_POSITIVES = 10  # fewer held-out positives (or negatives) than this: no ranking metrics


def wilson(k: float, n: float, z: float = 1.96) -> tuple[float, float] | None:
    """Wilson score interval of a proportion k/n; None when n is 0."""
    if n <= 0:
        return None
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate - mean score| over equal-width score bins, weighted by bin size."""
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    gap = np.abs(np.bincount(idx, weights=y, minlength=bins)
                 - np.bincount(idx, weights=p, minlength=bins))
    return float(gap.sum() / max(len(p), 1))


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def _ap(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, s))


def bootstrap_ci(y: np.ndarray, s: np.ndarray, metric: Any, n_boot: int = 200,
                 seed: int = 0) -> tuple[float, float] | None:
    """95% percentile interval of ``metric(y, s)`` over item resamples (resamples with one
    class only are skipped)."""
    rng = np.random.default_rng(seed)
    vals = []
    n = len(y)
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        yy = y[i]
        if 0 < yy.sum() < n:
            vals.append(metric(yy, s[i]))
    if len(vals) < n_boot // 2:
        return None
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return round(float(lo), 4), round(float(hi), 4)


def _at(y: np.ndarray, s: np.ndarray, threshold: float | None) -> dict[str, Any] | None:
    if threshold is None:
        return None
    pred = np.round(s, 6) >= threshold
    tp, npred, npos = float((pred & (y == 1)).sum()), float(pred.sum()), float(y.sum())
    return {
        "threshold": round(float(threshold), 4),
        "precision": round(tp / npred, 4) if npred else None,
        "precision_ci": wilson(tp, npred),
        "recall": round(tp / npos, 4) if npos else None,
        "recall_ci": wilson(tp, npos),
        "n_flagged": int(npred),
    }


def binary_metrics(y: np.ndarray, s: np.ndarray,
                   thresholds: Mapping[str, float | None] | None = None,
                   n_boot: int = 200) -> dict[str, Any]:
    """AUROC, average precision, calibration error (each with a 95% interval) and precision
    and recall at each named threshold, for labels ``y`` (0/1) and scores ``s``."""
    y = np.asarray(y, np.float64)
    s = np.asarray(s, np.float64)
    n, n_pos = len(y), int(y.sum())
    out: dict[str, Any] = {"n": n, "n_pos": n_pos}
    if n == 0:
        out["note"] = "no labelled items"
        return out
    out["ece"] = round(expected_calibration_error(s, y), 4)
    out["ece_ci"] = bootstrap_ci(y, s, lambda yy, ss: expected_calibration_error(ss, yy), n_boot)
    if min(n_pos, n - n_pos) < MIN_POSITIVES:
        out["note"] = (f"{n_pos} positive(s) and {n - n_pos} negative(s): fewer than "
                       f"{MIN_POSITIVES} of one class, no ranking metrics")
    else:
        out["auroc"] = round(_auroc(y, s), 4)
        out["auroc_ci"] = bootstrap_ci(y, s, _auroc, n_boot)
        out["ap"] = round(_ap(y, s), 4)
        out["ap_ci"] = bootstrap_ci(y, s, _ap, n_boot)
        out["prevalence"] = round(n_pos / n, 4)
    for name, thr in (thresholds or {}).items():
        at = _at(y, s, thr)
        if at is not None:
            out[name] = at
    return out


def metrics_by_source(scores: np.ndarray, targets: np.ndarray, mask: np.ndarray,
                      sources: list[str], categories: list[str], keys: list[str],
                      thresholds: Mapping[str, Mapping[str, float | None]] | None = None,
                      n_boot: int = 200) -> dict[str, dict[str, Any]]:
    """Per category (head key): ``all`` (every labelled held-out item) and one entry per
    source that labelled the category. ``thresholds[key]`` names thresholds to report at."""
    src = np.asarray(sources)
    out: dict[str, dict[str, Any]] = {}
    for j, key in enumerate(keys):
        if key not in categories:
            continue
        c = categories.index(key)
        known = mask[:, c]
        y = (targets[:, c] >= 0.5).astype(np.float64)
        thr = (thresholds or {}).get(key)
        entry: dict[str, Any] = {"all": binary_metrics(y[known], scores[known, j], thr, n_boot)}
        for name in sorted(set(src[known].tolist())):
            sel = known & (src == name)
            entry[name] = binary_metrics(y[sel], scores[sel, j], thr, n_boot)
        out[key] = entry
    return out
