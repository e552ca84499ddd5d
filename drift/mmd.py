"""Multivariate drift on embeddings: the maximum mean discrepancy with a permutation test.

MMD^2 with an RBF kernel (Gretton et al. 2012, "A kernel two-sample test", JMLR 13) sees any
change of the distribution (a new cluster of content, a shift of topic or language), not only
of the mean, and needs no dimension reduction. The bandwidth is the median pairwise distance of
the reference (the median heuristic); the p-value comes from a permutation test, exact at any
sample size: under no drift the pooled rows are exchangeable, so the observed MMD^2 is a
uniform draw among its relabelings.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np

from bastion.drift.result import MIN_SAMPLES, DriftResult, check_rate, skipped, too_few

__all__ = ["MMDDetector"]

# Window rows the MMD result names as least like the reference (by the witness function).
_MMD_TOP_ROWS = 10


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
        check_rate(p_threshold, "MMDDetector: p_threshold")
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
        reason = too_few(m, n)
        if reason:
            return skipped(self.name, self.p_threshold, reason, **base)

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
