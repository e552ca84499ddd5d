"""The gate's checks, one function per rule: each compares a candidate's
:class:`~bastion.registry.evaluation.CategoryEvaluation` (and the champion's) with a threshold
and returns a :class:`~bastion.registry.report.Check` whose message says what was compared and
how to fix a failure. A check that cannot be measured (too few held-out positives or items, no
champion to compare with) returns ``passed=None``, never a silent pass. The metric thresholds
(precision, recall, calibration, AUROC, latency) are decided by MLflow's
``validate_evaluation_results``, the registry's own vocabulary for model validation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import mlflow
import numpy as np
from mlflow.models import MetricThreshold
from mlflow.models.evaluation import EvaluationResult
from mlflow.models.evaluation.validation import ModelValidationFailedException

from bastion.registry.evaluation import CategoryEvaluation, Pair, VersionEvaluation
from bastion.registry.report import (
    AGREEMENT,
    AUROC,
    CALIBRATION,
    CATEGORY_PRESENT,
    EVIDENCE,
    LATENCY,
    PRECISION,
    QUALITY,
    RECALL,
    Check,
    fmt,
)

__all__ = [
    "AGREEMENT_TOLERANCE",
    "AUROC_TOLERANCE",
    "Rule",
    "agreement_check",
    "as_champion",
    "auroc_check",
    "calibration_check",
    "evidence_check",
    "latency_check",
    "precision_check",
    "present_check",
    "recall_check",
    "same_scores",
]

AUROC_TOLERANCE = 0.02  # how far held-out AUROC may fall below the champion's
AGREEMENT_TOLERANCE = 0.02  # p99 of |candidate - champion| score on the evaluation items


@dataclass(frozen=True)
class Rule:
    """The thresholds of one (tenant, category), resolved from the policy (``registry.gate``)."""

    min_precision: float
    recall_tolerance: float
    max_ece: float
    min_positives: int
    # the policy gives the category a review threshold only: the model never decides it alone
    review_only: bool = False


def _meets(metric: str, value: float, threshold: float, greater_is_better: bool) -> bool:
    """Whether ``value`` meets ``threshold``, decided by MLflow's model validation.

    One metric per call, so a failure needs no parsing of MLflow's message. No baseline is
    passed: every comparison here is against an explicit threshold (see
    :func:`recall_check`), and MLflow only reads the baseline for
    min_absolute/relative_change.
    """
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


def present_check(
    pair: Pair, cand: CategoryEvaluation | None, champ: CategoryEvaluation | None,
    candidate: str, champion: str | None, in_policy: bool,
) -> Check:
    """The candidate has a head for a category the policy or the champion has: no category
    may silently disappear. ``in_policy`` is False for one only the champion still scores."""
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
                       need: float | None, n_pos: int, rule: Rule) -> Check:
    t, c = pair
    return Check(t, c, check, None, value, need,
                 f"{t}/{c}: {what} not measurable: {n_pos} held-out positives < "
                 f"min_positives {rule.min_positives}; label more held-out items")


def precision_check(pair: Pair, cand: CategoryEvaluation, champ: CategoryEvaluation | None,
                     rule: Rule) -> Check:
    """Precision at the block threshold serving would use reaches ``rule.min_precision``; a
    candidate that would serve review-only where the champion decides alone fails."""
    t, c = pair
    need = rule.min_precision
    if cand.block_threshold is None:
        if champ is not None and champ.block_threshold is not None and cand.note:
            return Check(t, c, PRECISION, False, None, need,
                         f"{t}/{c}: the candidate would serve it review-only ({cand.note}) "
                         f"where the champion decides alone at {fmt(champ.block_threshold)}")
        why = cand.note or "the policy makes it review-only"
        return Check(t, c, PRECISION, None, None, need,
                     f"{t}/{c}: no block threshold, so no precision to check ({why})")
    if cand.n_pos < rule.min_positives:
        return _too_few_positives(pair, PRECISION, "precision", cand.precision_at_block, need,
                                  cand.n_pos, rule)
    if cand.precision_at_block is None:
        return Check(t, c, PRECISION, None, None, need,
                     f"{t}/{c}: precision not measurable: no held-out item scores at or above "
                     f"the block threshold {fmt(cand.block_threshold)} (n_pos={cand.n_pos})")
    value = cand.precision_at_block
    ok = _meets(PRECISION, value, need, greater_is_better=True)
    op = ">=" if ok else "<"
    return Check(t, c, PRECISION, ok, value, need,
                 f"{t}/{c}: precision at block threshold {fmt(value)} {op} required "
                 f"{fmt(need)} (threshold {fmt(cand.block_threshold)}, n_pos={cand.n_pos})")


def recall_check(
    pair: Pair, cand: CategoryEvaluation, champ: CategoryEvaluation | None,
    champion: str | None, rule: Rule,
) -> Check:
    """Recall at the block threshold is at most ``rule.recall_tolerance`` below the
    champion's on the same held-out items."""
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
                 f"{t}/{c}: recall at block threshold {fmt(value)} {op} champion "
                 f"v{champion}'s {fmt(champ.recall_at_block)} - tolerance "
                 f"{fmt(rule.recall_tolerance)} (n_pos={n_pos})")


