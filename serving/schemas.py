"""The wire format of the moderation API (request and response models), and the limits a
deployment puts on a request (``limits`` in the settings) that a model cannot express."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(..., min_length=1, description="Caller's id of the item; echoed back.")
    text: str = Field(..., min_length=1, description="Text to moderate (UTF-8, non-empty).")
    context: ItemContext = Field(default_factory=ItemContext, description="Session and user.")


class ModerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(..., min_length=1, description="Tenant whose policy applies.")
    items: list[Item] = Field(..., min_length=1, description="Items to moderate.")
    categories: list[str] | None = Field(
        None, description="Only these of the tenant's categories (default: all it enforces)."
    )


class Reason(BaseModel):
    model_config = ConfigDict(extra="allow")

    kind: Literal["model", "keyword", "allow_list"]
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
    """Raise 413 past ``limits.max_items``, else a validation error naming every item that
    breaks a limit (text length, blank text, lone surrogates, id lengths, repeated ids)."""
    if len(req.items) > limits.max_items:
        raise ApiError(413, f"{len(req.items)} items in one request; the limit is "
                            f"{limits.max_items} (limits.max_items): split the batch")
    problems: list[tuple[tuple[str | int, ...], str]] = []
    seen: set[str] = set()
    for i, item in enumerate(req.items):
        text = ("items", i, "text")
        if len(item.text) > limits.max_text_chars:
            problems.append((text, f"{len(item.text)} characters; the limit is "
                                   f"{limits.max_text_chars} (limits.max_text_chars)"))
        if not item.text.strip():
            problems.append((text, "only whitespace; send some text"))
        try:
            item.text.encode("utf-8")
        except UnicodeEncodeError:
            problems.append((text, "contains invalid Unicode (a lone surrogate)"))
        ids = [item.id, item.context.session_id or "", item.context.user_id or ""]
        if any(len(x) > limits.max_id_chars for x in ids):
            problems.append((("items", i), f"an id is longer than {limits.max_id_chars} "
                                           "characters"))
        if item.id in seen:
            problems.append((("items", i, "id"), f"{item.id!r} appears twice in this request"))
        seen.add(item.id)
    if problems:
        raise invalid(*problems)
