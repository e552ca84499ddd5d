"""The moderators' console: a single page (``/console/``, static files shipped in the package,
nothing from a CDN) and the JSON routes it calls (``/v1/console/...``), served by the same
application as the API, on the same origin.

Sign-in is with a reviewer key (``bastion review keys add``). The page keeps the key in the
tab's ``sessionStorage`` and sends it as ``Authorization: Bearer``: never in a URL, never in a
cookie, so there is no ambient credential a cross-site form could ride (no CSRF), and the
Content-Security-Policy allows scripts from this origin only. Every check is made here, on the
server: a moderator sees only their tenants' tasks and dashboards, only ML ops read the audit
log, and every action is written to it (:mod:`bastion.review.audit`).

Wellness: a claimed session comes with its texts withheld. The moderator reveals an item
(``POST /v1/console/reveal``), which counts toward their exposure today; past the tenant's
``review.daily_exposure_cap`` the console claims no more of that tenant's tasks for them
that day (429 with ``Retry-After`` until the next UTC day).
"""

from __future__ import annotations

import asyncio
import io
import math
import time
from importlib import resources
from typing import Any

from fastapi import APIRouter, FastAPI, Query
from fastapi.responses import JSONResponse, RedirectResponse, Response
from PIL import Image, ImageFilter
from pydantic import BaseModel, Field

from bastion.core.decision import KeywordMatcher
from bastion.core.http import ApiError, error_responses
from bastion.review.audit import AuditLog, day_start
from bastion.review.dashboards import moderator_throughput, monitor, overview
from bastion.review.records import LeaseLost, NotFound, Task, media_without_words
from bastion.review.routes import Access, CurrentReviewer, Reviewer

__all__ = ["CONTENT_SECURITY_POLICY", "include_console", "masked_view", "router"]

router = APIRouter(tags=["console"])

#: The console's pages load scripts, styles and data from this origin only; no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; font-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
_ASSETS = {"console.js": "text/javascript; charset=utf-8",
           "console.css": "text/css; charset=utf-8"}
_REVIEWER = (401, 403, 503)


def include_console(app: FastAPI) -> None:
    """Serve the console from ``app`` (which already includes the review routes)."""
    app.include_router(router)


def _asset(name: str) -> bytes:
    return resources.files("bastion.review").joinpath("console_static", name).read_bytes()


@router.get("/console", include_in_schema=False)
async def console_root() -> Response:
    return RedirectResponse("/console/", status_code=308)


@router.get("/console/", include_in_schema=False)
async def console_page() -> Response:
    return Response(_asset("index.html"), media_type="text/html; charset=utf-8",
                    headers=_SECURITY_HEADERS)


@router.get("/console/assets/{name}", include_in_schema=False)
async def console_asset(name: str) -> Response:
    if name not in _ASSETS:
        raise ApiError(404, f"no console asset {name!r}")
    return Response(_asset(name), media_type=_ASSETS[name], headers=_SECURITY_HEADERS)


# -- who is signed in ------------------------------------------------------------------------
def _audit(access: Access) -> AuditLog:
    return AuditLog(access.review_service().queue.engine)


def _caps(access: Access, who: Reviewer) -> dict[str, int]:
    policy = access.review_service().policy()
    return {t: policy.tenants[t].review.daily_exposure_cap for t in who.tenants
            if t in policy.tenants}


def _me(access: Access, who: Reviewer) -> dict[str, Any]:
    return {"name": who.name, "role": who.role, "tenants": list(who.tenants),
            "exposure_today": _audit(access).exposure_today(who.name),
            "daily_exposure_caps": _caps(access, who)}


@router.post("/v1/console/session", summary="Sign in to the console with a reviewer key.",
             responses=error_responses(*_REVIEWER))
async def console_sign_in(who: CurrentReviewer, access: Access) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        _audit(access).record(who.name, who.role, "sign_in")
        return _me(access, who)

    return await asyncio.to_thread(run)


@router.get("/v1/console/me", summary="The signed-in reviewer, their tenants and exposure.",
            responses=error_responses(*_REVIEWER))
async def console_me(who: CurrentReviewer, access: Access) -> dict[str, Any]:
    return await asyncio.to_thread(_me, access, who)


