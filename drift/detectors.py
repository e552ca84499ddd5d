"""Statistical drift detectors: does a window of a tenant's traffic still look like the reference?

The drift monitor compares a recent window of the event log (embeddings, per-category scores,
decisions) with the reference the champion was trained on. Each detector here answers one
question with a hypothesis test, and its threshold is set for a *stated* false-alarm rate (the
probability of ``drift=True`` when nothing changed), never picked by eye:

- :class:`MMDDetector`, **embeddings** (multivariate): the maximum mean discrepancy, MMD^2, with an
  RBF kernel (Gretton et al. 2012, "A kernel two-sample test", JMLR 13). It sees any change of
  the distribution (a new cluster of content, a shift of topic or language), not only of the
  mean, and needs no dimension reduction. The bandwidth is the median pairwise distance of the
  reference (the median heuristic); the p-value comes from a permutation test, exact at any
  sample size: under no drift the pooled rows are exchangeable, so the observed MMD^2 is a
  uniform draw among its relabelings.
- :func:`ks_test`, **one category's scores** (1-d): the two-sample Kolmogorov-Smirnov test,
  distribution-free; conservative when scores have ties (saturated heads), i.e. it errs on the
  side of fewer alarms.
- :func:`psi`, **one category's scores**, the Population Stability Index that risk teams read,
  on reference-quantile bins. Its folklore thresholds (0.1 / 0.25) ignore the sample sizes, so
  here the threshold is *calibrated* by a bootstrap of the PSI's null distribution (below).
- :func:`flag_rate_test`, **one category's block rate**: Fisher's exact test of the window's
  share of ``score >= block threshold`` against the reference's; the number moderators feel.
- :func:`precision_test`, **performance** where human labels exist: of the reviewed items the
  model flagged (score at or above the review threshold), are fewer confirmed by moderators
  than the champion's held-out precision at those very scores predicts? An exact one-sided
  test against the Poisson-binomial count the held-out curve implies.

How the false-alarm rate is controlled:

1. Per test: ``drift`` is ``p_value <= p_threshold``, and each p-value is valid (the permutation
   p-value ``(1 + #{null >= observed}) / (1 + n_permutations)`` of Phipson & Smyth 2010, scipy's
   KS and Fisher p-values), so a test alarms with probability at most ``p_threshold`` when nothing
   changed.
2. Per window: the monitor runs several tests on one window (one MMD, a KS on text lengths,
   a KS and a flag-rate test per category) and decides on their :func:`cauchy_combination`,
   one p-value at the family's rate whatever the dependence between the tests. Each test is
   also flagged at its :func:`bonferroni` share (union bound: conservative when tests are
   strongly correlated), which names what moved.
3. PSI: the threshold is the ``1 - false_alarm`` quantile of PSI under no drift, estimated by a
   bootstrap that repeats the whole procedure on data drawn from the reference: a resampled
   reference of the reference's size (its bins re-estimated from it) against a resampled window
   of the window's size. Resampling the window alone (reference fixed) would leave out the
   reference's own sampling noise: PSI is roughly ``(1/n + 1/m) * chi2(bins - 1)`` under no
   drift, so that threshold is too low by a factor ``1 + n/m`` and, at ``n = m``, alarms on about
   a third of drift-free windows at a nominal 1%. The null is cached per (reference content,
   bins, window size, seed).

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

import math
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from bastion.drift._psi import psi_null, quantile_edges, shares

__all__ = [
    "MIN_SAMPLES",
    "DriftResult",
    "MMDDetector",
    "bonferroni",
    "cauchy_combination",
    "flag_rate_test",
    "ks_test",
    "precision_test",
    "psi",
]

# Fewest usable values on each side for a test to run. Below it no test at p = 0.01 has useful
# power (Fisher's test of 0/9 vs 30% flagged gives p ~ 0.07), and an MMD bandwidth or quantile
# bins estimated from a handful of rows say more about the rows than about the traffic.
MIN_SAMPLES = 10
# Window rows the MMD result names as least like the reference (by the witness function).
_MMD_TOP_ROWS = 10


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
            ``p_value <= threshold``) for the MMD, KS and flag-rate tests, a PSI threshold (drift
            when ``statistic > threshold``) for PSI.
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

    @property
    def skipped(self) -> bool:
        """True when the inputs were too degenerate for the test to run."""
        return "skipped" in self.detail


def bonferroni(p_threshold: float, n_tests: int) -> float:
    """Per-test p threshold keeping the chance of any false alarm among ``n_tests`` at most
    ``p_threshold``.

    Args:
        p_threshold: The family's false-alarm rate, in (0, 1).
        n_tests: How many tests run on one window (>= 1).

    Returns:
        ``p_threshold / n_tests``. Unequal shares are as valid as long as they sum to at most
        ``p_threshold`` (e.g. half of it to the MMD, whose permutation count grows as
        ``1 / threshold``, and the other half split among the per-category tests).

    Raises:
        ValueError: If ``p_threshold`` is not in (0, 1) or ``n_tests`` < 1.
    """
    _check_rate(p_threshold, "bonferroni: p_threshold")
    if n_tests < 1:
        raise ValueError(f"bonferroni: n_tests must be >= 1, got {n_tests}")
    return p_threshold / n_tests


def cauchy_combination(p_values: np.ndarray, weights: np.ndarray) -> float:
    """One p-value for a family of tests: the Cauchy combination (Liu & Xie 2020, "Cauchy
    combination test: a powerful test with analytic p-value calculation under arbitrary
    dependency structures", JASA 115).

    ``T = sum_i w_i tan((0.5 - p_i) pi)`` with weights summing to one is standard Cauchy when
    every p-value is uniform, whatever the dependence between the tests (exactly for
    independent or perfectly dependent tests, in the tail for correlated normal statistics),
    so ``P(p_combined <= a) ~ a`` at the small rates monitors use (about 1.1% at 1% with
    strongly correlated tests). One strong signal gives about
    ``min_i p_i / w_i`` (weighted Bonferroni); several moderate signals, as a gradual drift
    gives on the embedding, the scores and the lengths at once, combine into a smaller p-value
    than any of them alone, where Bonferroni would wait for one test to be decisive.

    Args:
        p_values: Valid p-values in [0, 1] (skipped tests left out).
        weights: Non-negative weights, one per p-value (normalised here).

    Raises:
        ValueError: On empty input, mismatched lengths, or weights that do not sum above 0.
    """
    p = np.asarray(p_values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if p.size == 0 or p.shape != w.shape or (w < 0).any() or not w.sum() > 0:
        raise ValueError("cauchy_combination: needs as many non-negative weights (sum > 0) "
                         f"as p-values, got {p.shape} and {w.shape}")
    w = w / w.sum()
    # p-values above 1/2 count as 1/2 (a zero term): one test at p = 1 (no flags on either
    # side, a discrete KS) would otherwise add -infinity and silence every other test. The
    # upper tail, which sets the rate, is unchanged (simulated: 1.04% at a stated 1% for six
    # independent tests, 1.07-1.10% with correlations 0.5-0.9, as without the truncation).
    p = np.clip(p, 1e-300, 0.5)
    small = p < 1e-15  # tan((0.5 - p) pi) ~ 1 / (p pi): avoids tan's loss of precision
    terms = np.where(small, 1.0 / (p * np.pi), np.tan((0.5 - np.where(small, 0.5, p)) * np.pi))
    t = float(np.sum(w * terms))
    if t > 1e15:
        return 1.0 / (t * np.pi)
    return float(0.5 - np.arctan(t) / np.pi)


def _check_rate(value: float, what: str) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{what} must be in (0, 1), got {value}")


def _skipped(name: str, threshold: float, reason: str, **detail: Any) -> DriftResult:
    return DriftResult(name, 0.0, None, threshold, False, {"skipped": reason, **detail})


def _finite_1d(values: np.ndarray, what: str) -> tuple[np.ndarray, int]:
    """The finite values of a 1-d array as float64, and how many were dropped."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a 1-d array of scores, got shape {arr.shape}")
    keep = np.isfinite(arr)
    return arr[keep], int(arr.size - keep.sum())


