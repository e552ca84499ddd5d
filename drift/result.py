"""What every drift test returns, :class:`DriftResult`, and the input handling the tests share.

Each test (``drift.mmd``, ``drift.univariate``, ``drift.rates``) answers one question about a
window of a tenant's traffic against the reference its champion was trained on, with a
hypothesis test whose threshold is set for a *stated* false-alarm rate (the probability of
``drift=True`` when nothing changed), never picked by eye: ``drift`` is ``p_value <=
p_threshold``, and each p-value is valid (the permutation p-value ``(1 + #{null >= observed})
/ (1 + n_permutations)`` of Phipson & Smyth 2010, scipy's KS and Fisher p-values, the exact
Poisson-binomial tail), so a test alarms with probability at most ``p_threshold`` when nothing
changed. PSI is the exception: a statistic against a bootstrap-calibrated threshold.

These rates hold over draws of both samples. The reference is one draw, frozen for a
champion's life, so the rate seen by one monitor varies around the stated one (KS, 2000 against
300 scores, at 1%: between 0.5% and 1.8% for 80% of references); it comes closer as the
reference grows against the window, so keep references several times the window's size.

Degenerate inputs (a window or reference with fewer than :data:`MIN_SAMPLES` usable values,
non-finite values, constant scores) never raise and never give NaN: the result has ``drift``
False, a finite statistic and ``detail["skipped"]`` saying why. Wrong shapes (a 1-d array where
rows of embeddings are expected, mismatched dimensions) are programming errors and raise
``ValueError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["MIN_SAMPLES", "DriftResult"]

# Fewest usable values on each side for a test to run. Below it no test at p = 0.01 has useful
# power (Fisher's test of 0/9 vs 30% flagged gives p ~ 0.07), and an MMD bandwidth or quantile
# bins estimated from a handful of rows say more about the rows than about the traffic.
MIN_SAMPLES = 10


@dataclass(frozen=True)
class DriftResult:
    """The answer of one test on one window.

    Attributes:
        name: What was tested, e.g. ``"embedding_mmd"``, ``"score_ks:hate"``,
            ``"flag_rate:hate"``, ``"score_psi:hate"``.
        statistic: The test statistic (MMD^2, KS D, PSI, window rate minus reference rate);
            0.0 when the test was skipped.
        p_value: Its p-value where the test gives one, else None (also when skipped).
        threshold: The threshold the decision used: a p-value threshold (drift when
            ``p_value <= threshold``) for the MMD, KS, flag-rate and precision tests, a PSI
            threshold (drift when ``statistic > threshold``) for PSI.
        drift: Whether the window drifted at the stated false-alarm rate.
        detail: What a person needs to read the result: sizes, means, rates, bins; ``"skipped"``
            holds the reason when the test could not run.
    """

    name: str
    statistic: float
    p_value: float | None
    threshold: float
    drift: bool
    detail: dict[str, Any] = field(default_factory=dict)


# -- input handling the tests share (the drift package's own, not in __all__) ----------------
def check_rate(value: float, what: str) -> None:
    """Raise ``ValueError`` naming ``what`` unless ``value`` is a rate in (0, 1)."""
    if not 0.0 < value < 1.0:
        raise ValueError(f"{what} must be in (0, 1), got {value}")


def skipped(name: str, threshold: float, reason: str, **detail: Any) -> DriftResult:
    """A result that did not run: no drift, statistic 0, ``detail["skipped"]`` = ``reason``."""
    return DriftResult(name, 0.0, None, threshold, False, {"skipped": reason, **detail})


def finite_1d(values: np.ndarray, what: str) -> tuple[np.ndarray, int]:
    """The finite values of a 1-d array as float64, and how many were dropped."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a 1-d array of scores, got shape {arr.shape}")
    keep = np.isfinite(arr)
    return arr[keep], int(arr.size - keep.sum())


def two_samples(reference: np.ndarray, window: np.ndarray, test: str
                ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Both samples' finite values, and the sizes every result's detail starts with."""
    ref, ref_dropped = finite_1d(reference, f"{test}: reference")
    win, win_dropped = finite_1d(window, f"{test}: window")
    return ref, win, {"n_reference": ref.size, "n_window": win.size,
                      "dropped_non_finite": ref_dropped + win_dropped}


def too_few(n_reference: int, n_window: int) -> str | None:
    """Why a test cannot run on these sizes (fewer than :data:`MIN_SAMPLES`), else None."""
    if n_reference < MIN_SAMPLES or n_window < MIN_SAMPLES:
        return (
            f"too few usable values (reference {n_reference}, window {n_window}); "
            f"each side needs at least {MIN_SAMPLES}"
        )
    return None


def summary(values: np.ndarray) -> dict[str, float]:
    """Mean, standard deviation and median, for a result's detail."""
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "median": float(np.median(values)),
    }
