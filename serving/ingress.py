"""The Ingress deployment: the replica state behind the API (policy, tenant and reviewer key
hashes, the policy resolved per model version), the Scorer calls and the writers of the event
log and the review queue.

Policies and key hashes arrive through ``user_config``; ``reconfigure`` swaps them atomically,
so a policy edit never restarts a replica. The HTTP side is ``serving.api``, built for each
replica from its limits (``__serve_build_asgi_app__``, after the constructor).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from ray import serve
from ray.serve.handle import DeploymentHandle

from bastion.core.cascade import cascade_refused
from bastion.core.decision import (
    ResolvedTenant,
    decide,
    fit_problems,
    flag_thresholds,
    resolve_policy,
)
from bastion.core.events import DecisionEvent, EventLog, EventWriter
from bastion.core.http import ApiError, invalid
from bastion.core.keys import key_hashes, load_keys
from bastion.core.language import detect_language, routed_elsewhere
from bastion.core.media import MediaError, decode_base64
from bastion.core.model import ModelMetadata
from bastion.core.policy import PolicySet, parse_policy
from bastion.core.settings import Limits, load_settings
from bastion.core.shadow_events import (
    ShadowConfig,
    ShadowEvent,
    ShadowLog,
    ShadowWriter,
    bands_of,
)
from bastion.core.textkey import text_key
from bastion.registry.aliases import MULTILINGUAL, SHADOW
from bastion.review.queue import ReviewQueue
from bastion.review.records import ReviewError
from bastion.review.service import IntakeWriter, ReviewService
from bastion.serving.api import build_api
from bastion.serving.auth import authenticate_tenant
from bastion.serving.decisions import Scored, assemble, media_text
from bastion.serving.fairuse import FairUseLimiter
from bastion.serving.resilience import record, retrying, store_health
from bastion.serving.schemas import ModerateRequest
from bastion.serving.scorer import ScoreResult

__all__ = ["Ingress"]


log = logging.getLogger("ray.serve")

DEFAULT_ROUTE = "default"  # the @champion Scorer; the other route is aliases.MULTILINGUAL

# Items per Scorer call: a request's chunks run concurrently, and the chunks of concurrent
# requests are coalesced into calls of up to this many items (``Ingress._score``).
_CHUNK = 64
# Shadow scoring calls in flight per Ingress replica: past it, sampled items are skipped (and
# counted), so a slow challenger never backs up the champion's requests.
_SHADOW_INFLIGHT = 16
_SHADOW_SILENT_S = 30.0  # a shadow Scorer this long silent: no shadow run (above)


@dataclass(frozen=True)
class _PolicyState:
    policy: PolicySet
    key_to_tenant: dict[str, str]  # sha256(key) -> tenant
    loaded_at: float
    reviewers: dict[str, dict[str, Any]]  # sha256(key) -> {"name", "role", "tenants"}


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0.5})
@serve.ingress()
class Ingress:
    def __init__(
        self, scorer: DeploymentHandle, database_url: str, limits: dict[str, Any],
        keys_file: str | None = None, state_dir: str | None = None,
        review_intake: bool = True, tracking_uri: str | None = None,
        model_name: str | None = None, images: DeploymentHandle | None = None,
        voice: DeploymentHandle | None = None, multilingual: DeploymentHandle | None = None,
        multilingual_languages: list[str] | None = None,
        shadow: DeploymentHandle | None = None,
    ) -> None:
        self.scorer = scorer
        # the Scorer of @multilingual, and the languages routed to it (None: all but English)
        self.multilingual = multilingual
        self.multilingual_languages = (None if multilingual_languages is None
                                       else frozenset(multilingual_languages))
        self._multilingual_ready = (0.0, False)  # (checked at, holds a version)
        self.images = images  # serving.media's deployments; None where not deployed
        # The challenger of a shadow run (registry.shadow): its Scorer, the run's settings as
        # that Scorer last reported them, and what became of the items sampled for it.
        self.shadow = shadow
        self._shadow_run: ShadowConfig | None = None
        self._shadow_refresh: asyncio.Task[None] | None = None
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self.shadow_counts = {"scored": 0, "skipped": 0, "failed": 0, "canary_requests": 0}
        self.voice = voice
        self._last_version: str | None = None
        self.keys_file = keys_file
        self.limits = Limits.model_validate(limits)
        # the registry the Scorer serves from (the console's Models screen reads it)
        self.settings = load_settings(state_dir, mlflow_tracking_uri=tracking_uri,
                                      model_name=model_name)
        self.text_key = text_key(self.settings)  # keyed text digests (core.textkey)
        # the event log, the review queue and its labels: one database (Settings.database_url)
        self.writer = EventWriter(EventLog(database_url))
        self.review: ReviewService | None = ReviewService(
            ReviewQueue(database_url), self._current_policy, thresholds=self._block_thresholds,
            text_key=self.text_key)
        self.intake: IntakeWriter | None = IntakeWriter(self.review) if review_intake else None
        self.shadow_writer = None if shadow is None else ShadowWriter(ShadowLog(database_url))
        self._policy: _PolicyState | None = None
        self._resolved: dict[tuple[str, float], dict[str, ResolvedTenant]] = {}
        self._meta: dict[str, ModelMetadata] = {}
        self.started_at = time.time()
        self.fair_use = FairUseLimiter()  # per-tenant rate and in-flight limits (429)

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Serve asks for the replica's ASGI app once the constructor has run."""
        return build_api(self)

    # -- configuration --------------------------------------------------------------------
    def reconfigure(self, config: dict[str, Any]) -> None:
        """``user_config``: ``{"policy": <policy file as data>, "key_hashes": {tenant: sha256}}``.

        Without ``key_hashes``, keys are read from ``keys_file`` (a mounted Secret)."""
        policy = parse_policy(config["policy"], "user_config.policy")
        hashes = config.get("key_hashes")
        if hashes is None:
            if not self.keys_file:
                raise ValueError("user_config has no key_hashes and no keys_file is set")
            hashes = key_hashes(load_keys(Path(self.keys_file)))
        state = _PolicyState(policy, {h: t for t, h in hashes.items()}, time.time(),
                             dict(config.get("reviewer_hashes") or {}))
        if config.get("policy_file"):  # bastion up --policy FILE: what the console's jobs use
            self.settings = self.settings.model_copy(
                update={"policy_file": Path(config["policy_file"])})
        self.fair_use.configure(policy, int(config.get("ingress_replicas", 1)))
        self._policy = state  # one assignment: requests see the old or the new state, whole
        log.info("Ingress policy loaded: %d tenant(s)", len(policy.tenants))

    def _current_policy(self) -> PolicySet:
        if self._policy is None:
            raise ReviewError("no policy loaded yet; retry shortly")
        return self._policy.policy

    def _loaded(self) -> _PolicyState:
        state = self._policy
        if state is None:
            raise ApiError(503, "no policy loaded yet; retry shortly")
        return state

    def _block_thresholds(self, tenant: str) -> dict[str, float]:
        """The block thresholds serving uses now: @champion's (the last version it served),
        else the newest resolved model version's."""
        state = self._policy
        mine = None if state is None else self._resolved.get((self._last_version or "",
                                                               state.loaded_at))
        if mine is not None and tenant in mine:
            return flag_thresholds(mine, tenant)
        for resolved in reversed(list(self._resolved.values())):
            if tenant in resolved:
                return flag_thresholds(resolved, tenant)
        return {}

    async def _resolved_for(self, version: str) -> dict[str, ResolvedTenant]:
        state = self._loaded()
        key = (version, state.loaded_at)
        if key not in self._resolved:
            if version not in self._meta:
                self._meta[version] = await self._metadata(version)
            meta = self._meta[version]
            # never raises: a category the model cannot serve as written runs review-only
            # or is left out, and /readyz and the decisions' reasons say so
            resolved = resolve_policy(state.policy, meta["heads"]["keys"], meta)
            for problem in fit_problems(resolved):
                log.warning("Policy on model version %s: %s", version, problem)
            # Keep every version resolved under the current policy: mid-swap, batches on the
            # old and the new version alternate, and each would otherwise re-resolve.
            self._resolved = {k: v for k, v in self._resolved.items() if k[1] == key[1]}
            self._resolved[key] = resolved
        return self._resolved[key]

    async def _metadata(self, version: str) -> ModelMetadata:
        # With several Scorer replicas mid-swap, the call may reach one that does not hold
        # this version yet (or any more): ask again, another replica answers.
        handles = [h for h in (self.scorer, self.multilingual, self.shadow) if h is not None]
        for attempt in range(8):
            for handle in handles:  # the version may be the multilingual Scorer's
                try:
                    return await handle.metadata.remote(version)
                except Exception:  # noqa: BLE001 - surfaced below after the retries
                    continue
            await asyncio.sleep(0.05 * (attempt + 1))
        raise ApiError(503, f"no Scorer replica holds model version {version}; retry shortly")

    # -- what serving.api and bastion.review.routes call --------------------------------------
    def authenticate(self, request: Request, tenant: str) -> str:
        state = self._loaded()
        return authenticate_tenant(request, tenant, state.key_to_tenant, state.policy.tenants)

    def reviewer_hashes(self) -> Mapping[str, Mapping[str, Any]]:
        return self._loaded().reviewers

    def review_service(self) -> ReviewService:
        if self.review is None:
            raise ApiError(503, "human review is not enabled on this deployment")
        return self.review

    async def moderate(self, req: ModerateRequest, request: Request) -> dict[str, Any]:
        tenant = self.authenticate(request, req.tenant)
        with self.fair_use.admit(tenant, len(req.items)):  # 429 past the tenant's limits
            return await self._moderate(tenant, req, request)

    async def _moderate(self, tenant: str, req: ModerateRequest, request: Request,
                        cascade: bool | None = None) -> dict[str, Any]:
        media = await self._read_media(tenant, req)  # 422 for media it cannot take
        # What the text path scores: each item's text, or the text its image shows or its
        # clip says, and a clip's transcript segments (the span a reason rests on).
        texts: list[str] = []
        main: list[int | None] = []
        segs: list[list[int]] = []
        for item, facts in zip(req.items, media, strict=True):
            text = item.text if item.text is not None else media_text(facts)
            main.append(len(texts) if text else None)
            if text:
                texts.append(text)
            seg_texts = [str(g[2]) for g in (facts or {}).get("segments") or []]
            segs.append(list(range(len(texts), len(texts) + len(seg_texts))))
            texts.extend(seg_texts)
        if cascade is None:  # the cascade: see _cascade_wanted
            cascade = self._cascade_wanted(tenant)
        # Each item's language, once (its result's, and its route's): a clip's segments go
        # where its transcript goes. Route by language: texts in a language routed to
        # @multilingual (when its Scorer holds a version) go there, the rest to @champion;
        # each route chunked and batched.
        item_languages = [None if m is None else detect_language(texts[m]) for m in main]
        text_languages: list[str | None] = [None] * len(texts)
        for k, m in enumerate(main):
            for j in ([] if m is None else [m]) + segs[k]:
                text_languages[j] = item_languages[k]
        routes = await self._routes(text_languages)
        # A shadow run: a canary decides this request where it is the canary tenant's and
        # drawn (the @champion route only); else some of its texts are shadowed, below.
        run = self._shadow_settings()
        canary = (run is not None and run.canary_active and run.canary_tenant == tenant
                  and random.random() < float(run.canary or 0))
        if canary:
            self.shadow_counts["canary_requests"] += 1
            routes = [SHADOW if r == DEFAULT_ROUTE else r for r in routes]
        parts: list[tuple[list[int], str]] = []
        for route in (DEFAULT_ROUTE, MULTILINGUAL, SHADOW):
            idx = [i for i, r in enumerate(routes) if r == route]
            parts += [(idx[i:i + _CHUNK], route) for i in range(0, len(idx), _CHUNK)]
        t_score = time.perf_counter()
        chunks = await asyncio.gather(*[
            self._score([texts[i] for i in idx], cascade and route == DEFAULT_ROUTE, route)
            for idx, route in parts])
        champion_ms = (time.perf_counter() - t_score) * 1000
        scored = [(res, (await self._resolved_for(res.model_version))[tenant]) for res in chunks]
        if cascade and any(cascade_refused(res.stages, rt.cascade_off) for res, rt in scored):
            return await self._moderate(tenant, req, request, cascade=False)
        rows: list[Any] = [None] * len(texts)
        for (idx, _), (res, rt) in zip(parts, scored, strict=True):
            for j, i in enumerate(idx):
                rows[i] = (res.model_version, rt, res.embeddings[j], res.scores[j],
                           None if res.stages is None else int(res.stages[j]))
        for (idx, route), res in zip(parts, chunks, strict=True):
            if route == DEFAULT_ROUTE and idx:  # @champion's, never a canary's
                self._last_version = res.model_version
                break
        no_text = None if all(m is not None for m in main) else \
            await self._version_without_text(tenant)
        items: list[Scored] = []
        for k, facts in enumerate(media):
            seg_rows = [rows[j][3] for j in segs[k]]
            common: dict[str, Any] = dict(
                media=facts, media_bytes=None if facts is None else facts.get("raw"),
                segment_scores=np.stack(seg_rows) if seg_rows else None)
            m = main[k]
            if m is None:  # nothing to score: an image without text, a clip without speech
                assert no_text is not None
                items.append(Scored(no_text[0], no_text[1], None, None, **common))
            else:
                version, rt, emb, row, stage = rows[m]
                items.append(Scored(version, rt, row, emb, stage, **common))
        tpol = self._loaded().policy.tenants[tenant]
        out = assemble(req, tenant, items, tpol.media, request_id=uuid.uuid4().hex,
                       now=time.time(), review=self.intake is not None, text_key=self.text_key,
                       languages=item_languages)
        await record(self.writer, self.intake, out.events, out.review_items)  # or 503: nothing lost
        if run is not None and not canary:
            self._shadow_sample(tenant, run, out.events, [
                None if m is None or routes[m] != DEFAULT_ROUTE or it.modality != "text"
                else texts[m] for m, it in zip(main, req.items, strict=True)], champion_ms)
        return out.response

    # -- shadow runs ----------------------------------------------------------------------
    def _shadow_settings(self) -> ShadowConfig | None:
        """The shadow run in force, as the shadow Scorer last reported it (a background task
        asks it every 2 s: the request path never waits on it); None: no run."""
        if self.shadow is None:
            return None
        if self._shadow_refresh is None or self._shadow_refresh.done():
            self._shadow_refresh = asyncio.get_running_loop().create_task(
                self._watch_shadow())
        return self._shadow_run

    async def _watch_shadow(self) -> None:
        """Every 2 s, the shadow run the shadow Scorer reports. A Scorer busy encoding answers
        late (it encodes on its event loop), so one that does not answer keeps the last run
        it reported for ``_SHADOW_SILENT_S``: dropping the run at once left items of a busy
        second unshadowed. After that, no run until it answers again."""
        assert self.shadow is not None
        answered = time.monotonic()
        while True:
            try:
                status = await asyncio.wait_for(self.shadow.status.remote(), timeout=5)
                run, held = status.get("shadow"), status.get("model_version")
                self._shadow_run = ShadowConfig.from_json(run) \
                    if run is not None and run.get("version") == held else None
                answered = time.monotonic()
            except Exception as err:  # noqa: BLE001 - see above
                silent = time.monotonic() - answered
                log.warning("Ingress: the shadow Scorer has not answered for %.0f s: %s",
                            silent, err)
                if silent > _SHADOW_SILENT_S:
                    self._shadow_run = None
            await asyncio.sleep(2.0)

    def _shadow_sample(self, tenant: str, run: ShadowConfig, decided: list[DecisionEvent],
                       texts: list[str | None], champion_ms: float) -> None:
        """Draw ``run.sample`` of the request's champion-scored texts and score them on the
        challenger off the request path (``_shadow_score``)."""
        picked = [(e, t) for e, t in zip(decided, texts, strict=True)
                  if t and random.random() < run.sample]
        if not picked:
            return
        assert self.shadow_writer is not None
        if len(self._shadow_tasks) >= _SHADOW_INFLIGHT or not self.shadow_writer.room(
                len(picked)):
            self.shadow_counts["skipped"] += len(picked)
            return
        task = asyncio.get_running_loop().create_task(
            self._shadow_score(tenant, picked, champion_ms))
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow_score(self, tenant: str, picked: list[tuple[DecisionEvent, str]],
                            champion_ms: float) -> None:
        """The challenger's verdicts on ``picked``, written to the shadow log; a failure is
        logged and counted, never seen by a caller."""
        assert self.shadow is not None and self.shadow_writer is not None
        try:
            t0 = time.perf_counter()
            res: ScoreResult = await self.shadow.score.remote([t for _, t in picked], False)
            shadow_ms = (time.perf_counter() - t0) * 1000
            rt = (await self._resolved_for(res.model_version))[tenant]
            rows = []
            for j, (e, text) in enumerate(picked):
                d = decide(rt, text, res.scores[j])
                rows.append(ShadowEvent(
                    ts=e.ts, request_id=e.request_id, tenant=tenant, item_id=e.item_id,
                    text=e.text, text_sha256=e.text_sha256, language=e.language,
                    version=res.model_version, decision=d["decision"], scores=d["scores"],
                    bands=bands_of(d["reasons"]), champion_version=e.model_version,
                    champion_decision=e.decision, champion_scores=e.scores,
                    champion_bands=bands_of(e.reasons), champion_ms=round(champion_ms, 3),
                    shadow_ms=round(shadow_ms, 3)))
            self.shadow_writer.submit(rows)
            self.shadow_counts["scored"] += len(rows)
        except Exception as err:  # noqa: BLE001 - the shadow never fails a request
            self.shadow_counts["failed"] += len(picked)
            log.warning("Ingress: shadow scoring of %d item(s) failed: %s", len(picked), err)

    async def _routes(self, languages: list[str | None]) -> list[str]:
        """Each text's Scorer, by its language: ``multilingual`` for a language routed there,
        while the multilingual Scorer holds a version (checked at most every 5 s); else
        default."""
        if self.multilingual is None or not languages:
            return [DEFAULT_ROUTE] * len(languages)
        checked, ready = self._multilingual_ready
        if time.time() - checked > 5.0:
            try:
                status = await asyncio.wait_for(self.multilingual.status.remote(), timeout=5)
                ready = status.get("model_version") is not None
            except Exception as err:  # noqa: BLE001 - its languages go to @champion meanwhile
                log.warning("Ingress: the multilingual Scorer does not answer: %s", err)
                ready = False
            self._multilingual_ready = (time.time(), ready)
        if not ready:
            return [DEFAULT_ROUTE] * len(languages)
        return [MULTILINGUAL if routed_elsewhere(lang, self.multilingual_languages)
                else DEFAULT_ROUTE for lang in languages]

    async def _version_without_text(self, tenant: str) -> tuple[str, ResolvedTenant]:
        """The model version and resolved policy for items the text path did not score (an
        image without text): the last version served, else the Scorer's current one."""
        version = self._last_version
        if version is None:
            version = str((await self.scorer.status.remote())["model_version"])
            self._last_version = version
        tenants = await self._resolved_for(version)
        return version, tenants[tenant]

    async def _read_media(self, tenant: str, req: ModerateRequest) -> list[dict[str, Any] | None]:
        """What the media deployments read from each image and clip of ``req`` (None for a
        text); 422 naming every item whose media is refused or cannot be decoded."""
        if all(it.text is not None for it in req.items):
            return [None] * len(req.items)  # a text-only request never touches them
        tpol = self._loaded().policy.tenants[tenant].media
        problems: list[tuple[tuple[str | int, ...], str]] = []
        calls: list[tuple[int, Any]] = []
        raw: dict[int, bytes] = {}
        for i, item in enumerate(req.items):
            if item.text is not None:
                continue
            kind = item.modality
            field = f"{kind}_base64"
            handle = self.images if kind == "image" else self.voice
            enabled = tpol.image.enabled if kind == "image" else tpol.audio.enabled
            if handle is None:
                problems.append((("items", i, field), f"{kind} moderation is not served by "
                                 f"this deployment (serving.{kind}_replicas is 0)"))
                continue
            if not enabled:
                problems.append((("items", i, field), f"tenant {tenant!r} does not accept "
                                 f"{kind} items (media.{kind}.enabled in its policy)"))
                continue
            most = self.limits.max_image_bytes if kind == "image" else \
                self.limits.max_audio_bytes
            try:
                data = decode_base64(getattr(item, field), field, most,
                                     setting=f"limits.max_{kind}_bytes")
            except MediaError as err:
                problems.append((("items", i, field), str(err)))
                continue
            raw[i] = data
            calls.append((i, retrying(handle.analyze, (data, tpol.image.ocr),
                                      what="ImageModerator") if kind == "image"
                          else retrying(handle.analyze, data, what="VoiceModerator")))
        if problems:
            raise invalid(*problems)
        got = await asyncio.gather(*[c for _, c in calls])
        out: list[dict[str, Any] | None] = [None] * len(req.items)
        for (i, _), facts in zip(calls, got, strict=True):
            if "error" in facts:
                problems.append((("items", i, f"{req.items[i].modality}_base64"),
                                 str(facts["error"])))
            out[i] = {**facts, "raw": raw[i]}
        if problems:
            raise invalid(*problems)
        return out

    @serve.batch(max_batch_size=_CHUNK, batch_wait_timeout_s=0.002,
                 batch_size_fn=lambda calls: sum(len(c[0]) for c in calls),
                 max_concurrent_batches=2)
    async def _score_calls(self, calls: list[tuple[list[str], bool, str]]
                           ) -> list[ScoreResult]:
        """Concurrent requests' texts in one Scorer call (one per cascade setting and route).
        Each call costs both replicas a fixed ~1 ms (serialisation, the handle's routing, the
        Scorer's request handling): paid once per batch, not once per single-item request."""
        out: list[ScoreResult | None] = [None] * len(calls)
        for flag, route in {(c, r) for _, c, r in calls}:
            idx = [i for i, (_, c, r) in enumerate(calls) if (c, r) == (flag, route)]
            handle = {MULTILINGUAL: self.multilingual, SHADOW: self.shadow}.get(route,
                                                                                self.scorer)
            assert handle is not None
            texts = [t for i in idx for t in calls[i][0]]
            try:
                # a replica failure is retried once (serving.resilience), else every caller: 503
                whole: ScoreResult = await retrying(handle.score, texts, flag)
            except Exception as err:
                if route == DEFAULT_ROUTE:
                    raise
                # @multilingual (or the canary) went away since the last check, or its Scorer
                # is down: these texts are scored by @champion, and the route stays off until
                # checked again
                log.warning("Ingress: the %s Scorer failed (%s); scoring %d text(s) on "
                            "@champion", route, err, len(texts))
                if route == MULTILINGUAL:
                    self._multilingual_ready = (time.time(), False)
                else:
                    self._shadow_run = None
                whole = await retrying(self.scorer.score, texts, flag)
            for i, part in zip(idx, whole.split([len(calls[i][0]) for i in idx]), strict=True):
                out[i] = part
        return [r for r in out if r is not None]

    async def _score(self, texts: list[str], cascade: bool,
                     route: str = "default") -> ScoreResult:
        result: ScoreResult = await self._score_calls((texts, cascade, route))
        return result

    def _cascade_wanted(self, tenant: str) -> bool:
        """Whether to let the Scorer's first stage decide benign items for ``tenant``: its
        policy's ``cascade`` and, once resolved on a model version, that version's fit
        (``ResolvedTenant.cascade_off``; ``cascade_refused`` catches the first request)."""
        state = self._loaded()
        tpol = state.policy.tenants.get(tenant)
        if tpol is None or not tpol.cascade:
            return False
        for (_, loaded_at), resolved in reversed(list(self._resolved.items())):
            if loaded_at == state.loaded_at and tenant in resolved:  # this policy's only
                return resolved[tenant].cascade_off is None
        return True

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        ctx = serve.get_replica_context()
        details: dict[str, Any] = {
            "ingress": {"replica_id": ctx.replica_id.unique_id, "pid": os.getpid(),
                        "started_at": self.started_at,
                        "policy_loaded_at": self._policy.loaded_at if self._policy else None,
                        "tenants": len(self._policy.policy.tenants) if self._policy else 0,
                        "event_write_retries": self.writer.errors,
                        "shadow": {**self.shadow_counts, "in_flight": len(self._shadow_tasks),
                                   "run": None if self._shadow_run is None
                                   else self._shadow_run.to_json()}},
        }
        stores_ok, details["stores"] = store_health(self.writer, self.intake)
        ready = self._policy is not None and stores_ok
        try:
            details["scorer"] = await asyncio.wait_for(self.scorer.status.remote(), timeout=5)
            ready = ready and details["scorer"]["model_version"] is not None
        except Exception as err:  # noqa: BLE001 - readiness reports any failure, never raises
            details["scorer"] = {"error": str(err)}
            ready = False
        for name, handle in (("images", self.images), ("voice", self.voice),
                             ("multilingual", self.multilingual), ("shadow", self.shadow)):
            if handle is None:
                continue
            try:  # a media deployment down makes its items 503, never the text path unready
                details[name] = await asyncio.wait_for(handle.status.remote(), timeout=5)
            except Exception as err:  # noqa: BLE001 - reported, never raised
                details[name] = {"error": str(err)}
        version = details["scorer"].get("model_version") if ready else None
        if version is not None:
            try:  # what of each tenant's policy this model cannot do as written
                resolved = await self._resolved_for(str(version))
                details["policy_fit"] = {t: r.problems() for t, r in resolved.items()
                                         if r.problems()}
            except Exception as err:  # noqa: BLE001 - reported, never raised
                details["policy_fit"] = {"error": str(err)}
        return ready, details

    def __del__(self) -> None:
        # Serve calls __del__ on graceful shutdown: flush every accepted decision to disk.
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.close()
        for name in ("intake", "shadow_writer"):
            other = getattr(self, name, None)
            if other is not None:
                other.close()
