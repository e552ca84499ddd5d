"""Review priority: which session a moderator should see first, and why.

A task's priority multiplies four signals, each configurable per tenant (the policy's
categories' ``severity`` and its ``review`` section):

- **severity x uncertainty**, the most of its items' categories: a category's severity times
  how close the item's score lies to the category's block threshold (1 at the threshold, 0 at
  the far end of [0, 1]). Items with no model scores (a report of an unscored message) count
  as uncertain as can be, at the mean severity of the tenant's categories.
- **reports**: ``1 + report_weight x sum of the reporters' reliabilities``; a reporter's
  reliability is the Beta(1, 1) posterior mean of their earlier reports confirmed by
  moderators (confirmed + 1) / (resolved + 2), so a new reporter counts 0.5.
- **session events**: ``1 + sum of event_weights`` of its mutes, leaves, blocks.
- **deprioritized phrases**: ``deprioritized_factor`` when a flagged item (not the session's
  context) contains one.

Every factor goes into the task's ``reasons``, so a moderator sees why a task ranks where it
does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bastion.core.decision import normalize_text
from bastion.core.policy import TenantPolicy
from bastion.review.records import Report, ReviewItem, SessionEvent

__all__ = ["task_priority", "item_urgency", "reporter_reliability"]


def reporter_reliability(confirmed: int, resolved: int) -> float:
    """Beta(1, 1) posterior mean of a reporter being right."""
    return (confirmed + 1) / (resolved + 2)


def item_urgency(item: ReviewItem, policy: TenantPolicy,
                 thresholds: dict[str, float] | None = None) -> tuple[float, dict[str, Any]]:
    """Severity x uncertainty of one item: (value, the reason naming its category).

    ``thresholds``: the block threshold serving resolved per category (a category with a
    ``target_precision`` has no fixed one in the policy); 0.5 where neither says.
    """
    best, why = 0.0, {}
    for name, cat in policy.categories.items():
        if name not in item.scores:
            continue
        s = float(item.scores[name])
        t = (thresholds or {}).get(name, cat.block_threshold if cat.block_threshold is not None
                                   else 0.5)
        uncertainty = max(0.0, 1.0 - abs(s - t) / max(t, 1.0 - t))
        value = cat.severity * uncertainty
        if value > best:
            best = value
            why = {"factor": "severity x uncertainty", "item_id": item.item_id,
                   "category": name, "score": round(s, 4), "threshold": round(t, 4),
                   "severity": cat.severity, "value": round(value, 4)}
    if not item.scores:
        sev = sum(c.severity for c in policy.categories.values()) / len(policy.categories)
        best = sev
        why = {"factor": "unscored item (as uncertain as can be)", "item_id": item.item_id,
               "severity": round(sev, 4), "value": round(sev, 4)}
    return best, why


def _has_phrase(text: str | None, phrases: Sequence[str]) -> str | None:
    if not text or not phrases:
        return None
    norm = f" {normalize_text(text)} "
    for p in phrases:
        if f" {normalize_text(p)} " in norm:
            return p
    return None


def task_priority(
    items: Sequence[ReviewItem],
    reports: Sequence[Report],
    events: Sequence[SessionEvent],
    policy: TenantPolicy,
    *,
    reporter_record: Callable[[str], tuple[int, int]] = lambda _r: (0, 0),
    thresholds: dict[str, float] | None = None,
) -> tuple[float, list[dict[str, Any]]]:
    """A task's priority and the reasons behind it (see the module docstring).

    Args:
        reporter_record: (confirmed, resolved) earlier reports of a reporter.
        thresholds: block thresholds per category as serving resolved them.
    """
    rp = policy.review
    reasons: list[dict[str, Any]] = []
    base, why = 0.0, {}
    for item in items:
        value, w = item_urgency(item, policy, thresholds)
        if value > base:
            base, why = value, w
    if not items:  # a report or an event with nothing scored yet
        base = sum(c.severity for c in policy.categories.values()) / len(policy.categories)
        why = {"factor": "no scored item yet", "value": round(base, 4)}
    reasons.append(why)
    priority = base
    if reports:
        rel = [reporter_reliability(*reporter_record(r.reporter)) for r in reports]
        factor = 1.0 + rp.report_weight * sum(rel)
        priority *= factor
        reasons.append({"factor": "user reports", "n": len(reports),
                        "reporter_reliability": [round(x, 3) for x in rel],
                        "reasons": sorted({r.reason for r in reports}),
                        "value": round(factor, 4)})
    if events:
        weights = [rp.event_weights.get(e.kind, 0.0) for e in events]
        factor = 1.0 + sum(weights)
        priority *= factor
        reasons.append({"factor": "session events",
                        "kinds": sorted({e.kind for e in events}), "n": len(events),
                        "value": round(factor, 4)})
    for item in items:
        if item.source == "context":  # the session's other messages do not soften a flag
            continue
        phrase = _has_phrase(item.text, policy.deprioritized_phrases)
        if phrase is not None:
            priority *= rp.deprioritized_factor
            reasons.append({"factor": "deprioritized phrase", "phrase": phrase,
                            "item_id": item.item_id, "value": rp.deprioritized_factor})
            break
    return round(priority, 6), reasons
