"""The ingress deployment: authenticate the tenant, validate input, score, decide, log.

Policies and tenant key hashes arrive through ``user_config``; ``reconfigure`` swaps them
atomically, so a policy edit never restarts a replica. Errors are 4xx with a message that
says what is wrong; the service keeps serving.
"""


import asyncio
import hashlib
import hmac
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle

from bastion.core.decision import ResolvedTenant, decide, fit_problems, resolve_policy
from bastion.core.events import DecisionEvent, EventLog, EventWriter, text_digest
from bastion.core.policy import PolicySet, parse_policy
from bastion.core.settings import Limits
from bastion.review.queue import ReviewQueue
from bastion.review.records import LabelIn, LeaseLost, NotFound, Report, ReviewError, ReviewItem
from bastion.review.records import SessionEvent as ReviewEvent
from bastion.review.service import IntakeWriter, ReviewService, task_view
from bastion.serving.schemas import (
    ClaimToken,
    EventsRequest,
    ModerateRequest,
    ModerateResponse,
    ReportRequest,
    SubmitRequest,
)

__all__ = ["Ingress", "api"]

log = logging.getLogger("ray.serve")

api = FastAPI(
    title="Bastion moderation API",
    version="1",
    description="Per-tenant category scores and a decision (block, review, allow) for content.",
)


class ApiError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


