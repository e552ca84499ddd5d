"""Held-out measurement, one definition for training's reports and the promotion gate.

A text counts for a category only where someone labelled it for that category (the strict
``mask`` of the labelled set); weak negatives never enter a metric. Soft targets are binarised
at 0.5, and a score is compared with a threshold rounded to 6 decimals, as serving compares it
(``core.decision.decide``).

- Metrics of one head: :func:`binary_metrics` (AUROC, average precision and calibration error
  with 95% percentile-bootstrap intervals, precision and recall at named thresholds with Wilson
  intervals), :func:`metrics_by_source` (per category, across and per labelling source) and
  :func:`evaluate_heads` (per head, at the thresholds its own held-out curve gives).
- Metrics of one model version under a policy: :func:`evaluate_version`, per (tenant,
  category) at the block threshold serving would use with that version
  (``core.decision.resolve_policy``); what the gate (``registry.gate``) compares.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from bastion.core.decision import (
    ResolvedTenant,
    head_key_for,
    resolve_policy,
    threshold_for_precision,
    threshold_for_recall,
)
from bastion.core.model import ModelMetadata
from bastion.core.policy import PolicySet

__all__ = [
    "MIN_POSITIVES",
    "CategoryEvaluation",
    "Pair",
    "VersionEvaluation",
    "binary_metrics",
    "bootstrap_ci",
    "ece",
    "evaluate_heads",
    "evaluate_version",
    "metrics_by_source",
    "pr_curve",
    "wilson",
]

MIN_POSITIVES = 10  # fewer held-out positives (or negatives) than this: no ranking metrics

Pair = tuple[str, str]  # (tenant, category)


# -- metric definitions ----------------------------------------------------------------------
def wilson(k: float, n: float, z: float = 1.96) -> tuple[float, float] | None:
    """Wilson score interval of a proportion k/n; None when n is 0."""
    if n <= 0:
        return None
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width probability bins.

    The mean, weighted by bin size, of |observed positive rate - mean probability| per bin;
    a probability of exactly 1.0 falls in the last bin.

    Args:
        probs: Predicted probabilities in [0, 1].
        labels: Outcomes, 0 or 1 (binarise soft targets first), same length as ``probs``.
        bins: Number of equal-width bins on [0, 1].

    Raises:
        ValueError: empty or mismatched inputs, probabilities outside [0, 1], or bins < 1.
    """
    p = np.asarray(probs, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if bins < 1:
        raise ValueError(f"ece: bins must be at least 1, got {bins}")
    if p.shape != y.shape:
        raise ValueError(
            f"ece: probs has {p.size} values but labels has {y.size}; pass one label per "
            "probability"
        )
    if p.size == 0:
        raise ValueError("ece: no probabilities given; calibration needs at least one item")
    if np.isnan(p).any():
        raise ValueError("ece: probabilities contain NaN; check the scores for failed items")
    if p.min() < 0.0 or p.max() > 1.0:
        raise ValueError(
            f"ece: probabilities must lie in [0, 1], got min {p.min():g} and max {p.max():g}; "
            "pass sigmoid outputs, not logits"
        )
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    gap = np.abs(
        np.bincount(idx, weights=y, minlength=bins) - np.bincount(idx, weights=p, minlength=bins)
    )
    # sum_b n_b/n * |mean_y_b - mean_p_b| == sum_b |sum_y_b - sum_p_b| / n
    return float(gap.sum() / p.size)


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    return float(roc_auc_score(y, s))


def _ap(y: np.ndarray, s: np.ndarray) -> float:
    return float(average_precision_score(y, s))


def bootstrap_ci(y: np.ndarray, s: np.ndarray, metric: Callable[[np.ndarray, np.ndarray], float],
                 n_boot: int = 200, seed: int = 0) -> tuple[float, float] | None:
    """95% percentile interval of ``metric(y, s)`` over item resamples (resamples with one
    class only are skipped); None when fewer than half of them had both classes."""
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


def pr_curve(y: np.ndarray, s: np.ndarray, max_points: int = 200) -> dict[str, list[float]]:
    """Precision, recall and predicted-positive count at ascending thresholds."""
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    n_pred = np.arange(1, len(s) + 1)
    # keep the last index of each distinct score (ties decided together)
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s) - 1]
    if len(last) > max_points:
        last = last[np.unique(np.linspace(0, len(last) - 1, max_points).round().astype(int))]
    total_pos = max(float(y.sum()), 1.0)
    thr = s_sorted[last][::-1]
    prec = (tp[last] / n_pred[last])[::-1]
    rec = (tp[last] / total_pos)[::-1]
    return {
        "threshold": [round(float(v), 6) for v in thr],
        "precision": [round(float(v), 6) for v in prec],
        "recall": [round(float(v), 6) for v in rec],
        "n_pred": [int(v) for v in n_pred[last][::-1]],
    }