# -- the queue and a session -----------------------------------------------------------------
def _categories(task: Task) -> list[str]:
    return sorted({str(r["category"]) for r in task.reasons if r.get("category")})


def _reason_kinds(task: Task) -> list[str]:
    kinds = set()
    for r in task.reasons:
        factor = str(r.get("factor", ""))
        if "severity" in factor:
            kinds.add("model")
        elif "report" in factor:
            kinds.add("reports")
        elif "event" in factor:
            kinds.add("events")
        elif "deprioritized" in factor:
            kinds.add("deprioritized")
    if any(i.keyword_hits for i in task.items):
        kinds.add("keywords")
    return sorted(kinds)


@router.get("/v1/console/queue",
            summary="Open tasks in your tenants, most urgent first, with why they rank there.",
            responses=error_responses(*_REVIEWER, 422))
async def console_queue(who: CurrentReviewer, access: Access,
                        category: str | None = Query(None, max_length=64),
                        reason: str | None = Query(None, max_length=32),
                        limit: int = Query(100, ge=1, le=500)) -> dict[str, Any]:
    now = time.time()
    filtered = category is not None or reason is not None
    tasks = await asyncio.to_thread(access.review_service().queue.pending, who.tenants,
                                    500 if filtered else limit)
    out = []
    for t in tasks:
        cats, kinds = _categories(t), _reason_kinds(t)
        if (category and category not in cats) or (reason and reason not in kinds):
            continue
        out.append({"task_id": t.task_id, "tenant": t.tenant, "priority": t.priority,
                    "reasons": t.reasons, "categories": cats, "reason_kinds": kinds,
                    "age_s": max(0.0, now - t.created_ts) if t.created_ts else None,
                    "slots": t.slots, "slots_done": t.slots_done,
                    "items": len(t.items), "reports": len(t.reports),
                    "events": len(t.events)})
        if len(out) >= limit:
            break
    return {"tasks": out}


def masked_view(task: Task) -> dict[str, Any]:
    """A session as the console first shows it: every text withheld until revealed, the
    reports and events on one timeline, and why the task ranks where it does."""
    items = [{"item_id": i.item_id, "text": None, "masked": True,
              "text_length": None if i.text is None else len(i.text),
              "text_kept": i.text is not None, "user_id": i.user_id, "source": i.source,
              "scores": i.scores, "keyword_hits": i.keyword_hits, "decision": i.decision,
              "model_version": i.model_version, "ts": i.ts, "modality": i.modality,
              "language": i.language,
              "media": media_without_words(i.media), "media_kept": i.has_media}
             for i in sorted(task.items, key=lambda i: (i.ts, i.item_id))]
    timeline: list[dict[str, Any]] = [
        {"kind": "report", "ts": r.ts, "reporter": r.reporter, "reason": r.reason,
         "comment": r.text, "reported_user": r.reported_user,
         "reported_item": r.reported_item} for r in task.reports]
    timeline += [{"kind": e.kind, "ts": e.ts, "user_id": e.user_id,
                  "target_user": e.target_user} for e in task.events]
    timeline.sort(key=lambda x: x["ts"])
    return {"task_id": task.task_id, "tenant": task.tenant, "group_key": task.group_key,
            "priority": task.priority, "reasons": task.reasons, "slots": task.slots,
            "slots_done": task.slots_done, "items": items, "timeline": timeline}


@router.post("/v1/console/claim",
             summary="Lease the most urgent session in your tenants, its texts withheld.",
             responses=error_responses(*_REVIEWER, 429))
async def console_claim(who: CurrentReviewer, access: Access) -> JSONResponse:
    service = access.review_service()

    def run() -> JSONResponse:
        audit = _audit(access)
        exposure = audit.exposure_today(who.name)
        caps = _caps(access, who)
        open_to = [t for t in who.tenants if t in caps and exposure < caps[t]]
        if caps and not open_to:
            audit.record(who.name, who.role, "exposure_cap", exposure=exposure)
            now = time.time()
            raise ApiError(429, f"{who.name} revealed {exposure} items today, the daily "
                                f"exposure cap of every tenant they review; take a break: "
                                f"claims open again at 00:00 UTC",
                           retry_after_s=math.ceil(day_start(now) + 86400 - now))
        got = service.claim(who.name, open_to)
        if got is None:
            return JSONResponse({"claim": None, "message": "nothing to review"})
        claim, task = got
        audit.record(who.name, who.role, "claim", tenant=task.tenant, target=task.task_id,
                     slot=claim.slot, via="console")
        return JSONResponse({"claim": {"token": claim.token, "task_id": claim.task_id,
                                       "slot": claim.slot, "leased_until": claim.leased_until},
                             "task": masked_view(task), "exposure_today": exposure})

    return await asyncio.to_thread(run)


