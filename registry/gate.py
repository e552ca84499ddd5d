"""The promotion gate: may a candidate model version replace the champion?

Both versions are scored on the same held-out human-labelled data. ``evaluate_version`` turns
one version's scores into metrics per (tenant, category) of the policy, at the block threshold
serving would use with that version (``core.decision.resolve_policy``). ``run_gate`` compares
candidate and champion and returns a :class:`GateReport` of checks a person can read: every
category still has a head, precision at the block threshold is high enough, recall has not
dropped more than the tolerance below the champion's, scores are calibrated, and one item is
scored within the latency budget. Threshold comparisons go through MLflow's
``validate_evaluation_results``, the registry's own vocabulary for model validation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bastion.core.decision import ResolvedTenant, head_key_for, resolve_policy
from bastion.core.policy import CategoryPolicy, PolicySet

__all__ = [
    "CategoryEvaluation",
    "VersionEvaluation",
    "Check",
    "GateReport",
    "ece",
    "evaluate_version",
    "run_gate",
]

Pair = tuple[str, str]

CATEGORY_PRESENT = "category_present"
PRECISION = "precision_at_block"
RECALL = "recall_vs_champion"
CALIBRATION = "calibration_ece"
AUROC = "auroc_vs_champion"
EVIDENCE = "quality_evidence"
LATENCY = "p99_latency"
QUALITY = (PRECISION, RECALL, CALIBRATION, AUROC)  # what counts as evidence of quality
AUROC_TOLERANCE = 0.02  # how far held-out AUROC may fall below the champion's
AGREEMENT = "agreement_with_champion"
AGREEMENT_TOLERANCE = 0.02  # p99 of |candidate - champion| score on the evaluation items


# -- evaluation of one version ---------------------------------------------------------------
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
    categories: dict[tuple[str, str], CategoryEvaluation]
    p99_ms: float | None  # in-process latency of scoring one item, measured by the caller
    head_keys: list[str]


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
    count = np.bincount(idx, minlength=bins).astype(np.float64)
    gap = np.abs(
        np.bincount(idx, weights=y, minlength=bins) - np.bincount(idx, weights=p, minlength=bins)
    )
    # sum_b n_b/n * |mean_y_b - mean_p_b| == sum_b |sum_y_b - sum_p_b| / n
    return float(gap.sum() / count.sum())


def _head_key(tenant: str, category: str, cpol: CategoryPolicy,
              head_keys: Sequence[str]) -> str:
    return head_key_for(tenant, category, cpol, head_keys)


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
    model_meta: dict[str, Any],
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
    from sklearn.metrics import roc_auc_score

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
    meta = {"version": version, **model_meta}
    resolved = resolve_policy(policy, head_keys, meta)
    out: dict[Pair, CategoryEvaluation] = {}
    for tenant, tpol in policy.tenants.items():
        for category, cpol in tpol.categories.items():
            key, column, block, note = _resolve_one(resolved[tenant], category)
            label_col = _label_column(categories, category,
                                      _head_key(tenant, category, cpol, head_keys))
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
                    auroc = float(roc_auc_score(y, s))
                if block is not None:
                    # serving compares the score rounded to 6 decimals (core.decision.decide)
                    pred = np.round(s, 6) >= block
                    tp = float((pred & (y == 1)).sum())
                    precision = tp / float(pred.sum()) if pred.any() else None
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


# -- the gate --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    """One check of the gate. ``passed`` is None when it could not be measured."""

    tenant: str | None  # None for version-wide checks (latency)
    category: str | None
    name: str
    passed: bool | None
    value: float | None
    threshold: float | None
    message: str


def _measured(checks: Sequence[Check]) -> bool:
    """Whether any quality check was measured. Neither a present head nor the latency says
    anything about the quality of decisions, so they never count."""
    return any(c.passed is not None and c.name in QUALITY for c in checks)


def _where(check: Check) -> str:
    if check.tenant is None:
        return check.name
    return f"{check.tenant}/{check.category}"


def _result(passed: bool | None) -> str:
    return {True: "pass", False: "FAIL", None: "n/a"}[passed]


def _num(value: float | None) -> str:
    return "-" if value is None else f"{round(value, 4):g}"


@dataclass(frozen=True)
class GateReport:
    """The gate's verdict on a candidate, with every check behind it."""

    candidate: str
    champion: str | None
    passed: bool  # every check passed or not measurable; at least one measurable check
    checks: list[Check]

    def failures(self) -> list[Check]:
        """The checks that failed, in report order."""
        return [c for c in self.checks if c.passed is False]

    def verdict(self) -> str:
        """One line: passed or rejected, and each failing (tenant, category) or check."""
        vs = f" vs champion v{self.champion}" if self.champion else " (no champion)"
        failed = self.failures()
        if failed:
            where = ", ".join(dict.fromkeys(_where(c) for c in failed))
            return f"REJECTED v{self.candidate}{vs}: {len(failed)} check(s) failed in {where}"
        if not _measured(self.checks):
            return (
                f"REJECTED v{self.candidate}{vs}: no quality check was measurable; label more "
                "held-out items (see min_positives) and measure latency"
            )
        if not self.passed:  # built by hand with passed=False and no failing check
            return f"REJECTED v{self.candidate}{vs}"
        ok = sum(c.passed is True for c in self.checks)
        skipped = sum(c.passed is None for c in self.checks)
        return f"PASSED v{self.candidate}{vs}: {ok} check(s) passed, {skipped} not measurable"

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict with stable keys; values rounded to 4 decimals."""
        return {
            "candidate": self.candidate,
            "champion": self.champion,
            "passed": self.passed,
            "verdict": self.verdict(),
            "checks": [
                {
                    "tenant": c.tenant,
                    "category": c.category,
                    "name": c.name,
                    "passed": c.passed,
                    "value": None if c.value is None else round(float(c.value), 4),
                    "threshold": None if c.threshold is None else round(float(c.threshold), 4),
                    "message": c.message,
                }
                for c in self.checks
            ],
        }

    def to_table(self) -> str:
        """A plain-text table: verdict line first, failures first, then why each failed."""
        checks = sorted(self.checks, key=lambda c: c.passed is not False)  # stable sort
        header = ("tenant", "category", "check", "value", "threshold", "result")
        rows = [header] + [
            (c.tenant or "-", c.category or "-", c.name, _num(c.value), _num(c.threshold),
             _result(c.passed))
            for c in checks
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = [self.verdict(), ""]
        for r in rows:
            cells = (cell.ljust(w) for cell, w in zip(r, widths, strict=True))
            lines.append("  ".join(cells).rstrip())
        failed = self.failures()
        if failed:
            lines += ["", "Failures:"] + [f"  - {c.message}" for c in failed]
        unmeasured = [c for c in self.checks if c.passed is None]
        if unmeasured:
            lines += ["", "Not measurable:"] + [f"  - {c.message}" for c in unmeasured]
        return "\n".join(lines).rstrip() + "\n"


@dataclass(frozen=True)
class _Rule:
    min_precision: float
    recall_tolerance: float
    max_ece: float
    min_positives: int


def _rule(policy: PolicySet, tenant: str, category: str) -> _Rule:
    cpol = policy.tenants[tenant].categories[category]
    g, d = cpol.gate, policy.gate
    min_precision = g.min_precision
    if min_precision is None:
        min_precision = cpol.target_precision if cpol.target_precision is not None else (
            d.min_precision
        )
    return _Rule(
        min_precision=min_precision,
        recall_tolerance=d.recall_tolerance if g.recall_tolerance is None else g.recall_tolerance,
        max_ece=d.max_ece if g.max_ece is None else g.max_ece,
        min_positives=d.min_positives if g.min_positives is None else g.min_positives,
    )


def _meets(metric: str, value: float, threshold: float, greater_is_better: bool) -> bool:
    """Whether ``value`` meets ``threshold``, decided by MLflow's model validation.

    One metric per call, so a failure needs no parsing of MLflow's message. No baseline is
    passed: every comparison here is against an explicit threshold (see ``run_gate`` on
    recall), and MLflow only reads the baseline for min_absolute/relative_change.
    """
    import mlflow
    from mlflow.models import MetricThreshold
    from mlflow.models.evaluation import EvaluationResult
    from mlflow.models.evaluation.validation import ModelValidationFailedException

    # MetricThreshold accepts exactly int or float (type(), not isinstance): no numpy floats.
    thresholds = {
        metric: MetricThreshold(threshold=float(threshold), greater_is_better=greater_is_better)
    }
    result = EvaluationResult(metrics={metric: float(value)}, artifacts={})
    try:
        mlflow.validate_evaluation_results(thresholds, result)
    except ModelValidationFailedException:
        return False
    return True


def _present_check(
    pair: Pair, cand: CategoryEvaluation | None, champ: CategoryEvaluation | None,
    candidate: str, champion: str | None, in_policy: bool,
) -> Check:
    t, c = pair
    champ_has = champ is not None and champ.head_key is not None
    if cand is None or cand.head_key is None:
        why = (cand.note if cand is not None and cand.note else
               f"candidate v{candidate} was not evaluated for it")
        msg = f"{t}/{c}: candidate v{candidate} has no head for this category ({why})"
        if champ_has:
            assert champ is not None
            msg += (
                f"; champion v{champion} scores it with head {champ.head_key!r} and no "
                "category may silently disappear: train the candidate with this head"
                + (" or remove the category from the policy" if in_policy else "")
            )
        else:
            msg += "; train the candidate with this head or fix the policy's head"
        return Check(t, c, CATEGORY_PRESENT, False, None, None, msg)
    suffix = "" if in_policy else " (no longer in the policy: only presence is checked)"
    return Check(t, c, CATEGORY_PRESENT, True, None, None,
                 f"{t}/{c}: scored by head {cand.head_key!r}{suffix}")


def _too_few_positives(pair: Pair, check: str, what: str, value: float | None,
                       need: float | None, n_pos: int, rule: _Rule) -> Check:
    t, c = pair
    return Check(t, c, check, None, value, need,
                 f"{t}/{c}: {what} not measurable: {n_pos} held-out positives < "
                 f"min_positives {rule.min_positives}; label more held-out items")


def _precision_check(pair: Pair, cand: CategoryEvaluation, champ: CategoryEvaluation | None,
                     rule: _Rule) -> Check:
    t, c = pair
    need = rule.min_precision
    if cand.block_threshold is None:
        if champ is not None and champ.block_threshold is not None and cand.note:
            return Check(t, c, PRECISION, False, None, need,
                         f"{t}/{c}: the candidate would serve it review-only ({cand.note}) "
                         f"where the champion decides alone at {_num(champ.block_threshold)}")
        why = cand.note or "the policy makes it review-only"
        return Check(t, c, PRECISION, None, None, need,
                     f"{t}/{c}: no block threshold, so no precision to check ({why})")
    if cand.n_pos < rule.min_positives:
        return _too_few_positives(pair, PRECISION, "precision", cand.precision_at_block, need,
                                  cand.n_pos, rule)
    if cand.precision_at_block is None:
        return Check(t, c, PRECISION, None, None, need,
                     f"{t}/{c}: precision not measurable: no held-out item scores at or above "
                     f"the block threshold {_num(cand.block_threshold)} (n_pos={cand.n_pos})")
    value = cand.precision_at_block
    ok = _meets(PRECISION, value, need, greater_is_better=True)
    op = ">=" if ok else "<"
    return Check(t, c, PRECISION, ok, value, need,
                 f"{t}/{c}: precision at block threshold {_num(value)} {op} required "
                 f"{_num(need)} (threshold {_num(cand.block_threshold)}, n_pos={cand.n_pos})")


def _recall_check(
    pair: Pair, cand: CategoryEvaluation, champ: CategoryEvaluation | None,
    champion: str | None, rule: _Rule,
) -> Check:
    t, c = pair
    if champion is None:
        return Check(t, c, RECALL, None, cand.recall_at_block, None,
                     f"{t}/{c}: recall not compared: there is no champion yet (first version)")
    if champ is None or champ.head_key is None:
        return Check(t, c, RECALL, None, cand.recall_at_block, None,
                     f"{t}/{c}: recall not compared: champion v{champion} has no head for this "
                     "category (a new category)")
    if champ.recall_at_block is None:
        return Check(t, c, RECALL, None, cand.recall_at_block, None,
                     f"{t}/{c}: recall not compared: champion v{champion} has no recall at its "
                     f"block threshold ({champ.note or f'n_pos={champ.n_pos}'})")
    n_pos = min(cand.n_pos, champ.n_pos)
    # MLflow's min_absolute_change cannot express an allowed drop: MetricThreshold rejects
    # values <= 0 and, with greater_is_better, demands candidate >= baseline + change, i.e. a
    # strict improvement. So the allowed drop becomes an explicit threshold,
    # champion - tolerance, still checked by validate_evaluation_results. Rounded to 6
    # decimals so float noise (0.8 - 0.02) cannot fail a candidate exactly at the tolerance.
    need = round(max(champ.recall_at_block - rule.recall_tolerance, 0.0), 6)
    if n_pos < rule.min_positives:
        return _too_few_positives(pair, RECALL, "recall", cand.recall_at_block, need, n_pos,
                                  rule)
    if cand.recall_at_block is None:
        return Check(t, c, RECALL, None, None, need,
                     f"{t}/{c}: recall not measurable for the candidate (no block threshold "
                     "or no held-out positives)")
    value = cand.recall_at_block
    ok = _meets("recall_at_block", value, need, greater_is_better=True)
    op = ">=" if ok else "<"
    return Check(t, c, RECALL, ok, value, need,
                 f"{t}/{c}: recall at block threshold {_num(value)} {op} champion "
                 f"v{champion}'s {_num(champ.recall_at_block)} - tolerance "
                 f"{_num(rule.recall_tolerance)} (n_pos={n_pos})")


def _calibration_check(pair: Pair, cand: CategoryEvaluation, rule: _Rule) -> Check:
    t, c = pair
    if cand.ece is None:
        return Check(t, c, CALIBRATION, None, None, rule.max_ece,
                     f"{t}/{c}: calibration not measurable: no held-out labels (n={cand.n})")
    # A perfectly calibrated model's 10-bin ECE on n items is about 1/sqrt(n) from sampling
    # alone (simulated). Requiring 1/sqrt(n) <= max_ece / 1.5 keeps its false-failure rate at
    # about 3% or less (225 items for max_ece 0.1); on fewer items chance would decide.
    min_items = math.ceil((1.5 / rule.max_ece) ** 2)
    if cand.n < min_items:
        return Check(t, c, CALIBRATION, None, cand.ece, rule.max_ece,
                     f"{t}/{c}: calibration not measurable: {cand.n} held-out items < "
                     f"{min_items} needed to judge max_ece {_num(rule.max_ece)}; label more "
                     "held-out items")
    ok = _meets(CALIBRATION, cand.ece, rule.max_ece, greater_is_better=False)
    op = "<=" if ok else ">"
    return Check(t, c, CALIBRATION, ok, cand.ece, rule.max_ece,
                 f"{t}/{c}: expected calibration error {_num(cand.ece)} {op} allowed "
                 f"{_num(rule.max_ece)} (n={cand.n})")


def _auroc_check(pair: Pair, cand: CategoryEvaluation, champ: CategoryEvaluation | None,
                 champion: str | None, rule: _Rule) -> Check:
    """Ranking quality must not fall more than ``AUROC_TOLERANCE`` below the champion's on
    the same held-out items: retraining that forgets what the champion knew fails here."""
    t, c = pair
    if cand.auroc is None or min(cand.n_pos, cand.n - cand.n_pos) < rule.min_positives:
        return Check(t, c, AUROC, None, cand.auroc, None,
                     f"{t}/{c}: AUROC not measurable: {cand.n_pos} positive(s) among {cand.n} "
                     f"held-out item(s), fewer than min_positives {rule.min_positives} of a "
                     "class; label more held-out items")
    if champion is None or champ is None or champ.auroc is None:
        return Check(t, c, AUROC, None, cand.auroc, None,
                     f"{t}/{c}: AUROC {_num(cand.auroc)} not compared: no champion score for "
                     "this category")
    need = round(max(champ.auroc - AUROC_TOLERANCE, 0.0), 6)
    ok = _meets("auroc", cand.auroc, need, greater_is_better=True)
    op = ">=" if ok else "<"
    return Check(t, c, AUROC, ok, cand.auroc, need,
                 f"{t}/{c}: held-out AUROC {_num(cand.auroc)} {op} champion v{champion}'s "
                 f"{_num(champ.auroc)} - {AUROC_TOLERANCE} (n_pos={cand.n_pos})")


def _agreement_check(pair: Pair, cand: CategoryEvaluation, champ: CategoryEvaluation | None,
                     champion: str | None) -> Check | None:
    """Where no label can judge a category, the candidate may still score it as the (already
    gated) champion did: the p99 of the score difference on every evaluation item within
    ``AGREEMENT_TOLERANCE``. A retraining run that never saw data for a category (a machine
    without the development sets) passes here only if it kept what the champion knew."""
    if champ is None or champ.scores is None or cand.scores is None or champion is None:
        return None
    if len(cand.scores) != len(champ.scores) or not len(cand.scores):
        return None
    t, c = pair
    p99 = float(np.percentile(np.abs(cand.scores - champ.scores), 99))
    ok = p99 <= AGREEMENT_TOLERANCE
    op = "<=" if ok else ">"
    return Check(t, c, AGREEMENT, ok, p99, AGREEMENT_TOLERANCE,
                 f"{t}/{c}: no held-out label judges it; p99 score difference from champion "
                 f"v{champion} on {len(cand.scores)} evaluation items {_num(p99)} {op} "
                 f"{AGREEMENT_TOLERANCE}" + ("" if ok else ": the candidate changed what it "
                                             "does here with nothing to show it is better"))


def _evidence_check(pair: Pair, checks: Sequence[Check], cand: CategoryEvaluation) -> Check:
    """A gated category needs at least one measured quality check (or, with no label to
    judge it, scores that agree with the champion's): a candidate is never promoted on no
    evidence about a category it would decide."""
    t, c = pair
    measured = [ch.name for ch in checks if ch.passed is not None and ch.name in QUALITY]
    if measured:
        return Check(t, c, EVIDENCE, True, float(len(measured)), 1.0,
                     f"{t}/{c}: measured on held-out labels ({', '.join(measured)})")
    if any(ch.name == AGREEMENT and ch.passed for ch in checks):
        return Check(t, c, EVIDENCE, True, 1.0, 1.0,
                     f"{t}/{c}: no held-out labels; scores as the champion did")
    return Check(t, c, EVIDENCE, False, 0.0, 1.0,
                 f"{t}/{c}: no quality check was measurable ({cand.n} held-out labelled "
                 f"item(s), {cand.n_pos} positive(s)): a candidate is not promoted without "
                 "evidence; label held-out items for this category")


def _latency_check(candidate: VersionEvaluation, budget: float) -> Check:
    p99 = candidate.p99_ms
    if p99 is None:
        return Check(None, None, LATENCY, None, None, budget,
                     f"p99 latency of v{candidate.version} was not measured")
    ok = _meets("p99_ms", p99, budget, greater_is_better=False)
    op = "<=" if ok else ">"
    return Check(None, None, LATENCY, ok, p99, budget,
                 f"p99 latency of scoring one item {_num(p99)} ms {op} budget {_num(budget)} ms")


def run_gate(
    candidate: VersionEvaluation, champion: VersionEvaluation | None, policy: PolicySet
) -> GateReport:
    """Check a candidate against the champion and the policy's gate rules.

    Per (tenant, category) of the policy, and of the champion's scored categories: the
    candidate has a head for it (if not, its other checks are skipped); precision at the block
    threshold reaches ``min_precision``; recall at the block threshold is at most
    ``recall_tolerance`` below the champion's; expected calibration error is at most
    ``max_ece``. Then the version-wide p99 latency is within ``max_p99_ms``. A rule's unset
    fields fall back to the category's target_precision (precision only), then the file's
    ``gate`` defaults. Precision and recall on fewer than ``min_positives`` held-out
    positives, and calibration on too few items to tell from chance, are not measurable
    (``passed=None``), never passed.

    Args:
        candidate: The version that would become champion.
        champion: The current champion, or None for the first version.
        policy: The tenant policies (and gate rules) the candidate would serve.

    Returns:
        The report; ``passed`` when no check failed and at least one was measurable.
    """
    champ_name = champion.version if champion is not None else None
    pairs: list[Pair] = [(t, c) for t, tpol in policy.tenants.items() for c in tpol.categories]
    if champion is not None:  # what the champion scored may not vanish with a policy edit
        pairs += [p for p, ev in champion.categories.items()
                  if ev.head_key is not None and p not in pairs]
    checks: list[Check] = []
    for pair in pairs:
        cand = candidate.categories.get(pair)
        champ = champion.categories.get(pair) if champion is not None else None
        t, c = pair
        in_policy = t in policy.tenants and c in policy.tenants[t].categories
        present = _present_check(pair, cand, champ, candidate.version, champ_name, in_policy)
        checks.append(present)
        if not present.passed or not in_policy:
            continue
        assert cand is not None
        rule = _rule(policy, t, c)
        quality = [_precision_check(pair, cand, champ, rule),
                   _recall_check(pair, cand, champ, champ_name, rule),
                   _calibration_check(pair, cand, rule),
                   _auroc_check(pair, cand, champ, champ_name, rule)]
        if not any(ch.passed is not None for ch in quality):
            agreement = _agreement_check(pair, cand, champ, champ_name)
            if agreement is not None:
                quality.append(agreement)
        checks += quality + [_evidence_check(pair, quality, cand)]
    checks.append(_latency_check(candidate, policy.gate.max_p99_ms))
    failed = any(ch.passed is False for ch in checks)
    return GateReport(
        candidate=candidate.version, champion=champ_name,
        passed=_measured(checks) and not failed,
        checks=checks,
    )
