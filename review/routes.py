"""The review API as a FastAPI router: user reports and session events (tenant API keys), and
what moderators do (claim, submit, release, read a task, list the queue; reviewer keys).

The application that serves it includes it with :func:`include_review`, handing over a
:class:`ReviewAccess`: the review service, and the tenant authentication and reviewer key
hashes of its current configuration. Errors are :class:`~bastion.core.http.ApiError`; the
including application installs the handlers (:func:`bastion.core.http.install_error_handlers`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from bastion.core.http import ApiError, bearer_token, error_responses
from bastion.core.keys import holder
from bastion.review.audit import AuditLog
from bastion.review.records import LabelIn, LeaseLost, NotFound, Report, ReviewError
from bastion.review.records import SessionEvent as ReviewEvent
from bastion.review.schemas import ClaimToken, EventsRequest, ReportRequest, SubmitRequest
from bastion.review.service import ReviewService, task_view

__all__ = ["router", "ReviewAccess", "Reviewer", "include_review", "review_access",
           "current_reviewer"]

router = APIRouter(tags=["review"])


class ReviewAccess(Protocol):
    """What the review routes need from the application that includes them."""

    def review_service(self) -> ReviewService:
        """The review service; raises ``ApiError(503)`` where review is not enabled."""
        ...

    def authenticate(self, request: Request, tenant: str) -> str:
        """The tenant whose API key the request carries, if it is ``tenant``; else raises
        ``ApiError`` (401, 404, 503)."""
        ...

    def reviewer_hashes(self) -> Mapping[str, Mapping[str, Any]]:
        """``sha256(key) -> {"name", "role", "tenants"}``; raises ``ApiError(503)`` while no
        configuration is loaded."""
        ...


@dataclass(frozen=True)
class Reviewer:
    """Who a reviewer key belongs to."""

    name: str
    role: str  # "moderator" | "mlops"
    tenants: tuple[str, ...]


def include_review(app: FastAPI, access: ReviewAccess) -> None:
    """Serve the review routes from ``app``, answering through ``access``."""
    app.state.review_access = access
    app.include_router(router)


def review_access(request: Request) -> ReviewAccess:
    """Dependency: the :class:`ReviewAccess` the application was given."""
    access: ReviewAccess | None = getattr(request.app.state, "review_access", None)
    if access is None:
        raise ApiError(503, "human review is not enabled on this deployment")
    return access


Access = Annotated[ReviewAccess, Depends(review_access)]


def current_reviewer(request: Request, access: Access) -> Reviewer:
    """Dependency: the reviewer whose key the request carries (moderator or ML ops)."""
    roles = ("moderator", "mlops")
    hashes = access.reviewer_hashes()
    key = bearer_token(request)
    if not key:
        raise ApiError(401, "missing reviewer key: send 'Authorization: Bearer <key>' "
                            "(issue one with 'bastion review keys add')")
    found = holder(hashes, key)
    if found is None:
        raise ApiError(401, "the key is not a reviewer key")
    if found["role"] not in roles:
        raise ApiError(403, f"reviewer {found['name']!r} has role {found['role']!r}; "
                            f"this needs {' or '.join(roles)}")
    return Reviewer(str(found["name"]), str(found["role"]), tuple(found["tenants"]))


CurrentReviewer = Annotated[Reviewer, Depends(current_reviewer)]

# The statuses each kind of route can return (the OpenAPI document lists them): tenant routes
# with a body, and the reviewer routes with and without one.
_TENANT = error_responses(400, 401, 404, 413, 422, 503)
_REVIEWER = (401, 403, 503)


def _audit_task(service: ReviewService, who: Reviewer, action: str, task_id: str,
                **detail: Any) -> None:
    """Write a reviewer's action on a task to the audit log (``bastion.review.audit``)."""
    AuditLog(service.queue.engine).record(who.name, who.role, action,
                                          tenant=service.queue.task_tenant(task_id),
                                          target=task_id, **detail)


def _digest(parts: list[Any]) -> str:
    """An id derived from content, so a repeat of the same report or event is one record."""
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


# -- intake: the product's reports and session events (tenant keys) ----------------------------
@router.post("/v1/reports", status_code=202, summary="A user reports another user or an item.",
             responses=_TENANT)
async def report(req: ReportRequest, request: Request,
                 access: Access) -> dict[str, Any]:
    tenant = access.authenticate(request, req.tenant)
    if not (req.reported_user or req.reported_item or req.session_id):
        raise ApiError(422, "a report names reported_user, reported_item or session_id")
    ts = req.ts or time.time()
    rid = req.report_id or _digest([req.reporter, req.reported_user, req.reported_item,
                                    req.session_id, req.reason, req.text, ts])
    record = Report(tenant=tenant, report_id=rid, reporter=req.reporter,
                    reported_user=req.reported_user, reported_item=req.reported_item,
                    session_id=req.session_id, reason=req.reason, text=req.text, ts=ts)
    try:
        task_id = await asyncio.to_thread(access.review_service().report, record)
    except ReviewError as err:
        raise ApiError(422, str(err)) from None
    return {"report_id": rid, "task_id": task_id}