class RevealRequest(BaseModel):
    token: str = Field(..., min_length=1, max_length=128, description="The claim's token.")
    item_id: str = Field(..., min_length=1, max_length=256)


@router.post("/v1/console/reveal",
             summary="Show one withheld text of the session you claimed (counts as exposure).",
             responses=error_responses(*_REVIEWER, 400, 404, 409, 413, 422))
async def console_reveal(req: RevealRequest, who: CurrentReviewer,
                         access: Access) -> dict[str, Any]:
    service = access.review_service()

    def run() -> dict[str, Any]:
        try:
            claim = service.queue.claim_of(req.token)
        except (LeaseLost, NotFound) as err:
            raise ApiError(409, f"{err}: claim the session again") from None
        if claim.moderator != who.name:
            raise ApiError(403, "that claim belongs to another reviewer")
        task = service.queue.task(claim.task_id, who.tenants)
        item = next((i for i in task.items if i.item_id == req.item_id), None)
        if item is None:
            raise ApiError(404, f"item {req.item_id!r} is not in the claimed session")
        audit = _audit(access)
        target = f"{task.tenant}/{item.item_id}"
        if not audit.revealed(who.name, target):
            audit.record(who.name, who.role, "reveal", tenant=task.tenant, target=target,
                         task_id=task.task_id)
        tenant_policy = service.policy().tenants.get(task.tenant)
        marks = ([] if item.text is None or tenant_policy is None
                 else KeywordMatcher(tenant_policy).spans(item.text))
        return {"item_id": item.item_id, "text": item.text,
                "text_kept": item.text is not None,
                "keyword_spans": [{"start": a, "end": b, "rule": r} for a, b, r in marks],
                "modality": item.modality, "media": item.media, "media_kept": item.has_media,
                "exposure_today": audit.exposure_today(who.name)}

    return await asyncio.to_thread(run)


@router.get("/v1/console/media",
            summary="The kept image or clip of an item of the session you claimed: an image "
                    "blurred until you revealed it, a clip only once revealed.",
            response_class=Response,
            responses={200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {},
                                         "audio/wav": {}, "audio/flac": {}, "audio/ogg": {}},
                             "description": "The media's bytes."},
                       **error_responses(*_REVIEWER, 404, 409, 422)})
async def console_media(who: CurrentReviewer, access: Access,
                        token: str = Query(..., min_length=1, max_length=128),
                        item_id: str = Query(..., min_length=1, max_length=256),
                        blurred: bool = Query(False, description="A blurred preview of an "
                                              "image (no exposure; the default before reveal)"),
                        ) -> Response:
    service = access.review_service()

    def run() -> Response:
        try:
            claim = service.queue.claim_of(token)
        except (LeaseLost, NotFound) as err:
            raise ApiError(409, f"{err}: claim the session again") from None
        if claim.moderator != who.name:
            raise ApiError(403, "that claim belongs to another reviewer")
        task = service.queue.task(claim.task_id, who.tenants)
        item = next((i for i in task.items if i.item_id == item_id), None)
        if item is None:
            raise ApiError(404, f"item {item_id!r} is not in the claimed session")
        try:
            mime, data = service.queue.item_media(task.task_id, item_id, who.tenants)
        except NotFound as err:
            raise ApiError(404, str(err)) from None
        revealed = _audit(access).revealed(who.name, f"{task.tenant}/{item.item_id}")
        if item.modality == "image" and (blurred or not revealed):
            return Response(blurred_preview(data), media_type="image/jpeg",
                            headers={"Cache-Control": "no-store"})
        if not revealed:
            raise ApiError(409, "reveal the item first (POST /v1/console/reveal): playing it "
                                "counts toward your exposure")
        return Response(data, media_type=mime, headers={"Cache-Control": "no-store"})

    return await asyncio.to_thread(run)


