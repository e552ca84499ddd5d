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

from core.decision import ResolvedTenant, decide, resolve_policy
from core.errors import PolicyError
from core.events import DecisionEvent, EventLog, EventWriter, text_digest
from core.policy import PolicySet, parse_policy
from core.settings import Limits
from serving.schemas import ModerateRequest, ModerateResponse

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
        self, scorer: DeploymentHandle, events_db: str, limits: dict[str, Any],
        keys_file: str | None = None,
    ) -> None:
        self.scorer = scorer
        self.keys_file = keys_file
        self.limits = Limits.model_validate(limits)
        self.writer = EventWriter(EventLog(events_db))
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

            from core.keys import key_hashes, load_keys

            hashes = key_hashes(load_keys(Path(self.keys_file)))
        state = _PolicyState(policy, {h: t for t, h in hashes.items()}, time.time())
        self._policy = state  # one assignment: requests see the old or the new state, whole
        log.info("Ingress policy loaded: %d tenant(s)", len(policy.tenants))

    async def _resolved_for(self, version: str) -> dict[str, ResolvedTenant]:
        state = self._policy
        assert state is not None
        key = (version, state.loaded_at)
        if key not in self._resolved:
            if version not in self._meta:
                self._meta[version] = await self._metadata(version)
            meta = self._meta[version]
            try:
                resolved = resolve_policy(state.policy, meta["head_keys"], meta)
            except PolicyError as err:
                raise ApiError(
                    503, f"the policy does not fit model version {version}: {err}"
                ) from None
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
        auth = request.headers.get("authorization", "")
        key = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        key = key or request.headers.get("x-api-key", "").strip()
        if not key:
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'")
        owner = None
        digest = key_hash(key)
        for h, t in state.key_to_tenant.items():
            if hmac.compare_digest(h, digest):
                owner = t
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
        return {"request_id": request_id, "tenant": tenant,
                "model_version": results[0]["model_version"],
                "policy_version": results[0]["policy_version"], "results": results}

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
        return JSONResponse({"ready": ready, **details}, status_code=200 if ready else 503)

    def __del__(self) -> None:
        # Serve calls __del__ on graceful shutdown: flush every accepted decision to disk.
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.close()