def calibration_check(pair: Pair, cand: CategoryEvaluation, rule: Rule) -> Check:
    """Expected calibration error is at most ``rule.max_ece``, judged only on enough items
    for chance not to decide."""
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
                     f"{min_items} needed to judge max_ece {fmt(rule.max_ece)}; label more "
                     "held-out items")
    ok = _meets(CALIBRATION, cand.ece, rule.max_ece, greater_is_better=False)
    op = "<=" if ok else ">"
    return Check(t, c, CALIBRATION, ok, cand.ece, rule.max_ece,
                 f"{t}/{c}: expected calibration error {fmt(cand.ece)} {op} allowed "
                 f"{fmt(rule.max_ece)} (n={cand.n})")


def auroc_check(pair: Pair, cand: CategoryEvaluation, champ: CategoryEvaluation | None,
                 champion: str | None, rule: Rule) -> Check:
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
                     f"{t}/{c}: AUROC {fmt(cand.auroc)} not compared: no champion score for "
                     "this category")
    need = round(max(champ.auroc - AUROC_TOLERANCE, 0.0), 6)
    ok = _meets("auroc", cand.auroc, need, greater_is_better=True)
    op = ">=" if ok else "<"
    return Check(t, c, AUROC, ok, cand.auroc, need,
                 f"{t}/{c}: held-out AUROC {fmt(cand.auroc)} {op} champion v{champion}'s "
                 f"{fmt(champ.auroc)} - {AUROC_TOLERANCE} (n_pos={cand.n_pos})")


def agreement_check(pair: Pair, cand: CategoryEvaluation, champ: CategoryEvaluation | None,
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
                 f"v{champion} on {len(cand.scores)} evaluation items {fmt(p99)} {op} "
                 f"{AGREEMENT_TOLERANCE}" + ("" if ok else ": the candidate changed what it "
                                             "does here with nothing to show it is better"))


def evidence_check(pair: Pair, checks: Sequence[Check], cand: CategoryEvaluation,
                   rule: Rule | None = None) -> Check:
    """A gated category needs at least one measured quality check (or, with no label to
    judge it, scores that agree with the champion's): a candidate is never promoted on no
    evidence about a category it would decide. One exception: a category the policy makes
    review-only (``rule.review_only``), with no champion scores to agree with (a category new
    in this version, e.g. from ``bastion category add``), is admitted without held-out
    evidence, since it only sends items to people, who label them; it may block only after
    threshold calibration on those labels gives it a block threshold, and from then on it
    is gated like any other."""
    t, c = pair
    measured = [ch.name for ch in checks if ch.passed is not None and ch.name in QUALITY]
    if measured:
        return Check(t, c, EVIDENCE, True, float(len(measured)), 1.0,
                     f"{t}/{c}: measured on held-out labels ({', '.join(measured)})")
    if any(ch.name == AGREEMENT and ch.passed for ch in checks):
        return Check(t, c, EVIDENCE, True, 1.0, 1.0,
                     f"{t}/{c}: no held-out labels; scores as the champion did")
    if rule is not None and rule.review_only and not any(ch.name == AGREEMENT for ch in checks):
        return Check(t, c, EVIDENCE, True, 0.0, 0.0,
                     f"{t}/{c}: no held-out labels and no champion scores to compare with; "
                     "admitted because the policy makes it review-only (it never blocks by "
                     "itself): calibrate a block threshold from reviewed labels "
                     "('bastion category status') before it may block")
    return Check(t, c, EVIDENCE, False, 0.0, 1.0,
                 f"{t}/{c}: no quality check was measurable ({cand.n} held-out labelled "
                 f"item(s), {cand.n_pos} positive(s)): a candidate is not promoted without "
                 "evidence; label held-out items for this category")


def same_scores(cand: CategoryEvaluation, champ: CategoryEvaluation | None) -> bool:
    """Whether the candidate scores the category exactly as the champion does on every
    evaluation item, at the same block threshold: the head came over unchanged (e.g. a
    version from ``bastion category add`` carries every other head of its base as it was)."""
    return (champ is not None and cand.block_threshold == champ.block_threshold
            and cand.scores is not None and champ.scores is not None
            and cand.scores.shape == champ.scores.shape
            and bool(np.allclose(cand.scores, champ.scores, rtol=0.0, atol=1e-5)))


def as_champion(check: Check, champion: str | None) -> Check:
    """An absolute rule (precision at the block threshold, calibration) that a candidate fails
    with the champion's own scores: not judged (``passed=None``), since promoting it changes
    nothing there; the relative checks (recall, AUROC) still measure the category, and the
    message keeps the failure in view."""
    return replace(check, passed=None, message=(
        f"{check.message}; as champion v{champion} scores it (the same head, the same scores "
        "on these items): not a regression, so not held against this version; retrain the "
        "head to meet the rule"))


def latency_check(candidate: VersionEvaluation, budget: float) -> Check:
    """The version-wide p99 of scoring one item is within ``budget`` ms. Not a quality
    check: it never counts as evidence (``report.QUALITY``), though a failure rejects."""
    p99 = candidate.p99_ms
    if p99 is None:
        return Check(None, None, LATENCY, None, None, budget,
                     f"p99 latency of v{candidate.version} was not measured")
    ok = _meets("p99_ms", p99, budget, greater_is_better=False)
    op = "<=" if ok else ">"
    return Check(None, None, LATENCY, ok, p99, budget,
                 f"p99 latency of scoring one item {fmt(p99)} ms {op} budget {fmt(budget)} ms")
