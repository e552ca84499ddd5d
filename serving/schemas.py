"""The wire format of the moderation API (request and response models)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ItemContext", "Item", "ModerateRequest", "Reason", "ItemResult", "ModerateResponse"]


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
