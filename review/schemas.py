"""The wire format of the review API: user reports, session events, and what moderators
send (submissions, claim tokens)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ReportRequest", "SessionEventIn", "EventsRequest", "LabelSubmission", "SubmitRequest",
    "ClaimToken",
]

_ID = Field(..., min_length=1, max_length=256)


class ReportRequest(BaseModel):
    """A user's report of another user or of an item."""

    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(..., min_length=1, description="Tenant the report belongs to.")
    report_id: str | None = Field(None, max_length=256, description="Caller's id; a repeat "
                                  "with the same id is ignored (default: derived from content).")
    reporter: str = Field(..., min_length=1, max_length=256, description="Reporting user.")
    reported_user: str | None = Field(None, max_length=256, description="User reported.")
    reported_item: str | None = Field(None, max_length=256, description="Item id reported.")
    session_id: str | None = Field(None, max_length=256, description="Session it happened in.")
    reason: str = Field(..., min_length=1, max_length=64,
                        description="Reason code, e.g. 'harassment', 'hate', 'spam'.")
    text: str = Field("", max_length=5000, description="The reporter's own words.")
    ts: float | None = Field(None, description="When (unix seconds; default now).")


class SessionEventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: str | None = Field(None, max_length=256, description="Caller's id (idempotency).")
    session_id: str = Field(..., min_length=1, max_length=256)
    user_id: str | None = Field(None, max_length=256, description="Who acted.")
    kind: Literal["mute", "leave", "block", "report", "kick", "unmute"] = Field(
        ..., description="What the user did.")
    target_user: str | None = Field(None, max_length=256, description="Whom it was aimed at.")
    ts: float | None = Field(None, description="When (unix seconds; default now).")


class EventsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(..., min_length=1)
    events: list[SessionEventIn] = Field(..., min_length=1, max_length=1000)


class LabelSubmission(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: str = _ID
    category: str = Field(..., min_length=1, max_length=64)
    value: float = Field(..., ge=0, le=1, description="1: the category applies; 0: it does not.")
    confidence: float = Field(1.0, gt=0, le=1, description="How sure the moderator is.")


class SubmitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(..., min_length=1, description="The claim's token.")
    submission_id: str = Field(..., min_length=1, max_length=128,
                               description="Client's id: resubmitting it is harmless.")
    labels: list[LabelSubmission] = Field(..., min_length=1, max_length=10000)


class ClaimToken(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(..., min_length=1)