def _counts_at(y: np.ndarray, s: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """(true positives, flagged, positives) at ``threshold``; the score is rounded to 6
    decimals first, as serving rounds it and as :func:`pr_curve` rounds its thresholds."""
    pred = np.round(s, 6) >= threshold
    return float((pred & (y == 1)).sum()), float(pred.sum()), float(y.sum())


# -- metrics of one head ---------------------------------------------------------------------
def _at(y: np.ndarray, s: np.ndarray, threshold: float | None) -> dict[str, Any] | None:
    if threshold is None:
        return None
    tp, npred, npos = _counts_at(y, s, threshold)
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
    and recall at each named threshold, for labels ``y`` (0/1) and scores ``s`` in [0, 1]."""
    y = np.asarray(y, np.float64)
    s = np.asarray(s, np.float64)
    n, n_pos = len(y), int(y.sum())
    out: dict[str, Any] = {"n": n, "n_pos": n_pos}
    if n == 0:
        out["note"] = "no labelled items"
        return out
    out["ece"] = round(ece(s, y), 4)
    out["ece_ci"] = bootstrap_ci(y, s, lambda yy, ss: ece(ss, yy), n_boot)
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


def evaluate_heads(
    scores: np.ndarray, targets: np.ndarray, mask: np.ndarray, keys: list[str],
    target_precision: float = 0.9, review_recall: float = 0.9,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, list[float]]]]:
    """Per-head held-out metrics and PR curves: AUROC, and precision and recall at the block
    threshold (``target_precision`` on the head's own curve) and the review threshold
    (``review_recall``). Column ``j`` of ``targets`` and ``mask`` belongs to ``keys[j]``."""
    metrics: dict[str, dict[str, Any]] = {}
    curves: dict[str, dict[str, list[float]]] = {}
    for j, key in enumerate(keys):
        known = mask[:, j]
        y = (targets[known, j] >= 0.5).astype(np.float64)
        s = scores[known, j].astype(np.float64)
        n_pos = int(y.sum())
        entry: dict[str, Any] = {"n": int(known.sum()), "n_pos": n_pos}
        if n_pos == 0 or n_pos == len(y):
            entry["note"] = "held-out set has one class only; no metrics"
            metrics[key] = entry
            continue
        curve = pr_curve(y, s)
        curves[key] = curve
        entry["auroc"] = round(_auroc(y, s), 4)
        entry["prevalence"] = round(n_pos / len(y), 4)
        points = (("block", f"block_threshold_at_p{int(target_precision * 100)}",
                   threshold_for_precision(curve, target_precision)),
                  ("review", f"review_threshold_at_r{int(review_recall * 100)}",
                   threshold_for_recall(curve, review_recall)))
        for suffix, name, thr in points:
            entry[name] = thr
            if thr is not None:
                tp, npred, _ = _counts_at(y, s, thr)
                entry[f"precision_at_{suffix}"] = round(tp / max(npred, 1.0), 4)
                entry[f"recall_at_{suffix}"] = round(tp / n_pos, 4)
        metrics[key] = entry
    return metrics, curves


# -- metrics of one model version under a policy ---------------------------------------------
@dataclass(frozen=True)
class CategoryEvaluation:
    """Held-out metrics of one (tenant, category) for one model version.

    ``head_key`` is None when the version has no head for the category; ``block_threshold``
    is None when serving could not resolve one (e.g. a target precision the version's
    held-out curve never reaches); ``note`` then says why. Metrics are None where undefined.
    """

    tenant: str
    category: str
    head_key: str | None
    n: int
    n_pos: int
    block_threshold: float | None
    precision_at_block: float | None
    recall_at_block: float | None
    auroc: float | None
    ece: float | None
    note: str | None = None
    # the head's scores on every evaluation item, labelled for this category or not: what
    # the agreement check compares when no label can judge the category
    scores: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class VersionEvaluation:
    """One model version measured on held-out data, per (tenant, category) of the policy."""

    version: str
    categories: dict[Pair, CategoryEvaluation]
    p99_ms: float | None  # in-process latency of scoring one item, measured by the caller
    head_keys: list[str]


def _label_column(categories: Sequence[str], category: str, head_key: str) -> int | None:
    """Label column of a category: by its name, else by its head's name without the tenant
    (a category 'junk' scored by the shared head 'spam' is judged against the 'spam' labels)."""
    for name in (head_key, category, head_key.rsplit("/", 1)[-1]):
        if name in categories:
            return list(categories).index(name)
    return None


def _resolve_one(
    resolved: ResolvedTenant, category: str,
) -> tuple[str | None, int | None, float | None, str | None]:
    """(head key, score column, block threshold, why not) of one category of a tenant
    resolved exactly as serving resolves it (same function, same curves). The block threshold
    is None for a review-only category; the note says why when the policy asked for more."""
    rc = resolved.category(category)
    if rc is None:
        return None, None, None, resolved.unavailable.get(category, "not resolved")
    return rc.head_key, rc.column, rc.block_threshold, rc.fallback
def evaluate_version(
    version: str,
    head_keys: list[str],
    model_meta: ModelMetadata,
    scores: np.ndarray,
    targets: np.ndarray,
    mask: np.ndarray,
    categories: list[str],
    policy: PolicySet,
    p99_ms: float | None = None,
) -> VersionEvaluation:
    """Measure one model version on held-out data for every (tenant, category) of a policy.

    Args:
        version: The model version, as the registry names it.
        head_keys: The version's heads, in the order of ``scores``' columns.
        model_meta: The version's metadata; ``curves`` (held-out PR curves by head key) sets
            the block threshold of categories with a ``target_precision``.
        scores: (n_items, len(head_keys)) probabilities of every head on the held-out items.
        targets: (n_items, len(categories)) soft labels in [0, 1]; positive at >= 0.5.
        mask: (n_items, len(categories)) True where a label is known.
        categories: The label columns' category names.
        policy: The tenant policies the version would serve.
        p99_ms: p99 latency of scoring one item in process, measured by the caller.

    Returns:
        A :class:`VersionEvaluation` with one :class:`CategoryEvaluation` per policy category.

    Raises:
        ValueError: the arrays' shapes do not match ``head_keys`` and ``categories``.
    """
    scores = np.asarray(scores)
    targets = np.asarray(targets)
    mask = np.asarray(mask, dtype=bool)
    n_items = scores.shape[0] if scores.ndim == 2 else -1
    if scores.ndim != 2 or scores.shape[1] != len(head_keys):
        raise ValueError(
            f"evaluate_version({version!r}): scores has shape {scores.shape}, expected "
            f"(n_items, {len(head_keys)}): one column per head of head_keys, in model order"
        )
    for name, arr in (("targets", targets), ("mask", mask)):
        if arr.shape != (n_items, len(categories)):
            raise ValueError(
                f"evaluate_version({version!r}): {name} has shape {arr.shape}, expected "
                f"({n_items}, {len(categories)}): one row per scored item, one column per "
                "name in categories"
            )
    meta: ModelMetadata = {**model_meta, "version": version}
    resolved = resolve_policy(policy, head_keys, meta)
    out: dict[Pair, CategoryEvaluation] = {}
    for tenant, tpol in policy.tenants.items():
        for category, cpol in tpol.categories.items():
            key, column, block, note = _resolve_one(resolved[tenant], category)
            label_col = _label_column(categories, category,
                                      head_key_for(tenant, category, cpol, head_keys))
            if label_col is None:
                known = np.zeros(n_items, dtype=bool)
                y = np.zeros(0)
            else:
                known = mask[:, label_col]
                y = (targets[known, label_col] >= 0.5).astype(np.float64)
            n, n_pos = int(known.sum()), int(y.sum())
            precision = recall = auroc = calibration = None
            if column is not None and n:
                s = scores[known, column].astype(np.float64)
                calibration = ece(s, y)
                if 0 < n_pos < n:
                    auroc = _auroc(y, s)
                if block is not None:
                    tp, npred, _ = _counts_at(y, s, block)
                    precision = tp / npred if npred else None
                    recall = tp / n_pos if n_pos else None
            out[(tenant, category)] = CategoryEvaluation(
                tenant=tenant, category=category, head_key=key, n=n, n_pos=n_pos,
                block_threshold=block, precision_at_block=precision, recall_at_block=recall,
                auroc=auroc, ece=calibration, note=note,
                scores=None if column is None else scores[:, column].astype(np.float32),
            )
    return VersionEvaluation(
        version=str(version), categories=out, p99_ms=p99_ms, head_keys=list(head_keys)
    )
