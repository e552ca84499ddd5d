"""The wire format of the moderation API (request and response models), and the limits a
deployment puts on a request (``limits`` in the settings) that a model cannot express."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bastion.core.http import ApiError, invalid
from bastion.core.settings import Limits

__all__ = [
    "ItemContext", "Item", "ModerateRequest", "Reason", "ItemResult", "ModerateResponse",
    "Readiness", "check_limits",
]


class ItemContext(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_id: str | None = Field(None, description="Session (chat, match, call) the item is in.")
    user_id: str | None = Field(None, description="Author of the item.")
    metadata: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Free metadata (channel, locale, ...), kept as is."
    )


MODALITIES = ("text", "image", "audio")


class Item(BaseModel):
    """One piece of content: exactly one of ``text``, ``image_base64`` or ``audio_base64``."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(..., min_length=1, description="Caller's id of the item; echoed back.")
    text: str | None = Field(
        None, min_length=1, description="Text to moderate (UTF-8, non-empty).")
    image_base64: str | None = Field(
        None, min_length=1, description="An image to moderate, base64: PNG, JPEG or WebP "
        "(limits.max_image_bytes, limits.max_image_pixels).")
    audio_base64: str | None = Field(
        None, min_length=1, description="A voice clip to moderate (a speaker's turn or a "
        "rolling window), base64: WAV, FLAC or OGG (limits.max_audio_bytes, "
        "limits.max_audio_seconds).")
    context: ItemContext = Field(default_factory=ItemContext, description="Session and user.")

    @model_validator(mode="after")
    def _one_kind(self) -> Item:
        given = [f for f in ("text", "image_base64", "audio_base64") if getattr(self, f)]
        if len(given) != 1:
            raise ValueError("an item carries exactly one of text, image_base64 or "
                             f"audio_base64; this one has {', '.join(given) or 'none'}")
        return self

    @property
    def modality(self) -> str:
        return "text" if self.text else "image" if self.image_base64 else "audio"


class ModerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(..., min_length=1, description="Tenant whose policy applies.")
    items: list[Item] = Field(..., min_length=1, description="Items to moderate.")
    categories: list[str] | None = Field(
        None, description="Only these of the tenant's categories (default: all it enforces)."
    )


class Reason(BaseModel):
    model_config = ConfigDict(extra="allow")

    kind: Literal["model", "keyword", "allow_list", "image_model", "hash", "acoustic"]
    action: Literal["block", "review", "allow"]
    category: str | None = None
    score: float | None = None
    threshold: float | None = None
    band: Literal["block", "review"] | None = None
    rule: str | None = None
    phrases: list[str] | None = None


class ItemResult(BaseModel):
    id: str
    decision: Literal["block", "review", "allow"]
    scores: dict[str, float]
    reasons: list[Reason]
    keyword_hits: list[dict[str, Any]]
    deprioritized: list[str]
    model_version: str
    policy_version: str
    language: str | None = Field(
        None, description="The language of the item's text (or of the text its image shows or "
        "its clip says), ISO 639-1 (e.g. \"es\"); null where it has no letters to tell.")
    modality: Literal["text", "image", "audio"] = "text"
    media: dict[str, Any] | None = Field(
        None, description="For an image or audio item: what was read from it (format and size, "
        "PDQ hash, the text the image shows; the transcript with word times, the acoustic "
        "cues).")


class ModerateResponse(BaseModel):
    request_id: str
    tenant: str
    model_version: str
    policy_version: str
    results: list[ItemResult]


class Readiness(BaseModel):
    """``/readyz``: whether a model and a policy are loaded, and the details of each part."""

    model_config = ConfigDict(extra="allow")

    ready: bool = Field(..., description="A policy and a model are loaded: requests are served.")
    ingress: dict[str, Any] | None = Field(None, description="This ingress replica's state.")
    scorer: dict[str, Any] | None = Field(
        None, description="The Scorer's state (model version, batch statistics), or its error.")
    policy_fit: dict[str, Any] | None = Field(
        None, description="Per tenant, the categories served otherwise than written, and why.")


def check_limits(req: ModerateRequest, limits: Limits) -> None:
    """Raise 413 past ``limits.max_items`` (or ``max_media_items``), else a validation error
    naming every item that breaks a limit (text length, blank text, lone surrogates, media
    size, id lengths, repeated ids). Media is decoded later (``serving.media``): here only
    its base64 length is checked, so an oversized clip costs nothing."""
    if len(req.items) > limits.max_items:
        raise ApiError(413, f"{len(req.items)} items in one request; the limit is "
                            f"{limits.max_items} (limits.max_items): split the batch")
    n_media = sum(1 for it in req.items if it.text is None)
    if n_media > limits.max_media_items:
        raise ApiError(413, f"{n_media} image and audio items in one request; the limit is "
                            f"{limits.max_media_items} (limits.max_media_items): split the batch")
    problems: list[tuple[tuple[str | int, ...], str]] = []
    seen: set[str] = set()
    for i, item in enumerate(req.items):
        if item.text is not None:
            problems.extend(_text_problems(i, item.text, limits))
        for field, most, setting in (
                ("image_base64", limits.max_image_bytes, "limits.max_image_bytes"),
                ("audio_base64", limits.max_audio_bytes, "limits.max_audio_bytes")):
            value = getattr(item, field)
            if value is not None and len(value) * 3 // 4 > most + 2:
                problems.append((("items", i, field), f"about {len(value) * 3 // 4:,} bytes; "
                                 f"the limit is {most:,} ({setting})"))
        ids = [item.id, item.context.session_id or "", item.context.user_id or ""]
        if any(len(x) > limits.max_id_chars for x in ids):
            problems.append((("items", i), f"an id is longer than {limits.max_id_chars} "
                                           "characters"))
        if item.id in seen:
            problems.append((("items", i, "id"), f"{item.id!r} appears twice in this request"))
        seen.add(item.id)
    if problems:
        raise invalid(*problems)


def _text_problems(i: int, text: str, limits: Limits) -> list[tuple[tuple[str | int, ...], str]]:
    where = ("items", i, "text")
    out: list[tuple[tuple[str | int, ...], str]] = []
    if len(text) > limits.max_text_chars:
        out.append((where, f"{len(text)} characters; the limit is "
                           f"{limits.max_text_chars} (limits.max_text_chars)"))
    if not text.strip():
        out.append((where, "only whitespace; send some text"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        out.append((where, "contains invalid Unicode (a lone surrogate)"))
    return out
