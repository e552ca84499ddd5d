"""The console's Models and Drift screens, for ML ops: the registry's versions with their gate
reports, the champion's history and the promotion audit trail, the drift monitor's reports with
their plots, the retraining triggers' record and the state of Bastion's Ray jobs.

Promote and rollback go through the same code as the CLI. **Promote** submits ``bastion promote
VERSION`` as a Ray job (:mod:`bastion.core.jobs`): the gate needs the held-out data of the
training snapshot and minutes of scoring, which belong in a job, not in a request, and the job
runs exactly the CLI's gate. The route answers 202 with the job's id; the Jobs list shows its
state, and the version's verdict and the audit trail show the outcome. **Rollback** moves
``@champion`` back at once (:meth:`bastion.registry.lifecycle.Lifecycle.rollback`; no gate,
as on the CLI). The console never forces a promotion: that stays a deliberate CLI act.

Only ML ops see these routes (403 for a moderator), and only an ML-ops key that covers every
tenant of the policy may promote or roll back: one model serves all tenants, so a change of
champion is everyone's. Drift reports are per tenant and filtered to the reviewer's tenants.
Every promote and rollback is written to the console's audit log as well as the registry's.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Path, Query, Request
from pydantic import BaseModel, Field

from bastion.core.errors import BastionError, ModelError, RegistryUnavailableError
from bastion.core.http import ApiError, error_responses
from bastion.core.jobs import active_jobs, job_rows, jobs_client, submit
from bastion.core.settings import Settings
from bastion.core.store.triggers import trigger_rows
from bastion.registry.browse import drift_report, drift_runs, gate_report, version_rows
from bastion.registry.lifecycle import Lifecycle
from bastion.registry.store import CHAMPION, ModelRegistry
from bastion.review.audit import AuditLog
from bastion.review.routes import Access, CurrentReviewer, Reviewer

__all__ = ["include_models", "router"]

router = APIRouter(tags=["console"])
_OPS = (401, 403, 503)
_VERSION = Path(..., pattern=r"^[0-9]{1,9}$", description="A model version number.")
_RUN = Path(..., pattern=r"^[0-9a-f]{32}$", description="An MLflow run id.")


class _State:
    """What the routes need beyond the review access: the settings of the registry (or what
    gives the current ones: the Ingress learns its policy file from its user_config), and a
    Ray Jobs client (a Serve replica finds its cluster's dashboard)."""

    def __init__(self, settings: Settings | Callable[[], Settings],
                 jobs: Callable[[], Any]) -> None:
        self._settings = settings
        self.jobs = jobs
        self._registry: ModelRegistry | None = None

    @property
    def settings(self) -> Settings:
        return self._settings if isinstance(self._settings, Settings) else self._settings()

    def registry(self) -> ModelRegistry:
        if self._registry is None:
            registry = ModelRegistry(self.settings)
            registry.ensure_reachable()
            self._registry = registry
        return self._registry


def include_models(app: FastAPI, settings: Settings | Callable[[], Settings],
                   jobs: Callable[[], Any] = jobs_client) -> None:
    """Serve the Models and Drift routes from ``app`` (which includes the console)."""
    app.state.console_models = _State(settings, jobs)
    app.include_router(router)


def _state(request: Request) -> _State:
    state: _State = request.app.state.console_models
    return state


def _ops(who: Reviewer) -> None:
    if who.role != "mlops":
        raise ApiError(403, f"{who.name} is a {who.role}; models and drift are for ML ops")


async def _call(fn: Callable[[], Any]) -> Any:
    """Run a registry call in a thread; MLflow's errors become clear statuses."""
    try:
        return await asyncio.to_thread(fn)
    except RegistryUnavailableError as err:
        raise ApiError(503, str(err)) from None
    except ModelError as err:
        raise ApiError(404, str(err)) from None


def _lifecycle(request: Request, access: Access) -> Lifecycle:
    state = _state(request)  # its registry: opened once, checked reachable (else 503)
    return Lifecycle(state.settings, access.review_service().policy(),
                     registry=state.registry())


@router.get("/v1/console/models",
            summary="Model versions with their gate verdicts, the champion's history and the "
                    "promotion audit trail (ML ops only).",
            responses=error_responses(*_OPS))
async def console_models(request: Request, who: CurrentReviewer,
                         access: Access) -> dict[str, Any]:
    _ops(who)

    def run() -> dict[str, Any]:
        lc = _lifecycle(request, access)
        versions = version_rows(lc.registry)
        champion = next((v["version"] for v in versions if CHAMPION in v["aliases"]), None)
        return {"model": lc.name, "champion": champion, "history": lc.history(),
                "versions": versions, "audit": list(reversed(lc.audit()))[:100],
                "can_change_champion": _covers_all(access, who),
                "tenants": sorted(set(access.review_service().policy().tenants)
                                  & set(who.tenants))}

    return await _call(run)  # type: ignore[no-any-return]


@router.get("/v1/console/models/{version}",
            summary="A version's latest gate report and why it was made (ML ops only).",
            responses=error_responses(*_OPS, 404, 422))
async def console_model(request: Request, who: CurrentReviewer,
                        version: str = _VERSION) -> dict[str, Any]:
    _ops(who)
    state = _state(request)
    return await _call(lambda: gate_report(state.registry(), version))  # type: ignore[no-any-return]


def _audit(access: Access, who: Reviewer, action: str, version: str, **detail: Any) -> None:
    """The console's audit log, beside the registry's trail (which the Lifecycle writes)."""
    AuditLog(access.review_service().queue.engine).record(who.name, who.role, action,
                                                          target=version, **detail)


def _covers_all(access: Access, who: Reviewer) -> bool:
    return set(access.review_service().policy().tenants) <= set(who.tenants)


class ChampionChange(BaseModel):
    reason: str = Field(..., min_length=3, max_length=500,
                        description="Why: kept in the audit trail.")


_SAFE_REASON = re.compile(r"[\x00-\x1f\x7f]")


def _may_change_champion(access: Access, who: Reviewer, req: ChampionChange) -> str:
    """403 unless ``who`` is ML ops for every tenant; the reason, on one line."""
    _ops(who)
    if not _covers_all(access, who):
        missing = sorted(set(access.review_service().policy().tenants) - set(who.tenants))
        raise ApiError(403, f"one model serves every tenant; {who.name}'s key does not cover "
                            f"{', '.join(missing)}: promote or roll back with an ML-ops key "
                            "for all tenants ('bastion review keys add NAME --role mlops')")
    return _SAFE_REASON.sub(" ", req.reason).strip()


@router.post("/v1/console/models/{version}/promote", status_code=202,
             summary="Gate VERSION against the champion in a Ray job (`bastion promote`) and "
                     "promote it if it passes (ML ops for every tenant).",
             responses=error_responses(*_OPS, 400, 404, 409, 413, 422))
async def console_promote(req: ChampionChange, request: Request, who: CurrentReviewer,
                          access: Access, version: str = _VERSION) -> dict[str, Any]:
    reason = _may_change_champion(access, who, req)
    state = _state(request)

    def run() -> dict[str, Any]:
        registry = state.registry()
        info = registry.get(version)  # 404 for an unknown version
        if CHAMPION in info.aliases:
            raise ApiError(409, f"version {version} is already @{CHAMPION}")
        client = state.jobs()
        running = active_jobs(client, "promote")
        if running:
            raise ApiError(409, f"promotion job {', '.join(running)} is still running; wait "
                                "for it (Jobs below) before starting another")
        job_id = submit(client, state.settings, "promote", "promote", version,
                        "--actor", who.name, "--reason", reason,
                        metadata={"version": version, "actor": who.name, "reason": reason})
        _audit(access, who, "promote", version, job_id=job_id, reason=reason)
        return {"job_id": job_id, "version": version,
                "message": f"the gate is running on version {version} in Ray job {job_id}; "
                           "it is promoted only if it passes"}

    return await _call(run)  # type: ignore[no-any-return]


@router.post("/v1/console/models/rollback",
             summary="Move @champion back to the champion before it (ML ops for every tenant).",
             responses=error_responses(*_OPS, 400, 409, 413, 422))
async def console_rollback(req: ChampionChange, request: Request, who: CurrentReviewer,
                           access: Access) -> dict[str, Any]:
    reason = _may_change_champion(access, who, req)

    def run() -> dict[str, Any]:
        lc = _lifecycle(request, access)
        try:
            old, new = lc.rollback(actor=who.name, reason=reason)
        except ModelError:
            raise
        except BastionError as err:
            raise ApiError(409, str(err)) from None
        _audit(access, who, "rollback", new, previous=old, reason=reason)
        return {"from": old, "to": new,
                "message": f"@{CHAMPION} moved from version {old} back to {new}; serving "
                           "follows within seconds"}

    return await _call(run)  # type: ignore[no-any-return]


# As training.category.MIN_POSITIVES (the console cannot import training; a test checks both).
MIN_EXAMPLES = 10
_SLUG = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class NewCategory(BaseModel):
    tenant: str = Field(..., min_length=1, max_length=64, description="The tenant it is for.")
    name: str = Field(..., pattern=_SLUG, description="The category's name: a lower-case slug, "
                      "e.g. crypto_scam.")
    description: str = Field(..., min_length=3, max_length=2000,
                             description="What the category is: kept with the model version.")
    examples: list[str] = Field(..., min_length=1, max_length=5000,
                                description=f"Positive examples, at least {MIN_EXAMPLES} "
                                "distinct ones.")
    target_precision: float = Field(0.9, gt=0, le=1, description="Reviewed precision it must "
                                    "show before calibration proposes a block threshold.")


@router.post("/v1/console/categories", status_code=202,
             summary="A new tenant-owned category from a description and 10+ examples, in a Ray "
                     "job (`bastion category add`): trained on the tenant's own traffic, gated, "
                     "served review-only (ML ops for every tenant).",
             responses=error_responses(*_OPS, 400, 409, 413, 422))
async def console_add_category(req: NewCategory, request: Request, who: CurrentReviewer,
                               access: Access) -> dict[str, Any]:
    _may_change_champion(access, who, ChampionChange(reason=f"new category {req.name}"))
    policy = access.review_service().policy()
    if req.tenant not in policy.tenants:
        raise ApiError(422, f"unknown tenant {req.tenant!r}; the policy has "
                            f"{', '.join(sorted(policy.tenants))}")
    if req.name in policy.tenants[req.tenant].categories:
        raise ApiError(409, f"tenant {req.tenant!r} already has a category {req.name!r}; choose "
                            "another name")
    examples = list(dict.fromkeys(" ".join(t.split()) for t in req.examples if t.strip()))
    if len(examples) < MIN_EXAMPLES:
        raise ApiError(422, f"{len(examples)} distinct example(s); a new category needs at "
                            f"least {MIN_EXAMPLES}: add more, one a line")
    state = _state(request)
    most = state.settings.limits.max_text_chars
    long = [i + 1 for i, t in enumerate(examples) if len(t) > most]
    if long:
        raise ApiError(422, f"example(s) {long[:5]} are longer than {most} characters "
                            "(limits.max_text_chars)")
    description = _SAFE_REASON.sub(" ", req.description).strip()

    def run() -> dict[str, Any]:
        settings = state.settings
        client = state.jobs()
        running = active_jobs(client, "category")
        if running:
            raise ApiError(409, f"category job {', '.join(running)} is still running; wait for "
                                "it (Jobs below) before starting another")
        folder = settings.state_dir / "categories"
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        path = folder / f"{req.tenant}-{req.name}-{stamp}.txt"
        path.write_text("\n".join(examples) + "\n", encoding="utf-8")
        job_id = submit(client, settings, "category", "category", "add", req.tenant, req.name,
                        "--description", description, "--examples", str(path),
                        "--target-precision", f"{req.target_precision:g}", "--actor", who.name,
                        metadata={"category": f"{req.tenant}/{req.name}", "actor": who.name,
                                  "reason": description[:200]})
        _audit(access, who, "category_add", f"{req.tenant}/{req.name}", job_id=job_id,
               examples=len(examples))
        return {"job_id": job_id, "category": f"{req.tenant}/{req.name}",
                "examples": len(examples),
                "message": f"training {req.tenant}/{req.name} on {len(examples)} example(s) in "
                           f"Ray job {job_id}: the new version is gated, then served with the "
                           "category review-only"}

    return await asyncio.to_thread(run)  # type: ignore[no-any-return]


@router.get("/v1/console/drift",
            summary="The drift monitor's recent checks of your tenants (ML ops only).",
            responses=error_responses(*_OPS, 422))
async def console_drift(request: Request, who: CurrentReviewer,
                        limit: int = Query(50, ge=1, le=200)) -> dict[str, Any]:
    _ops(who)
    state = _state(request)
    return {"runs": await _call(lambda: drift_runs(state.registry(), who.tenants, limit))}


@router.get("/v1/console/drift/{run_id}",
            summary="One drift check's report with its plots (ML ops only).",
            responses=error_responses(*_OPS, 404, 422))
async def console_drift_report(request: Request, who: CurrentReviewer,
                               run_id: str = _RUN) -> dict[str, Any]:
    _ops(who)
    state = _state(request)
    return await _call(  # type: ignore[no-any-return]
        lambda: drift_report(state.registry(), run_id, who.tenants))


@router.get("/v1/console/jobs",
            summary="Retraining triggers' record and the state of Bastion's Ray jobs "
                    "(ML ops only).",
            responses=error_responses(*_OPS))
async def console_jobs(request: Request, who: CurrentReviewer,
                       access: Access) -> dict[str, Any]:
    _ops(who)
    state = _state(request)

    def run() -> dict[str, Any]:
        with access.review_service().queue.engine.connect() as conn:
            triggers = trigger_rows(conn, 50)
        try:
            jobs, problem = job_rows(state.jobs()), None
        except Exception as err:  # noqa: BLE001 - the triggers still show; say why not the jobs
            jobs, problem = [], f"Ray's Jobs API did not answer: {type(err).__name__}: {err}"
        return {"jobs": jobs, "jobs_error": problem, "triggers": triggers}

    return await asyncio.to_thread(run)
