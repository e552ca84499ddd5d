"""A request's decisions, assembled in one pass over its scored items: the results the API
returns, the records the event log keeps and the items the review queue takes in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bastion.core.cascade import Stage, stage_reason
from bastion.core.decision import ResolvedTenant, decide
from bastion.core.events import DecisionEvent
from bastion.core.http import ApiError
from bastion.core.textkey import text_digest
from bastion.review.records import ReviewItem
from bastion.serving.schemas import ModerateRequest
from bastion.serving.scorer import ScoreResult

__all__ = ["Decisions", "assemble"]


@dataclass(frozen=True)
class Decisions:
    """What one request decided, for the caller, the event log and the review queue."""

    response: dict[str, Any]  # a ModerateResponse
    events: list[DecisionEvent]
    review_items: list[ReviewItem]


def assemble(req: ModerateRequest, tenant: str,
             scored: Sequence[tuple[ScoreResult, ResolvedTenant]], *, request_id: str,
             now: float, review: bool, text_key: bytes) -> Decisions:
    """Decide every item of ``req``.

    Args:
        req: the validated request.
        tenant: the authenticated tenant.
        scored: consecutive chunks of the request's items, each with the Scorer's result and
            the tenant's policy resolved for that result's model version.
        request_id: the id the response and the events carry.
        now: the decisions' timestamp.
        review: whether review is enabled: items decided "review", and the other items of
            their sessions (as context), go to the review queue.
        text_key: the install's text digest key (``core.textkey``).

    Raises:
        ApiError: 422 when ``req.categories`` names a category the tenant does not enforce.
    """
    results: list[dict[str, Any]] = []
    events: list[DecisionEvent] = []
    review_items: list[ReviewItem] = []
    items = iter(req.items)
    for res, rt in scored:
        if req.categories is not None:
            known = {c.name for c in rt.categories}
            unknown = sorted(set(req.categories) - known)
            if unknown:
                raise ApiError(422, f"unknown categories {unknown} for tenant {tenant!r}; "
                                    f"it enforces {sorted(known)}")
        for j in range(len(res.scores)):
            item = next(items)
            d = decide(rt, item.text, res.scores[j], req.categories)
            digest = text_digest(item.text, text_key)
            results.append({"id": item.id, **d, "model_version": res.model_version,
                            "policy_version": rt.version})
            in_review = d["decision"] == "review"
            if review and (in_review or item.context.session_id):
                # a session's other items join its review task as context (if it has one)
                review_items.append(ReviewItem(
                    tenant=tenant, item_id=item.id, text=item.text,
                    text_sha256=digest, session_id=item.context.session_id,
                    user_id=item.context.user_id,
                    source="decision" if in_review else "context", scores=d["scores"],
                    keyword_hits=[str(h.get("rule") or h.get("category") or "")
                                  for h in d["keyword_hits"]],
                    decision=d["decision"], model_version=res.model_version,
                    policy_version=rt.version, ts=now))
            stage = None if res.stages is None else int(res.stages[j])  # the cascade
            events.append(DecisionEvent(
                ts=now, request_id=request_id, tenant=tenant, item_id=item.id,
                session_id=item.context.session_id, user_id=item.context.user_id,
                text=item.text if rt.store_raw_text else None,
                text_sha256=digest, text_len=len(item.text),
                decision=d["decision"], scores=d["scores"],
                reasons=d["reasons"] + ([] if stage is None else [stage_reason(stage)]),
                model_version=res.model_version, policy_version=rt.version,
                embedding=None if stage == Stage.first else res.embeddings[j],
            ))
    response = {"request_id": request_id, "tenant": tenant,
                "model_version": results[0]["model_version"],
                "policy_version": results[0]["policy_version"], "results": results}
    return Decisions(response, events, review_items)
