"""The moderation API's FastAPI application: its routes (``/v1/moderate``, ``/healthz``,
``/readyz``), the review router (``bastion.review.routes``), one error contract
(``bastion.core.http``) and the body limits, built once per Ingress replica from that
replica's limits (:func:`build_api`)."""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from bastion.core.http import BodyGuard, error_responses, install_error_handlers
from bastion.core.proxyreplay import MarkServed
from bastion.core.settings import Limits, Settings
from bastion.review.console import include_console
from bastion.review.console_models import include_models
from bastion.review.routes import ReviewAccess, include_review
from bastion.serving.schemas import (
    ModerateRequest,
    ModerateResponse,
    Readiness,
    check_limits,
)

__all__ = ["Moderation", "build_api", "router"]

router = APIRouter()


class Moderation(ReviewAccess, Protocol):
    """What the routes need from the deployment that serves them (the Ingress)."""

    limits: Limits
    settings: Settings  # the state directory and registry this deployment serves from

    async def moderate(self, req: ModerateRequest, request: Request) -> dict[str, Any]:
        """Authenticate, score and decide a request whose body passed ``check_limits``."""
        ...

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether a model and a policy are loaded, with details."""
        ...


def build_api(moderation: Moderation) -> FastAPI:
    """The FastAPI application of one Ingress replica."""
    api = FastAPI(
        title="Bastion moderation API",
        version="1",
        description="Per-tenant category scores and a decision (block, review, allow) for "
                    "content.",
    )
    install_error_handlers(api)
    api.add_middleware(BodyGuard, max_bytes=moderation.limits.max_body_bytes,
                       setting="limits.max_body_bytes")
    api.add_middleware(MarkServed)  # outermost: the proxy tells this app's 404s from its own
    api.state.moderation = moderation
    api.include_router(router)
    include_review(api, moderation)
    include_console(api)  # the moderators' console, on the same origin (/console/)
    include_models(api, lambda: moderation.settings)  # its Models and Drift screens (ML ops)
    return api


def current_moderation(request: Request) -> Moderation:
    """Dependency: the deployment the application was built for."""
    moderation: Moderation = request.app.state.moderation
    return moderation


Current = Annotated[Moderation, Depends(current_moderation)]


@router.post("/v1/moderate", response_model=ModerateResponse,
             summary="Score items against a tenant's policy and decide.",
             responses=error_responses(400, 401, 404, 413, 422, 429, 503))
async def moderate(req: ModerateRequest, request: Request,
                   moderation: Current) -> dict[str, Any]:
    check_limits(req, moderation.limits)
    return await moderation.moderate(req, request)


@router.get("/healthz", summary="Liveness: the ingress answers.")
async def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: a model and a policy are loaded, with details.",
            response_model=Readiness,
            responses={503: {"model": Readiness, "description": "Not ready (yet): the same "
                                                                 "body, ready false."}})
async def readyz(moderation: Current) -> JSONResponse:
    ready, details = await moderation.readiness()
    return JSONResponse({"ready": ready, **details}, status_code=200 if ready else 503)
