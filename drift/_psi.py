"""The PSI null distribution by bootstrap (``drift.detectors.psi``'s calibrated threshold):
quantile bins of a reference, smoothed bin shares, and PSI between bootstrap references and
windows drawn from the reference itself, cached per (reference, bins, size, seed)."""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from typing import Any

import numpy as np

__all__ = ["PSI_EPS", "quantile_edges", "shares", "psi_null"]

# PSI smoothing: a bin's share is (share + eps) / (1 + bins * eps), so an empty bin contributes a
# large but finite term; 1e-4 is small against the 1 / window_size of one observation.
PSI_EPS = 1e-4
# Bootstrap replicates for the PSI null: at least 1000, and 50 replicates beyond the threshold
# quantile so that the quantile is not one lucky draw; capped for time (~1 s per 10k at n = 500).
_PSI_MIN_BOOT = 1000
_PSI_MAX_BOOT = 20_000
# A calibration reference larger than this is resampled at this size: its sampling noise is
# overstated a little (the threshold errs high, fewer alarms) in exchange for bounded time.
_PSI_MAX_CALIBRATION_REF = 10_000
_PSI_CACHE_SIZE = 256
_psi_null_cache: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()


def quantile_edges(ref: np.ndarray, bins: int) -> np.ndarray:
    """Interior bin edges: the reference's 1/bins .. (bins-1)/bins quantiles, repeats merged."""
    return np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1]))


def shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Smoothed share of ``values`` per bin ``(-inf, e0], (e0, e1], ..., (e_last, inf)``."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=edges.size + 1)
    shares = counts / values.size
    result: np.ndarray = (shares + PSI_EPS) / (1.0 + shares.size * PSI_EPS)
    return result


def psi_null(ref: np.ndarray, bins: int, size: int, false_alarm: float, seed: int) -> np.ndarray:
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
        r = (ref_counts / m + PSI_EPS) / (1.0 + bins * PSI_EPS)
        w = (win_counts / size + PSI_EPS) / (1.0 + bins * PSI_EPS)
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


# --------------------------------------------------------------------------------------------
# Decisions: flag rate