def _two_samples(reference: np.ndarray, window: np.ndarray, test: str
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Both samples' finite values, and the sizes every result's detail starts with."""
    ref, ref_dropped = _finite_1d(reference, f"{test}: reference")
    win, win_dropped = _finite_1d(window, f"{test}: window")
    return ref, win, {"n_reference": ref.size, "n_window": win.size,
                      "dropped_non_finite": ref_dropped + win_dropped}


def _too_few(n_reference: int, n_window: int) -> str | None:
    if n_reference < MIN_SAMPLES or n_window < MIN_SAMPLES:
        return (
            f"too few usable values (reference {n_reference}, window {n_window}); "
            f"each side needs at least {MIN_SAMPLES}"
        )
    return None


def _summary(values: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "median": float(np.median(values)),
    }


# --------------------------------------------------------------------------------------------
# Embeddings: MMD with a permutation test


class MMDDetector:
    """Multivariate drift on embeddings: MMD^2 with an RBF kernel (median-heuristic bandwidth on
    the reference), p-value by a permutation test.

    The reference's kernel block is computed once here; :meth:`test` adds the window's rows,
    computes the pooled kernel matrix once and evaluates every relabeling of the pooled rows
    with one matrix product (the unbiased MMD^2 of a labeling ``x`` is a function of
    ``x' K x`` and ``rowsum(K) . x``). A 2000-row reference against a 500-row, 384-d window
    with 200 permutations takes about 0.2 s on two cores.

    Args:
        reference: ``(m, d)`` embeddings the champion was trained on (float16 is fine).
        p_threshold: Alarm when the permutation p-value is at most this.
        n_permutations: Relabelings in the null; the smallest reachable p-value is
            ``1 / (n_permutations + 1)``, so it must be at least ``1 / p_threshold - 1``.
        max_reference: A larger reference is subsampled (seeded) to this many rows, which
            bounds time and memory (the pooled kernel is ``(m + n)^2`` float32).
        seed: Seeds the subsample and, with the window's content, the permutations, so the
            same window always gets the same answer.

    Raises:
        ValueError: If the reference is not 2-d, has fewer than :data:`MIN_SAMPLES` finite
            rows, or the p-value threshold cannot be reached with ``n_permutations``.
    """

    name = "embedding_mmd"

    def __init__(
        self,
        reference: np.ndarray,
        *,
        p_threshold: float = 0.01,
        n_permutations: int = 200,
        max_reference: int = 2000,
        seed: int = 0,
    ) -> None:
        _check_rate(p_threshold, "MMDDetector: p_threshold")
        if n_permutations < math.ceil(1.0 / p_threshold - 1.0 - 1e-9):
            raise ValueError(
                f"MMDDetector: with n_permutations={n_permutations} the smallest p-value is "
                f"1/{n_permutations + 1}, above p_threshold={p_threshold}, so it could never "
                f"alarm; use n_permutations >= {math.ceil(1.0 / p_threshold)} "
                "(a few times that for power)"
            )
        if max_reference < MIN_SAMPLES:
            raise ValueError(f"MMDDetector: max_reference must be >= {MIN_SAMPLES}")
        ref = np.asarray(reference, dtype=np.float32)
        if ref.ndim != 2:
            raise ValueError(f"MMDDetector: reference must be (rows, dim), got {ref.shape}")
        ref = ref[np.isfinite(ref).all(axis=1)]
        if len(ref) < MIN_SAMPLES:
            raise ValueError(
                f"MMDDetector: reference has {len(ref)} finite rows, needs >= {MIN_SAMPLES}"
            )
        self.n_reference_given = int(np.asarray(reference).shape[0])
        if len(ref) > max_reference:
            rng = np.random.default_rng(seed)
            ref = ref[np.sort(rng.choice(len(ref), size=max_reference, replace=False))]
        self.p_threshold = p_threshold
        self.n_permutations = n_permutations
        self.seed = seed
        self._ref = np.ascontiguousarray(ref)
        self._ref_sq = np.einsum("ij,ij->i", ref, ref)
        d2 = _sq_dists(ref, self._ref_sq, ref, self._ref_sq)
        median = float(np.median(d2[np.triu_indices(len(ref), k=1)]))
        if not median > 0.0:  # (nearly) all reference rows identical: any positive scale works
            positive = d2[d2 > 0]
            median = float(np.median(positive)) if positive.size else 1.0
        # Gretton et al. 2012: sigma = median distance, k(x, y) = exp(-|x - y|^2 / (2 sigma^2)).
        self.bandwidth = math.sqrt(median)
        self._gamma = np.float32(1.0 / (2.0 * median))
        self._k_ref = _rbf(d2, self._gamma)

    @property
    def dim(self) -> int:
        """The embedding dimension."""
        return int(self._ref.shape[1])

    def test(self, window: np.ndarray) -> DriftResult:
        """Test one window of embeddings against the reference.

        Args:
            window: ``(n, d)`` embeddings of the recent traffic.

        Returns:
            ``statistic`` = unbiased MMD^2, ``p_value`` from the permutation null, ``threshold``
            = ``p_threshold``; ``detail`` holds sizes, the bandwidth, the null's mean and
            95th / 99th percentiles, and ``top_window_rows``: indices into ``window`` of the
            rows least like the reference (highest MMD witness), examples to show a person.

        Raises:
            ValueError: If ``window`` is not ``(n, d)`` with the reference's ``d``.
        """
        win = np.asarray(window, dtype=np.float32)
        if win.ndim != 2 or win.shape[1] != self.dim:
            raise ValueError(
                f"MMDDetector.test: window must be (rows, {self.dim}), got {win.shape}"
            )
        keep = np.isfinite(win).all(axis=1)
        dropped = int(len(win) - keep.sum())
        win = np.ascontiguousarray(win[keep])
        m, n = len(self._ref), len(win)
        base: dict[str, Any] = {
            "n_reference": m,
            "n_window": n,
            "reference_rows_given": self.n_reference_given,
            "dropped_non_finite": dropped,
            "bandwidth": self.bandwidth,
        }
        reason = _too_few(m, n)
        if reason:
            return _skipped(self.name, self.p_threshold, reason, **base)

        win_sq = np.einsum("ij,ij->i", win, win)
        big_n = m + n
        k = np.empty((big_n, big_n), dtype=np.float32)
        k[:m, :m] = self._k_ref
        k_rw = _rbf(_sq_dists(self._ref, self._ref_sq, win, win_sq), self._gamma)
        k[:m, m:] = k_rw
        k[m:, :m] = k_rw.T
        k[m:, m:] = _rbf(_sq_dists(win, win_sq, win, win_sq), self._gamma)
        # MMD is unchanged by adding a constant to the kernel; centring keeps the float32 sums
        # of ~10^6 terms at the scale of the differences that matter (~1e-5 here).
        k -= np.float32(k.mean(dtype=np.float64))

        rng = np.random.default_rng([self.seed, zlib.crc32(win.tobytes())])
        labels = np.zeros((big_n, self.n_permutations + 1), dtype=np.float32)
        labels[:m, 0] = 1.0  # column 0: the observed labeling (reference rows first)
        perms = rng.random((self.n_permutations, big_n)).argsort(axis=1)[:, :m]
        labels[perms.T, np.arange(1, self.n_permutations + 1)] = 1.0
        mmd2 = _unbiased_mmd2(k, labels, m, n)
        observed, null = float(mmd2[0]), mmd2[1:]
        # The MMD witness at each window row: mean kernel to the other window rows minus mean
        # kernel to the reference. The highest are the rows least like the reference, the
        # examples a person should look at first.
        witness = (k[m:, m:].sum(axis=1, dtype=np.float64) - np.diag(k[m:, m:])) / (n - 1)
        witness -= k[m:, :m].mean(axis=1, dtype=np.float64)
        top = np.argsort(-witness, kind="stable")[:_MMD_TOP_ROWS]
        p_value = float((1 + np.count_nonzero(null >= observed)) / (1 + self.n_permutations))
        return DriftResult(
            self.name,
            observed,
            p_value,
            self.p_threshold,
            p_value <= self.p_threshold,
            {
                **base,
                "n_permutations": self.n_permutations,
                "null_mean": float(null.mean()),
                "null_q95": float(np.quantile(null, 0.95)),
                "null_q99": float(np.quantile(null, 0.99)),
                "top_window_rows": np.flatnonzero(keep)[top].tolist(),
            },
        )


def _sq_dists(a: np.ndarray, a_sq: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    d2 = a_sq[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d2, 0.0, out=d2)  # rounding can make |x - x|^2 slightly negative


def _rbf(d2: np.ndarray, gamma: np.float32) -> np.ndarray:
    out = np.multiply(d2, -gamma, dtype=np.float32)
    return np.exp(out, out=out)


def _unbiased_mmd2(k: np.ndarray, labels: np.ndarray, m: int, n: int) -> np.ndarray:
    """Unbiased MMD^2 for each column of 0/1 ``labels`` (1 = first sample, m ones per column).

    With x a column, r = K 1, D = diag(K): S_xx = x'Kx - D.x, S_xy = r.x - x'Kx and
    S_yy = 1'K1 - 2 r.x + x'Kx - (sum D - D.x); MMD^2_u = S_xx / (m(m-1)) + S_yy / (n(n-1))
    - 2 S_xy / (mn). One (N x N) @ (N x P) product serves every column.
    """
    quad = np.einsum("ip,ip->p", labels, k @ labels, dtype=np.float64)
    row = k.sum(axis=1, dtype=np.float64)
    diag = np.diag(k).astype(np.float64)
    labels64 = labels.astype(np.float64)
    rx = row @ labels64
    dx = diag @ labels64
    s_xx = quad - dx
    s_xy = rx - quad
    s_yy = row.sum() - 2.0 * rx + quad - (diag.sum() - dx)
    result: np.ndarray = s_xx / (m * (m - 1)) + s_yy / (n * (n - 1)) - 2.0 * s_xy / (m * n)
    return result


# --------------------------------------------------------------------------------------------
# Scores: KS and PSI


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
    _check_rate(p_threshold, "ks_test: p_threshold")
    ref, win, base = _two_samples(reference, window, "ks_test")
    reason = _too_few(ref.size, win.size)
    if reason:
        return _skipped(name, p_threshold, reason, **base)
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
            "reference": _summary(ref),
            "window": _summary(win),
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
    _check_rate(false_alarm, "psi: false_alarm")
    if bins < 2:
        raise ValueError(f"psi: bins must be >= 2, got {bins}")
    if threshold is not None and not threshold >= 0.0:
        raise ValueError(f"psi: threshold must be >= 0, got {threshold}")
    ref, win, base = _two_samples(reference, window, "psi")
    reason = _too_few(ref.size, win.size)
    if reason:
        return _skipped(name, threshold if threshold is not None else 0.0, reason, **base)

    edges = quantile_edges(ref, bins)
    ref_share = shares(ref, edges)
    win_share = shares(win, edges)
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
        null = psi_null(ref, bins, size, false_alarm, seed)
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
    _check_rate(p_threshold, "flag_rate_test: p_threshold")
    ref = _flags(reference_flags, "flag_rate_test: reference_flags")
    win = _flags(window_flags, "flag_rate_test: window_flags")
    base: dict[str, Any] = {"n_reference": ref.size, "n_window": win.size}
    reason = _too_few(ref.size, win.size)
    if reason:
        return _skipped(name, p_threshold, reason, **base)
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


# --------------------------------------------------------------------------------------------
# Performance: precision on reviewed items

def expected_precision(curve: dict[str, list[float]], scores: np.ndarray) -> np.ndarray:
    """The champion's held-out probability that an item scored ``s`` is positive, per score.

    Read from the held-out precision/recall curve (``training.heads.pr_curve``: ascending
    thresholds with the precision and the number of items at or above each): differencing the
    cumulative true positives ``precision * n_pred`` gives each score band's share of
    positives, and an isotonic fit (weighted by the band's items; a head's probability of a
    positive does not fall as its score rises) turns the noisy bands into a curve.
    """
    from sklearn.isotonic import IsotonicRegression

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
    _check_rate(p_threshold, "precision_test: p_threshold")
    s, _ = _finite_1d(scores, "precision_test: scores")
    y = np.asarray(labels, dtype=np.float64)
    if y.shape != np.asarray(scores).shape:
        raise ValueError("precision_test: scores and labels must have the same shape")
    y = y[np.isfinite(np.asarray(scores, dtype=np.float64))]
    flagged = s >= threshold
    s, y = s[flagged][-max_items:], y[flagged][-max_items:]
    base: dict[str, Any] = {"n_flagged_reviewed": int(s.size), "flag_threshold": threshold}
    if s.size < MIN_SAMPLES:
        return _skipped(name, p_threshold,
                        f"{s.size} reviewed item(s) scored at or above {threshold:g}; the test "
                        f"needs at least {MIN_SAMPLES}", **base)
    if not curve.get("threshold"):
        return _skipped(name, p_threshold, "the champion has no held-out curve for it", **base)
    expected = expected_precision(curve, s)
    k = int((y >= 0.5).sum())
    p_value = _poisson_binomial_cdf(expected, k)
    observed = k / s.size
    return DriftResult(
        name, observed - float(expected.mean()), p_value, p_threshold, p_value <= p_threshold,
        {**base, "confirmed": k, "observed_precision": observed,
         "expected_precision": float(expected.mean())},
    )
