"""The Serve application: ``build_app(args) -> Application`` (Ray's typed app builder).

The same builder serves ``bastion up``, the tests, ``serve run serving.app:build_app`` and the
RayService's ``serveConfigV2`` (see ``serving.config``). Policy and key hashes are not
arguments: they travel in the Ingress's ``user_config``, so an edited policy reconfigures the
running replicas instead of restarting them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application

from bastion.core.settings import Limits, ServingConfig, load_settings
from bastion.core.store import normalise_url
from bastion.registry.aliases import MULTILINGUAL, SHADOW
from bastion.serving.ingress import Ingress
from bastion.serving.media import ImageModerator, VoiceModerator
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
    database_url: str | None = Field(
        None, description="The database of the event log, review queue and labels; default "
        "BASTION_DATABASE_URL, else the SQLite file in the state directory.",
    )
    limits: Limits = Field(default_factory=Limits, description="API input limits.")
    serving: ServingConfig = Field(default_factory=ServingConfig, description="Sizing.")


def build_app(args: AppArgs | dict[str, Any]) -> Application:
    args = args if isinstance(args, AppArgs) else AppArgs.model_validate(args)
    sv = args.serving
    # @serve.deployment turns the classes into Deployments; mypy sees the classes.
    common = (args.state_dir, args.tracking_uri, args.model_name, sv.max_batch_size,
              sv.batch_wait_timeout_s, sv.torch_threads, sv.precision, sv.champion_poll_s)
    scorer = Scorer.options(  # type: ignore[attr-defined]
        num_replicas=sv.scorer_replicas,
        max_ongoing_requests=sv.scorer_max_ongoing_requests,
    ).bind(*common)

    def follower(name: str, replicas: int, *alias: Any) -> Any:
        """A Scorer that follows another alias; None with no replicas. A quarter of a CPU
        each: the two followers reserve together what one did, so that Ray Train's two workers
        still fit beside serving on a local cluster of 5 CPUs (``core.runtime.start_ray``)."""
        return None if replicas == 0 else Scorer.options(  # type: ignore[attr-defined]
            name=name, num_replicas=replicas,
            max_ongoing_requests=sv.scorer_max_ongoing_requests,
            ray_actor_options={"num_cpus": 0.25},
        ).bind(*common, *alias)

    # A second Scorer for the languages routed to the multilingual version (@multilingual); a
    # third for the challenger of a shadow run (@shadow): idle, holding no model, until then.
    multilingual = follower("MultilingualScorer", sv.multilingual_replicas, MULTILINGUAL)
    shadow = follower("ShadowScorer", sv.shadow_replicas, SHADOW, sv.canary_check_s)
    # Images and voice on deployments of their own: text requests never reach them.
    limits = args.limits.model_dump()
    images = None if sv.image_replicas == 0 else ImageModerator.options(  # type: ignore[attr-defined]
        num_replicas=sv.image_replicas).bind(limits, sv.media_threads, sv.image_backbone,
                                             sv.image_backbone_options, args.state_dir,
                                             args.tracking_uri, args.model_name,
                                             sv.champion_poll_s)
    voice = None if sv.audio_replicas == 0 else VoiceModerator.options(  # type: ignore[attr-defined]
        num_replicas=sv.audio_replicas).bind(limits, sv.media_threads)
    return Ingress.options(  # type: ignore[attr-defined,no-any-return]
        num_replicas=sv.ingress_replicas,
        max_ongoing_requests=sv.ingress_max_ongoing_requests,
    ).bind(scorer, _database_url(args), limits, args.keys_file,
            args.state_dir, sv.review_intake, args.tracking_uri, args.model_name, images, voice,
            multilingual, sv.multilingual_languages, shadow)


def _database_url(args: AppArgs) -> str:
    """The args' URL, else the environment's (a RayService's pods get BASTION_DATABASE_URL),
    else the SQLite file in the state directory: as ``Settings.database_url`` resolves it."""
    if args.database_url:
        return normalise_url(args.database_url).render_as_string(hide_password=False)
    return load_settings(args.state_dir).database_url
