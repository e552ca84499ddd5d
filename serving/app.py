"""The Serve application: ``build_app(args) -> Application`` (Ray's typed app builder).

The same builder serves ``bastion up``, the tests, ``serve run serving.app:build_app`` and the
RayService's ``serveConfigV2`` (see ``serving.config``). Policy and key hashes are not
arguments: they travel in the Ingress's ``user_config``, so an edited policy reconfigures the
running replicas instead of restarting them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application

from bastion.core.events import events_db_path
from bastion.core.labels import labels_db_path
from bastion.core.settings import Limits, ServingConfig
from bastion.serving.ingress import Ingress
from bastion.serving.scorer import Scorer

__all__ = ["AppArgs", "build_app", "APP_NAME"]

APP_NAME = "bastion"


class AppArgs(BaseModel):
    """Everything the application needs; JSON-serialisable so it fits a Serve config file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    state_dir: str = Field(..., description="State directory (model cache, event log).")
    tracking_uri: str = Field(..., description="MLflow tracking/registry URI.")
    model_name: str = Field("bastion-moderation", description="Registered model to serve.")
    keys_file: str | None = Field(
        None, description="JSON file of tenant -> API key (e.g. a mounted Secret), read when "
        "the Ingress's user_config carries no key_hashes.",
    )
    review_db_url: str | None = Field(
        None, description="Review queue database URL; default SQLite in the state directory.",
    )
    limits: Limits = Field(default_factory=Limits, description="API input limits.")
    serving: ServingConfig = Field(default_factory=ServingConfig, description="Sizing.")


def build_app(args: AppArgs | dict[str, Any]) -> Application:
    args = args if isinstance(args, AppArgs) else AppArgs.model_validate(args)
    sv = args.serving
    # @serve.deployment turns the classes into Deployments; mypy sees the classes.
    scorer = Scorer.options(  # type: ignore[attr-defined]
        num_replicas=sv.scorer_replicas,
        max_ongoing_requests=sv.scorer_max_ongoing_requests,
    ).bind(
        args.state_dir, args.tracking_uri, args.model_name, sv.max_batch_size,
        sv.batch_wait_timeout_s, sv.torch_threads, sv.precision, sv.champion_poll_s,
    )
    return Ingress.options(  # type: ignore[attr-defined,no-any-return]
        num_replicas=sv.ingress_replicas,
        max_ongoing_requests=sv.ingress_max_ongoing_requests,
    ).bind(scorer, str(events_db_path(args.state_dir)), args.limits.model_dump(), args.keys_file,
           # a RayService's pods get the URL from their environment (BASTION_REVIEW_DB_URL)
           args.review_db_url or os.environ.get("BASTION_REVIEW_DB_URL")
           or f"sqlite:///{Path(args.state_dir).resolve() / 'review.db'}",
           str(labels_db_path(args.state_dir)))