@router.post("/v1/events", status_code=202,
             summary="Session events (mute, leave, block, ...) that may call for review.",
             responses=_TENANT)
async def events(req: EventsRequest, request: Request,
                 access: Access) -> dict[str, Any]:
    tenant = access.authenticate(request, req.tenant)
    out = []
    for e in req.events:
        ts = e.ts or time.time()
        eid = e.event_id or _digest([e.session_id, e.user_id, e.kind, e.target_user, ts])
        ev = ReviewEvent(tenant=tenant, event_id=eid, session_id=e.session_id,
                         user_id=e.user_id, kind=e.kind, target_user=e.target_user, ts=ts)
        try:
            out.append({"event_id": eid,
                        "task_id": await asyncio.to_thread(access.review_service().event, ev)})
        except ReviewError as err:
            raise ApiError(422, str(err)) from None
    return {"accepted": out}


# -- moderators (reviewer keys) ----------------------------------------------------------------
@router.post("/v1/review/claim", summary="Lease the most urgent task in your tenants.",
             responses=error_responses(*_REVIEWER))
async def review_claim(who: CurrentReviewer,
                       access: Access) -> JSONResponse:
    got = await asyncio.to_thread(access.review_service().claim, who.name, who.tenants)
    if got is None:
        return JSONResponse({"claim": None, "message": "nothing to review"}, 200)
    claim, task = got
    await asyncio.to_thread(AuditLog(access.review_service().queue.engine).record, who.name,
                            who.role, "claim", tenant=task.tenant, target=task.task_id,
                            slot=claim.slot, via="api")
    return JSONResponse({"claim": {"token": claim.token, "task_id": claim.task_id,
                                   "slot": claim.slot, "leased_until": claim.leased_until},
                         "task": task_view(task, show_gold=who.role == "mlops")})


@router.post("/v1/review/submit", summary="Submit labels for a claimed task (idempotent).",
             responses=error_responses(*_REVIEWER, 400, 404, 409, 413, 422))
async def review_submit(req: SubmitRequest, who: CurrentReviewer,
                        access: Access) -> dict[str, Any]:
    service = access.review_service()
    labels = [LabelIn(x.item_id, x.category, x.value, x.confidence) for x in req.labels]
    try:
        owner = await asyncio.to_thread(service.queue.claim_of, req.token)
        if owner.moderator != who.name:
            raise ApiError(403, "that claim belongs to another reviewer")
        sub = await asyncio.to_thread(service.submit, req.token, req.submission_id, labels)
    except LeaseLost as err:
        raise ApiError(409, str(err)) from None
    except NotFound as err:
        raise ApiError(404, str(err)) from None
    except ReviewError as err:
        raise ApiError(422, str(err)) from None
    if not sub.duplicate:
        await asyncio.to_thread(_audit_task, service, who, "submit", sub.task_id,
                                submission_id=sub.submission_id, labels=len(sub.labels))
    return {"submission_id": sub.submission_id, "task_id": sub.task_id,
            "duplicate": sub.duplicate, "labels": len(sub.labels)}


@router.post("/v1/review/release", summary="Give a claimed task back to the queue.",
             responses=error_responses(*_REVIEWER, 400, 409, 413, 422))
async def review_release(req: ClaimToken, who: CurrentReviewer,
                         access: Access) -> dict[str, Any]:
    service = access.review_service()
    try:
        owner = await asyncio.to_thread(service.queue.claim_of, req.token)
        if owner.moderator != who.name:
            raise ApiError(403, "that claim belongs to another reviewer")
        await asyncio.to_thread(service.queue.release, req.token)
    except (LeaseLost, NotFound) as err:
        raise ApiError(409, str(err)) from None
    await asyncio.to_thread(_audit_task, service, who, "release", owner.task_id)
    return {"released": True}


@router.get("/v1/review/tasks/{task_id}", summary="One task, within your tenants.",
            responses=error_responses(*_REVIEWER, 404, 422))  # FastAPI lists 422 anyway
async def review_task(task_id: str, who: CurrentReviewer,
                      access: Access) -> dict[str, Any]:
    try:
        task = await asyncio.to_thread(access.review_service().queue.task, task_id,
                                       who.tenants)
    except NotFound as err:
        raise ApiError(404, str(err)) from None
    return task_view(task, show_gold=who.role == "mlops")


@router.get("/v1/review/queue", summary="Open tasks in your tenants, most urgent first.",
            responses=error_responses(*_REVIEWER, 422))
async def review_queue(who: CurrentReviewer, access: Access,
                       limit: int = 50) -> dict[str, Any]:
    tasks = await asyncio.to_thread(access.review_service().queue.pending, who.tenants,
                                    max(1, min(limit, 500)))
    return {"tasks": [{"task_id": t.task_id, "tenant": t.tenant, "priority": t.priority,
                       "reasons": t.reasons, "slots": t.slots, "slots_done": t.slots_done,
                       "items": len(t.items), "reports": len(t.reports),
                       "events": len(t.events)} for t in tasks]}
