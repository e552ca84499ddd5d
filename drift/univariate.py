"""Drift of one category's scores (1-d): the Kolmogorov-Smirnov test and a calibrated PSI.

- :func:`ks_test`: the two-sample Kolmogorov-Smirnov test, distribution-free; conservative when
  scores have ties (saturated heads), i.e. it errs on the side of fewer alarms.
- :func:`psi`: the Population Stability Index that risk teams read, on reference-quantile bins.
  Its folklore thresholds (0.1 / 0.25) ignore the sample sizes, so here the threshold is
  *calibrated*: the ``1 - false_alarm`` quantile of PSI under no drift, estimated by a
  bootstrap that repeats the whole procedure on data drawn from the reference: a resampled
  reference of the reference's size (its bins re-estimated from it) against a resampled window
  of the window's size. Resampling the window alone (reference fixed) would leave out the
  reference's own sampling noise: PSI is roughly ``(1/n + 1/m) * chi2(bins - 1)`` under no
  drift, so that threshold is too low by a factor ``1 + n/m`` and, at ``n = m``, alarms on about
  a third of drift-free windows at a nominal 1%. The null is cached per (reference content,
  bins, window size, seed).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections import OrderedDict
from typing import Any

import numpy as np
from scipy import stats

from bastion.drift.result import (
    MIN_SAMPLES,
    DriftResult,
    check_rate,
    skipped,
    summary,
    too_few,
    two_samples,
)

__all__ = ["ks_test", "psi"]

# PSI smoothing: a bin's share is (share + eps) / (1 + bins * eps), so an empty bin contributes a
# large but finite term; 1e-4 is small against the 1 / window_size of one observation.
_PSI_EPS = 1e-4
# Bootstrap replicates for the PSI null: at least 1000, and 50 replicates beyond the threshold
# quantile so that the quantile is not one lucky draw; capped for time (~1 s per 10k at n = 500).
_PSI_MIN_BOOT = 1000
_PSI_MAX_BOOT = 20_000
# A calibration reference larger than this is resampled at this size: its sampling noise is
# overstated a little (the threshold errs high, fewer alarms) in exchange for bounded time.
_PSI_MAX_CALIBRATION_REF = 10_000
_PSI_CACHE_SIZE = 256
_psi_null_cache: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()


def ks_test(
    reference: np.ndarray, window: np.ndarray, *, p_threshold: float = 0.01, name: str
) -> DriftResult:
    """Two-sample Kolmogorov-Smirnov test of one category's scores (``scipy.stats.ks_2samp``).

    Args:
        reference: 1-d reference scores.
        window: 1-d window scores.
        p_threshold: Alarm when the p-value is at most this.
        name: Result name, e.g. ``"score_ks:hate"``.

    Returns:
        ``statistic`` = KS D (largest gap between the two empirical CDFs); ``detail`` holds sizes,
        means, medians, where the gap is largest and its sign (+1: the window has fewer scores
        below that point, i.e. it moved up).
    """
    check_rate(p_threshold, "ks_test: p_threshold")
    ref, win, base = two_samples(reference, window, "ks_test")
    reason = too_few(ref.size, win.size)
    if reason:
        return skipped(name, p_threshold, reason, **base)
    with warnings.catch_warnings():
        # The exact p-value can fail for large unequal sizes; scipy then falls back to the
        # asymptotic one and warns. The fallback is what we want, the warning is noise.
        warnings.filterwarnings("ignore", message=".*Exact calculation unsuccessful.*")
        res = stats.ks_2samp(ref, win)
    p_value = float(res.pvalue)
    return DriftResult(
        name,
        float(res.statistic),
        p_value,
        p_threshold,
        p_value <= p_threshold,
        {
            **base,
            "reference": summary(ref),
            "window": summary(win),
            "location": float(res.statistic_location),
            # scipy: +1 when the first sample's (reference) CDF is the higher one there
            "sign": int(res.statistic_sign),
        },
    )


def psi(
    reference: np.ndarray,
    window: np.ndarray,
    *,
    bins: int = 10,
    name: str,
    threshold: float | None = None,
    false_alarm: float = 0.01,
    window_size: int | None = None,
    seed: int = 0,
) -> DriftResult:
    """Population Stability Index of one category's scores, on reference-quantile bins.

    ``PSI = sum_b (w_b - r_b) ln(w_b / r_b)`` over bins cut at the reference's quantiles
    (equal-mass bins; repeated quantiles, e.g. from saturated scores, are merged), with shares
    smoothed so an empty bin stays finite. Unless ``threshold`` is given it is calibrated: the
    ``1 - false_alarm`` quantile of PSI under no drift, from a bootstrap that resamples both a
    reference (``len(reference)`` rows, its bins recomputed) and a window (``window_size`` rows)
    from the reference, so that both samples' noise is in the null (see the module docstring).
    The bootstrap null is cached per (reference content, bins, window size, seed), so a monitor
    that tests many windows of one size pays for it once.

    Args:
        reference: 1-d reference scores.
        window: 1-d window scores.
        bins: Number of quantile bins (before merging repeated edges).
        name: Result name, e.g. ``"score_psi:hate"``.
        threshold: A fixed PSI threshold; skips the calibration (``p_value`` is then None).
        false_alarm: The stated false-alarm rate the calibrated threshold is set for.
        window_size: Window size to calibrate for; defaults to ``len(window)``.
        seed: Seeds the bootstrap.

    Returns:
        ``statistic`` = PSI; ``p_value`` = share of bootstrap PSIs at least as large (when
        calibrated); ``detail`` holds the bin edges, both sides' shares, each bin's
        contribution and the calibration (replicates, window size, false-alarm rate).
    """
    check_rate(false_alarm, "psi: false_alarm")
    if bins < 2:
        raise ValueError(f"psi: bins must be >= 2, got {bins}")
    if threshold is not None and not threshold >= 0.0:
        raise ValueError(f"psi: threshold must be >= 0, got {threshold}")
    ref, win, base = two_samples(reference, window, "psi")
    reason = too_few(ref.size, win.size)
    if reason:
        return skipped(name, threshold if threshold is not None else 0.0, reason, **base)

    edges = _quantile_edges(ref, bins)
    ref_share = _shares(ref, edges)
    win_share = _shares(win, edges)
    contributions = (win_share - ref_share) * np.log(win_share / ref_share)
    value = float(contributions.sum())
    detail: dict[str, Any] = {
        **base,
        "edges": edges.tolist(),
        "reference_share": ref_share.tolist(),
        "window_share": win_share.tolist(),
        "contribution": contributions.tolist(),
    }
    p_value: float | None = None
    if threshold is None:
        size = int(window_size) if window_size is not None else win.size
        if size < MIN_SAMPLES:
            raise ValueError(f"psi: window_size must be >= {MIN_SAMPLES}, got {size}")
        null = _psi_null(ref, bins, size, false_alarm, seed)
        # "higher": the smallest null value with at most false_alarm of the null strictly above
        threshold = float(np.quantile(null, 1.0 - false_alarm, method="higher"))
        p_value = float((1 + np.count_nonzero(null >= value)) / (1 + null.size))
        detail["calibration"] = {
            "false_alarm": false_alarm,
            "window_size": size,
            "n_bootstrap": int(null.size),
            "null_median": float(np.median(null)),
        }
    return DriftResult(name, value, p_value, threshold, value > threshold, detail)


def _quantile_edges(ref: np.ndarray, bins: int) -> np.ndarray:
    """Interior bin edges: the reference's 1/bins .. (bins-1)/bins quantiles, repeats merged."""
    return np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1]))


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Smoothed share of ``values`` per bin ``(-inf, e0], (e0, e1], ..., (e_last, inf)``."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=edges.size + 1)
    shares = counts / values.size
    result: np.ndarray = (shares + _PSI_EPS) / (1.0 + shares.size * _PSI_EPS)
    return result