@api.exception_handler(ApiError)
async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse({"error": exc.message, **exc.extra}, status_code=exc.status)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _bearer(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else ""


def _holder(by_hash: dict[str, Any], key: str) -> Any:
    """Whom a key belongs to, by its SHA-256 (compared in constant time), or None."""
    digest, found = key_hash(key), None
    for h, who in by_hash.items():
        if hmac.compare_digest(h, digest):
            found = who
    return found


def _validation_messages(err: ValidationError) -> list[str]:
    out = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field; remove it"
        out.append(f"{loc}: {msg}")
    return out


@dataclass(frozen=True)
class _PolicyState:
    policy: PolicySet
    key_to_tenant: dict[str, str]  # sha256(key) -> tenant
    loaded_at: float
    reviewers: dict[str, dict[str, Any]]  # sha256(key) -> {"name", "role", "tenants"}


@dataclass(frozen=True)
class Reviewer:
    name: str
    role: str  # "moderator" | "mlops"
    tenants: tuple[str, ...]


_MODERATE_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": ModerateRequest.model_json_schema(
            ref_template="#/components/schemas/{model}")}},
    },
}


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0.5})
@serve.ingress(api)
class Ingress:
    def __init__(
        self, scorer: DeploymentHandle, database_url: str, limits: dict[str, Any],
        keys_file: str | None = None,
    ) -> None:
        self.scorer = scorer
        self.keys_file = keys_file
        self.limits = Limits.model_validate(limits)
        # the event log, the review queue and its labels: one database (Settings.database_url)
        self.writer = EventWriter(EventLog(database_url))
        self.review: ReviewService | None = ReviewService(
            ReviewQueue(database_url), self._current_policy, thresholds=self._block_thresholds)
        self.intake: IntakeWriter | None = IntakeWriter(self.review)
        self._policy: _PolicyState | None = None
        self._resolved: dict[tuple[str, float], dict[str, ResolvedTenant]] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self.started_at = time.time()

    # -- configuration --------------------------------------------------------------------
    def reconfigure(self, config: dict[str, Any]) -> None:
        """``user_config``: ``{"policy": <policy file as data>, "key_hashes": {tenant: sha256}}``.

        Without ``key_hashes``, keys are read from ``keys_file`` (a mounted Secret)."""
        policy = parse_policy(config["policy"], "user_config.policy")
        hashes = config.get("key_hashes")
        if hashes is None:
            if not self.keys_file:
                raise ValueError("user_config has no key_hashes and no keys_file is set")
            from pathlib import Path

            from bastion.core.keys import key_hashes, load_keys

            hashes = key_hashes(load_keys(Path(self.keys_file)))
        state = _PolicyState(policy, {h: t for t, h in hashes.items()}, time.time(),
                             dict(config.get("reviewer_hashes") or {}))
        self._policy = state  # one assignment: requests see the old or the new state, whole
        log.info("Ingress policy loaded: %d tenant(s)", len(policy.tenants))

    def _current_policy(self) -> PolicySet:
        if self._policy is None:
            raise ReviewError("no policy loaded yet; retry shortly")
        return self._policy.policy

    def _block_thresholds(self, tenant: str) -> dict[str, float]:
        """The block thresholds serving uses now (the newest resolved model version)."""
        for resolved in reversed(list(self._resolved.values())):
            if tenant in resolved:
                return {c.name: c.flag_threshold for c in resolved[tenant].categories
                        if c.flag_threshold is not None}
        return {}

    async def _resolved_for(self, version: str) -> dict[str, ResolvedTenant]:
        state = self._policy
        assert state is not None
        key = (version, state.loaded_at)
        if key not in self._resolved:
            if version not in self._meta:
                self._meta[version] = await self._metadata(version)
            meta = self._meta[version]
            # never raises: a category the model cannot serve as written runs review-only
            # or is left out, and /readyz and the decisions' reasons say so
            resolved = resolve_policy(state.policy, meta["head_keys"], meta)
            for problem in fit_problems(resolved):
                log.warning("Policy on model version %s: %s", version, problem)
            # Keep every version resolved under the current policy: mid-swap, batches on the
            # old and the new version alternate, and each would otherwise re-resolve.
            self._resolved = {k: v for k, v in self._resolved.items() if k[1] == key[1]}
            self._resolved[key] = resolved
        return self._resolved[key]

    async def _metadata(self, version: str) -> dict[str, Any]:
        # With several Scorer replicas mid-swap, the call may reach one that does not hold
        # this version yet (or any more): ask again, another replica answers.
        for attempt in range(8):
            try:
                return await self.scorer.metadata.remote(version)
            except Exception:  # noqa: BLE001 - surfaced below after the retries
                await asyncio.sleep(0.05 * (attempt + 1))
        raise ApiError(503, f"no Scorer replica holds model version {version}; retry shortly")

    # -- auth and input -------------------------------------------------------------------
    def _authenticate(self, request: Request, tenant: str) -> str:
        state = self._policy
        if state is None:
            raise ApiError(503, "no policy loaded yet; retry shortly")
        key = _bearer(request) or request.headers.get("x-api-key", "").strip()
        if not key:
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'")
        owner = _holder(state.key_to_tenant, key)
        if owner is None or owner != tenant:
            raise ApiError(401, f"the API key is not valid for tenant {tenant!r}")
        if tenant not in state.policy.tenants:
            raise ApiError(404, f"tenant {tenant!r} has no policy; add it to the policy file")
        return tenant

    async def _parse(self, request: Request) -> ModerateRequest:
        body = await request.body()
        lim = self.limits
        if len(body) > lim.max_body_bytes:
            raise ApiError(413, f"request body is {len(body)} bytes; the limit is "
                                f"{lim.max_body_bytes} (limits.max_body_bytes)")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ApiError(400, f"request body is not valid UTF-8 (byte {err.start}: "
                                f"{err.reason}); encode the JSON as UTF-8") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ApiError(400, f"request body is not valid JSON: {err.msg} at line "
                                f"{err.lineno} column {err.colno}") from None
        try:
            req = ModerateRequest.model_validate(data)
        except ValidationError as err:
            raise ApiError(422, "invalid request", details=_validation_messages(err)) from None
        if len(req.items) > lim.max_items:
            raise ApiError(413, f"{len(req.items)} items in one request; the limit is "
                                f"{lim.max_items} (limits.max_items): split the batch")
        problems = []
        seen: set[str] = set()
        for i, item in enumerate(req.items):
            if len(item.text) > lim.max_text_chars:
                problems.append(f"items.{i}.text: {len(item.text)} characters; the limit is "
                                f"{lim.max_text_chars} (limits.max_text_chars)")
            if not item.text.strip():
                problems.append(f"items.{i}.text: only whitespace; send some text")
            try:
                item.text.encode("utf-8")
            except UnicodeEncodeError:
                problems.append(f"items.{i}.text: contains invalid Unicode (a lone surrogate)")
            ids = [item.id, item.context.session_id or "", item.context.user_id or ""]
            if any(len(x) > lim.max_id_chars for x in ids):
                problems.append(f"items.{i}: an id is longer than {lim.max_id_chars} characters")
            if item.id in seen:
                problems.append(f"items.{i}.id: {item.id!r} appears twice in this request")
            seen.add(item.id)
        if problems:
            raise ApiError(422, "invalid request", details=problems)
        return req

    # -- endpoints ------------------------------------------------------------------------
    @api.post("/v1/moderate", response_model=ModerateResponse, openapi_extra=_MODERATE_SCHEMA,
              summary="Score items against a tenant's policy and decide.")
    async def moderate(self, request: Request) -> dict[str, Any]:
        req = await self._parse(request)
        tenant = self._authenticate(request, req.tenant)
        texts = [it.text for it in req.items]
        step = 64
        chunks = await asyncio.gather(*[
            self.scorer.score.remote(texts[i:i + step]) for i in range(0, len(texts), step)
        ])
        request_id = uuid.uuid4().hex
        results, events = [], []
        review_items: list[ReviewItem] = []
        now = time.time()
        for chunk_index, res in enumerate(chunks):
            resolved = await self._resolved_for(res.model_version)
            rt = resolved[tenant]
            if req.categories is not None:
                known = {c.name for c in rt.categories}
                unknown = sorted(set(req.categories) - known)
                if unknown:
                    raise ApiError(422, f"unknown categories {unknown} for tenant {tenant!r}; "
                                        f"it enforces {sorted(known)}")
            for j in range(len(res.scores)):
                item = req.items[chunk_index * step + j]
                d = decide(rt, item.text, res.scores[j], req.categories)
                results.append({"id": item.id, **d, "model_version": res.model_version,
                                "policy_version": rt.version})
                in_review = d["decision"] == "review"
                if self.intake is not None and (in_review or item.context.session_id):
                    # a session's other items join its review task as context (if it has one)
                    review_items.append(ReviewItem(
                        tenant=tenant, item_id=item.id, text=item.text,
                        text_sha256=text_digest(item.text), session_id=item.context.session_id,
                        user_id=item.context.user_id,
                        source="decision" if in_review else "context", scores=d["scores"],
                        keyword_hits=[str(h.get("rule") or h.get("category") or "")
                                      for h in d["keyword_hits"]],
                        decision=d["decision"], model_version=res.model_version,
                        policy_version=rt.version, ts=now))
                events.append(DecisionEvent(
                    ts=now, request_id=request_id, tenant=tenant, item_id=item.id,
                    session_id=item.context.session_id, user_id=item.context.user_id,
                    text=item.text if rt.store_raw_text else None,
                    text_sha256=text_digest(item.text), text_len=len(item.text),
                    decision=d["decision"], scores=d["scores"], reasons=d["reasons"],
                    model_version=res.model_version, policy_version=rt.version,
                    embedding=res.embeddings[j],
                ))
        self.writer.submit(events)
        if self.intake is not None:
            self.intake.submit(review_items)
        return {"request_id": request_id, "tenant": tenant,
                "model_version": results[0]["model_version"],
                "policy_version": results[0]["policy_version"], "results": results}

    # -- human review: intake ---------------------------------------------------------------
    def _review(self) -> ReviewService:
        if self.review is None:
            raise ApiError(503, "human review is not enabled on this deployment")
        return self.review

    async def _body(self, request: Request, model: Any) -> Any:
        body = await request.body()
        if len(body) > self.limits.max_body_bytes:
            raise ApiError(413, f"request body is {len(body)} bytes; the limit is "
                                f"{self.limits.max_body_bytes} (limits.max_body_bytes)")
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ApiError(400, f"request body is not valid UTF-8 JSON: {err}") from None
        try:
            return model.model_validate(data)
        except ValidationError as err:
            raise ApiError(422, "invalid request", details=_validation_messages(err)) from None

    @api.post("/v1/reports", status_code=202, summary="A user reports another user or an item.")
    async def report(self, request: Request) -> dict[str, Any]:
        req = await self._body(request, ReportRequest)
        tenant = self._authenticate(request, req.tenant)
        if not (req.reported_user or req.reported_item or req.session_id):
            raise ApiError(422, "a report names reported_user, reported_item or session_id")
        ts = req.ts or time.time()
        rid = req.report_id or hashlib.sha256(json.dumps(
            [req.reporter, req.reported_user, req.reported_item, req.session_id, req.reason,
             req.text, ts]).encode()).hexdigest()[:24]
        report = Report(tenant=tenant, report_id=rid, reporter=req.reporter,
                        reported_user=req.reported_user, reported_item=req.reported_item,
                        session_id=req.session_id, reason=req.reason, text=req.text, ts=ts)
        try:
            task_id = await asyncio.to_thread(self._review().report, report)
        except ReviewError as err:
            raise ApiError(422, str(err)) from None
        return {"report_id": rid, "task_id": task_id}

    @api.post("/v1/events", status_code=202,
              summary="Session events (mute, leave, block, ...) that may call for review.")
    async def events(self, request: Request) -> dict[str, Any]:
        req = await self._body(request, EventsRequest)
        tenant = self._authenticate(request, req.tenant)
        out = []
        for e in req.events:
            ts = e.ts or time.time()
            eid = e.event_id or hashlib.sha256(json.dumps(
                [e.session_id, e.user_id, e.kind, e.target_user, ts]).encode()).hexdigest()[:24]
            ev = ReviewEvent(tenant=tenant, event_id=eid, session_id=e.session_id,
                             user_id=e.user_id, kind=e.kind, target_user=e.target_user, ts=ts)
            try:
                out.append({"event_id": eid,
                            "task_id": await asyncio.to_thread(self._review().event, ev)})
            except ReviewError as err:
                raise ApiError(422, str(err)) from None
        return {"accepted": out}

    # -- human review: moderators ------------------------------------------------------------
    def _reviewer(self, request: Request, roles: tuple[str, ...] = ("moderator", "mlops")
                  ) -> Reviewer:
        state = self._policy
        if state is None:
            raise ApiError(503, "no policy loaded yet; retry shortly")
        key = _bearer(request)
        if not key:
            raise ApiError(401, "missing reviewer key: send 'Authorization: Bearer <key>' "
                                "(issue one with 'bastion review keys add')")
        found = _holder(state.reviewers, key)
        if found is None:
            raise ApiError(401, "the key is not a reviewer key")
        if found["role"] not in roles:
            raise ApiError(403, f"reviewer {found['name']!r} has role {found['role']!r}; "
                                f"this needs {' or '.join(roles)}")
        return Reviewer(str(found["name"]), str(found["role"]), tuple(found["tenants"]))

    @api.post("/v1/review/claim", summary="Lease the most urgent task in your tenants.")
    async def review_claim(self, request: Request) -> JSONResponse:
        who = self._reviewer(request)
        got = await asyncio.to_thread(self._review().claim, who.name, who.tenants)
        if got is None:
            return JSONResponse({"claim": None, "message": "nothing to review"}, 200)
        claim, task = got
        return JSONResponse({"claim": {"token": claim.token, "task_id": claim.task_id,
                                       "slot": claim.slot, "leased_until": claim.leased_until},
                             "task": task_view(task, show_gold=who.role == "mlops")})

    @api.post("/v1/review/submit", summary="Submit labels for a claimed task (idempotent).")
    async def review_submit(self, request: Request) -> dict[str, Any]:
        who = self._reviewer(request)
        req = await self._body(request, SubmitRequest)
        labels = [LabelIn(x.item_id, x.category, x.value, x.confidence) for x in req.labels]
        try:
            owner = await asyncio.to_thread(self._review().queue.claim_of, req.token)
            if owner.moderator != who.name:
                raise ApiError(403, "that claim belongs to another reviewer")
            sub = await asyncio.to_thread(self._review().submit, req.token, req.submission_id,
                                          labels)
        except LeaseLost as err:
            raise ApiError(409, str(err)) from None
        except NotFound as err:
            raise ApiError(404, str(err)) from None
        except ReviewError as err:
            raise ApiError(422, str(err)) from None
        return {"submission_id": sub.submission_id, "task_id": sub.task_id,
                "duplicate": sub.duplicate, "labels": len(sub.labels)}

    @api.post("/v1/review/release", summary="Give a claimed task back to the queue.")
    async def review_release(self, request: Request) -> dict[str, Any]:
        who = self._reviewer(request)
        req = await self._body(request, ClaimToken)
        try:
            owner = await asyncio.to_thread(self._review().queue.claim_of, req.token)
            if owner.moderator != who.name:
                raise ApiError(403, "that claim belongs to another reviewer")
            await asyncio.to_thread(self._review().queue.release, req.token)
        except (LeaseLost, NotFound) as err:
            raise ApiError(409, str(err)) from None
        return {"released": True}

    @api.get("/v1/review/tasks/{task_id}", summary="One task, within your tenants.")
    async def review_task(self, task_id: str, request: Request) -> dict[str, Any]:
        who = self._reviewer(request)
        try:
            task = await asyncio.to_thread(self._review().queue.task, task_id, who.tenants)
        except NotFound as err:
            raise ApiError(404, str(err)) from None
        return task_view(task, show_gold=who.role == "mlops")

    @api.get("/v1/review/queue", summary="Open tasks in your tenants, most urgent first.")
    async def review_queue(self, request: Request, limit: int = 50) -> dict[str, Any]:
        who = self._reviewer(request)
        tasks = await asyncio.to_thread(self._review().queue.pending, who.tenants,
                                        max(1, min(limit, 500)))
        return {"tasks": [{"task_id": t.task_id, "tenant": t.tenant, "priority": t.priority,
                           "reasons": t.reasons, "slots": t.slots, "slots_done": t.slots_done,
                           "items": len(t.items), "reports": len(t.reports),
                           "events": len(t.events)} for t in tasks]}

    @api.get("/healthz", summary="Liveness: the ingress answers.")
    async def healthz(self) -> dict[str, Any]:
        return {"status": "ok"}

    @api.get("/readyz", summary="Readiness: a model and a policy are loaded, with details.")
    async def readyz(self) -> JSONResponse:
        ctx = serve.get_replica_context()
        details: dict[str, Any] = {
            "ingress": {"replica_id": ctx.replica_id.unique_id, "pid": os.getpid(),
                        "started_at": self.started_at,
                        "policy_loaded_at": self._policy.loaded_at if self._policy else None,
                        "tenants": len(self._policy.policy.tenants) if self._policy else 0,
                        "event_write_retries": self.writer.errors},
        }
        ready = self._policy is not None
        try:
            details["scorer"] = await asyncio.wait_for(self.scorer.status.remote(), timeout=5)
            ready = ready and details["scorer"]["model_version"] is not None
        except Exception as err:  # noqa: BLE001 - readiness reports any failure, never raises
            details["scorer"] = {"error": str(err)}
            ready = False
        version = details["scorer"].get("model_version") if ready else None
        if version is not None:
            try:  # what of each tenant's policy this model cannot do as written
                resolved = await self._resolved_for(str(version))
                details["policy_fit"] = {t: r.problems() for t, r in resolved.items()
                                         if r.problems()}
            except Exception as err:  # noqa: BLE001 - reported, never raised
                details["policy_fit"] = {"error": str(err)}
        return JSONResponse({"ready": ready, **details}, status_code=200 if ready else 503)

    def __del__(self) -> None:
        # Serve calls __del__ on graceful shutdown: flush every accepted decision to disk.
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.close()
        intake = getattr(self, "intake", None)
        if intake is not None:
            intake.close()
