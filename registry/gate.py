"""The promotion gate: may a candidate model version replace the champion?

Both versions are measured on the same held-out human-labelled data
(``registry.evaluation.evaluate_version``). :func:`run_gate` resolves each (tenant,
category)'s rule from the policy, runs the checks of ``registry.checks`` on candidate and
champion, and returns the :class:`~bastion.registry.report.GateReport` a person reads.
"""

from __future__ import annotations

from bastion.core.policy import PolicySet
from bastion.registry.checks import (
    Rule,
    agreement_check,
    as_champion,
    auroc_check,
    calibration_check,
    evidence_check,
    latency_check,
    precision_check,
    present_check,
    recall_check,
    same_scores,
)
from bastion.registry.evaluation import CategoryEvaluation, Pair, VersionEvaluation
from bastion.registry.report import CALIBRATION, PRECISION, Check, GateReport, measured

__all__ = ["pair_checks", "run_gate"]


def _rule(policy: PolicySet, tenant: str, category: str) -> Rule:
    """A category's gate rule: its own fields, else (precision only) its target_precision,
    else the file's ``gate`` defaults."""
    cpol = policy.tenants[tenant].categories[category]
    g, d = cpol.gate, policy.gate
    min_precision = g.min_precision
    if min_precision is None:
        min_precision = cpol.target_precision if cpol.target_precision is not None else (
            d.min_precision
        )
    return Rule(
        min_precision=min_precision,
        recall_tolerance=d.recall_tolerance if g.recall_tolerance is None else g.recall_tolerance,
        max_ece=d.max_ece if g.max_ece is None else g.max_ece,
        min_positives=d.min_positives if g.min_positives is None else g.min_positives,
        review_only=cpol.block_threshold is None and cpol.target_precision is None,
    )


def pair_checks(pair: Pair, cand: CategoryEvaluation | None,
                champ: CategoryEvaluation | None, candidate: str, champion: str | None,
                rule: Rule | None) -> list[Check]:
    """One (tenant, category)'s checks: presence; then, for a category of the policy (its
    ``rule``; None: one only the champion still scores), the quality checks (or, where none is
    measurable, agreement with the champion) and the evidence check. The text gate and the
    image gate (``registry.image_gate``) both run it."""
    present = present_check(pair, cand, champ, candidate, champion, rule is not None)
    if not present.passed or rule is None:
        return [present]
    assert cand is not None
    quality = [precision_check(pair, cand, champ, rule),
               recall_check(pair, cand, champ, champion, rule),
               calibration_check(pair, cand, rule),
               auroc_check(pair, cand, champ, champion, rule)]
    if same_scores(cand, champ):  # a head carried over unchanged: absolute rules it failed as
        quality = [as_champion(ch, champion)  # champion already are not this version's doing
                   if ch.passed is False and ch.name in (PRECISION, CALIBRATION) else ch
                   for ch in quality]
    if not any(ch.passed is not None for ch in quality):
        agreement = agreement_check(pair, cand, champ, champion)
        if agreement is not None:
            quality.append(agreement)
    return [present, *quality, evidence_check(pair, quality, cand, rule)]


def run_gate(
    candidate: VersionEvaluation, champion: VersionEvaluation | None, policy: PolicySet
) -> GateReport:
    """Check a candidate against the champion and the policy's gate rules.

    Per (tenant, category) of the policy, and of the champion's scored categories: the
    candidate has a head for it (if not, or if the category left the policy, its other checks
    are skipped); precision at the block threshold reaches ``min_precision``; recall at the
    block threshold is at most ``recall_tolerance`` below the champion's; expected calibration
    error is at most ``max_ece``; AUROC is at most ``AUROC_TOLERANCE`` below the champion's.
    Where none of these is measurable, the candidate's scores must agree with the champion's;
    and at least one of them (or the agreement) must be measured: the evidence check. Then the
    version-wide p99 latency is within ``max_p99_ms``; a failing latency rejects, but latency
    is never evidence of quality. Checks on fewer than ``min_positives`` held-out positives,
    and calibration on too few items to tell from chance, are not measurable
    (``passed=None``), never passed.

    Args:
        candidate: The version that would become champion.
        champion: The current champion, or None for the first version.
        policy: The tenant policies (and gate rules) the candidate would serve.

    Returns:
        The report; ``passed`` when no check failed and at least one quality check was
        measured.
    """
    champ_name = champion.version if champion is not None else None
    pairs: list[Pair] = [(t, c) for t, tpol in policy.tenants.items() for c in tpol.categories]
    if champion is not None:  # what the champion scored may not vanish with a policy edit
        pairs += [p for p, ev in champion.categories.items()
                  if ev.head_key is not None and p not in pairs]
    checks: list[Check] = []
    for pair in pairs:
        t, c = pair
        in_policy = t in policy.tenants and c in policy.tenants[t].categories
        checks += pair_checks(
            pair, candidate.categories.get(pair),
            champion.categories.get(pair) if champion is not None else None,
            candidate.version, champ_name, _rule(policy, t, c) if in_policy else None)
    checks.append(latency_check(candidate, policy.gate.max_p99_ms))
    failed = any(ch.passed is False for ch in checks)
    return GateReport(
        candidate=candidate.version, champion=champ_name,
        passed=(measured(checks) or _adds_review_only(candidate, champion, policy, pairs))
        and not failed,
        checks=checks,
    )


def _adds_review_only(candidate: VersionEvaluation, champion: VersionEvaluation | None,
                      policy: PolicySet, pairs: list[Pair]) -> bool:
    """Whether the candidate is the champion plus new review-only categories (``bastion
    category add``): every category the champion scores it scores the same
    (:func:`~bastion.registry.checks.same_scores`), and at least one category the champion
    has no head for is one the policy makes review-only. Such a version changes no decision
    the champion makes and only sends more items to people, so it needs no measured quality
    check where the held-out data measures none (a machine without labelled data); an
    unchanged retrain with nothing new still does."""
    if champion is None:
        return False
    new = 0
    for t, c in pairs:
        cand, champ = candidate.categories.get((t, c)), champion.categories.get((t, c))
        if cand is None or cand.head_key is None:
            return False
        if champ is not None and champ.head_key is not None:
            if not same_scores(cand, champ):
                return False
        elif t in policy.tenants and c in policy.tenants[t].categories \
                and _rule(policy, t, c).review_only:
            new += 1
        else:
            return False
    return new > 0