def _psi_null(ref: np.ndarray, bins: int, size: int, false_alarm: float, seed: int) -> np.ndarray:
    """Bootstrap PSI values under no drift for windows of ``size`` (sorted, cached).

    Each replicate draws a reference of ``len(ref)`` and a window of ``size`` with replacement
    from ``ref``, cuts bins at the drawn reference's quantiles (``np.quantile``'s linear rule,
    as :func:`psi` does) and computes PSI. A draw is kept as counts over the sorted distinct
    reference values, so one replicate costs O(distinct values) rather than a sort.
    """
    n_boot = int(min(max(_PSI_MIN_BOOT, math.ceil(50.0 / false_alarm)), _PSI_MAX_BOOT))
    digest = hashlib.blake2b(ref.tobytes(), digest_size=16).hexdigest()
    key = (digest, ref.size, bins, size, seed)
    cached = _psi_null_cache.get(key)
    if cached is not None and cached.size >= n_boot:
        _psi_null_cache.move_to_end(key)
        return cached
    rng = np.random.default_rng([seed, size, bins])
    pool = ref
    if pool.size > _PSI_MAX_CALIBRATION_REF:
        pool = rng.choice(ref, size=_PSI_MAX_CALIBRATION_REF, replace=False)
    values, inverse = np.unique(pool, return_inverse=True)
    m, distinct = pool.size, values.size
    # Order statistics that np.quantile's linear rule interpolates between, per interior edge.
    h = (m - 1) * np.linspace(0.0, 1.0, bins + 1)[1:-1]
    below = np.floor(h).astype(np.int64)
    above = np.minimum(below + 1, m - 1)
    frac = h - below
    out = np.empty(n_boot)
    # Per replicate: (m + size) draws and two (distinct,) count tables, all int64; ~4M
    # entries per chunk keeps the chunk near 32 MB whatever the sizes.
    chunk = max(1, 4_000_000 // (m + size + 2 * distinct))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        rows = np.arange(b)[:, None]
        cum_ref = _cumulative_counts(inverse[rng.integers(0, m, size=(b, m))], distinct)
        cum_win = _cumulative_counts(inverse[rng.integers(0, m, size=(b, size))], distinct)
        # k-th smallest drawn value (0-based) = values[first j with cum_ref[j] > k]
        lo = values[_rowwise_searchsorted(cum_ref, np.broadcast_to(below, (b, below.size)))]
        hi = values[_rowwise_searchsorted(cum_ref, np.broadcast_to(above, (b, above.size)))]
        edges = lo + frac * (hi - lo)  # (b, bins - 1), non-decreasing along each row
        # Values <= an edge: the cumulative count at the last distinct value <= it. Repeated
        # edges make bins empty on both sides, which add exactly 0 to PSI, as merging them does.
        last = np.searchsorted(values, edges, side="right") - 1
        safe = np.maximum(last, 0)
        le_ref = np.where(last >= 0, cum_ref[rows, safe], 0)
        le_win = np.where(last >= 0, cum_win[rows, safe], 0)
        ref_counts = np.diff(le_ref, prepend=0, append=m, axis=1)
        win_counts = np.diff(le_win, prepend=0, append=size, axis=1)
        r = (ref_counts / m + _PSI_EPS) / (1.0 + bins * _PSI_EPS)
        w = (win_counts / size + _PSI_EPS) / (1.0 + bins * _PSI_EPS)
        out[start : start + b] = ((w - r) * np.log(w / r)).sum(axis=1)
    out.sort()
    _psi_null_cache[key] = out
    if len(_psi_null_cache) > _PSI_CACHE_SIZE:
        _psi_null_cache.popitem(last=False)
    return out


def _cumulative_counts(draws: np.ndarray, distinct: int) -> np.ndarray:
    """Cumulative counts per row of ``draws`` (indices into ``distinct`` sorted values)."""
    rows = draws.shape[0]
    flat = (draws + np.arange(rows)[:, None] * distinct).ravel()
    counts = np.bincount(flat, minlength=rows * distinct).reshape(rows, distinct)
    result: np.ndarray = np.cumsum(counts, axis=1)
    return result


def _rowwise_searchsorted(cum: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """Per row ``i``: ``searchsorted(cum[i], ks[i], side="right")``; rows of ``cum`` are
    non-decreasing in ``[0, total]``, so shifting row ``i`` by ``i * (total + 1)`` makes the
    flattened table sorted and one search serves every row."""
    rows, width = cum.shape
    shift = np.arange(rows)[:, None] * (int(cum[:, -1].max()) + 1)
    idx = np.searchsorted((cum + shift).ravel(), (ks + shift).ravel(), side="right")
    result: np.ndarray = idx.reshape(ks.shape) - np.arange(rows)[:, None] * width
    return result