def blurred_preview(data: bytes, *, side: int = 24) -> bytes:
    """A preview of an image that shows its layout, never its content: shrunk to ``side``
    pixels and blurred, then enlarged again (the browser gets no more than this)."""
    with Image.open(io.BytesIO(data)) as img:
        rgb = img.convert("RGB")
        w, h = rgb.size
        small = rgb.resize((max(1, side * w // max(w, h)), max(1, side * h // max(w, h))))
        big = small.filter(ImageFilter.GaussianBlur(2)).resize(
            (min(w, 480), min(w, 480) * h // max(w, 1)), Image.Resampling.BILINEAR)
        out = io.BytesIO()
        big.save(out, "JPEG", quality=70)
        return out.getvalue()


# -- dashboards and the audit log ------------------------------------------------------------
@router.get("/v1/console/overview",
            summary="Decisions per category and tenant over time, reports, the queue, "
                    "minutes saved.",
            responses=error_responses(*_REVIEWER, 422))
async def console_overview(who: CurrentReviewer, access: Access,
                           hours: float = Query(24.0, gt=0, le=24 * 90),
                           bucket_s: float = Query(3600.0, ge=60, le=86400)
                           ) -> dict[str, Any]:
    if hours * 3600 / bucket_s > 5000:
        raise ApiError(422, f"{hours} h in buckets of {bucket_s} s is more than 5000 "
                            "buckets; use larger buckets")
    engine = access.review_service().queue.engine
    return await asyncio.to_thread(overview, engine, who.tenants, hours=hours,
                                   bucket_s=bucket_s)


@router.get("/v1/console/monitor", summary="The last 15 minutes, for the live monitor.",
            responses=error_responses(*_REVIEWER))
async def console_monitor(who: CurrentReviewer, access: Access) -> dict[str, Any]:
    engine = access.review_service().queue.engine
    return await asyncio.to_thread(monitor, engine, who.tenants)


@router.get("/v1/console/audit", summary="The audit log of your tenants (ML ops only).",
            responses=error_responses(*_REVIEWER, 422))
async def console_audit(who: CurrentReviewer, access: Access,
                        limit: int = Query(200, ge=1, le=1000)) -> dict[str, Any]:
    if who.role != "mlops":
        raise ApiError(403, f"{who.name} is a {who.role}; the audit log is for ML ops")
    colleagues = {str(r["name"]) for r in access.reviewer_hashes().values()
                  if set(r["tenants"]) & set(who.tenants)}
    entries = await asyncio.to_thread(_audit(access).recent, who.tenants, colleagues,
                                      limit=limit)
    return {"entries": [e.__dict__ for e in entries]}


@router.get("/v1/console/moderators",
            summary="Each moderator's throughput, agreement with peers, gold accuracy and "
                    "reliability (ML ops only).",
            responses=error_responses(*_REVIEWER))
async def console_moderators(who: CurrentReviewer, access: Access) -> dict[str, Any]:
    if who.role != "mlops":
        raise ApiError(403, f"{who.name} is a {who.role}; moderator measures are for ML ops")
    service = access.review_service()

    def run() -> dict[str, Any]:
        throughput = moderator_throughput(service.queue.engine, who.tenants)
        agreement = service.agreement(who.tenants)
        reliability = service.moderators(who.tenants)
        names = sorted(set(throughput) | set(agreement) | {r["annotator"] for r in reliability})
        out = []
        for name in names:
            mine = [r for r in reliability if r["annotator"] == name]
            golds = [(r["gold_accuracy"], r["n_gold"]) for r in mine
                     if r["gold_accuracy"] is not None and r["n_gold"]]
            n_gold = sum(n for _, n in golds)
            out.append({
                "moderator": name, **throughput.get(name, {"sessions": 0, "items": 0}),
                **agreement.get(name, {"agreement": None, "pairs": 0}),
                "gold_accuracy": round(sum(a * n for a, n in golds) / n_gold, 4)
                if n_gold else None, "gold_labels": n_gold,
                "reliability": [{k: r[k] for k in ("category", "sensitivity", "specificity",
                                                   "n_labels")} for r in mine]})
        return {"moderators": out}

    return await asyncio.to_thread(run)
