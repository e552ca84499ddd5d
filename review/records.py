"""The records of the review loop: what intake adds, what a moderator sees and submits, and
the queue's errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bastion.core.errors import BastionError

__all__ = [
    "ReviewError", "LeaseLost", "NotFound", "ReviewItem", "Report", "SessionEvent", "Task",
    "Claim", "LabelIn", "Submission", "media_without_words",
]

# What an image's or a clip's media facts hold of its words: the text it shows or says, with
# times (withheld like any text: until revealed, and not kept where review.keep_text is off).
_WORDS = ("text", "transcript", "words", "segments")


def media_without_words(media: dict[str, Any] | None) -> dict[str, Any] | None:
    """``media`` with none of the words an image shows or a clip says: its facts and cues, and
    its reasons without their text (a span keeps its times only)."""
    if media is None:
        return None
    out = {k: v for k, v in media.items() if k not in _WORDS and k != "reasons"}
    out["reasons"] = [
        {k: v for k, v in r.items() if k not in ("text", "span")}
        | ({"span": {k: v for k, v in r["span"].items() if k != "text"}
            if isinstance(r.get("span"), dict) else r["span"]} if r.get("span") else {})
        for r in media.get("reasons") or []]
    return out


class ReviewError(BastionError):
    """A review-queue request is invalid or conflicts with the queue's state."""


class LeaseLost(ReviewError):
    """The claim's lease expired (or was released) and its slot went to another moderator."""


class NotFound(ReviewError):
    """No such task, item or claim; also for a tenant outside the caller's scope."""


@dataclass(frozen=True)
class ReviewItem:
    """One piece of content to review, as intake adds it."""

    tenant: str
    item_id: str
    text: str | None  # None when the tenant's policy keeps only the digest
    text_sha256: str
    session_id: str | None
    user_id: str | None
    source: str  # "decision" | "report" | "event" | "sample" (active learning)
    scores: dict[str, float]
    keyword_hits: list[str]
    decision: str | None
    model_version: str | None
    policy_version: str | None
    ts: float
    # "text", "image" or "audio"; for media, ``text`` is what it showed or said, ``media`` its
    # facts (size, hash, transcript words, the flagged span) and ``media_blob`` the raw image
    # or clip, only where the tenant's policy keeps it (read back as ``has_media`` only: the
    # bytes come from ReviewQueue.item_media).
    modality: str = "text"
    media: dict[str, Any] | None = None
    media_type: str | None = None
    media_blob: bytes | None = None
    has_media: bool = False
    language: str | None = None  # ISO 639-1 of its text (core.language)


@dataclass(frozen=True)
class Report:
    """A user's report about another user, an item or a session."""

    tenant: str
    report_id: str
    reporter: str
    reported_user: str | None
    reported_item: str | None
    session_id: str | None
    reason: str
    text: str
    ts: float


@dataclass(frozen=True)
class SessionEvent:
    """Something that happened in a session: ``kind`` is "mute", "leave", "block", ..."""

    tenant: str
    event_id: str
    session_id: str
    user_id: str | None
    kind: str
    target_user: str | None
    ts: float


@dataclass(frozen=True)
class Task:
    """The unit of review work; ``gold`` (item_id -> known labels) is for scoring moderators."""

    task_id: str
    tenant: str
    group_key: str  # "session:<id>", "item:<id>" or "report:<id>"
    priority: float
    reasons: list[dict[str, Any]]
    slots: int
    slots_done: int
    status: str  # "open" | "done"
    items: list[ReviewItem]
    reports: list[Report]
    events: list[SessionEvent]
    gold: dict[str, dict[str, float]]
    created_ts: float = 0.0  # when the task was made (its age in the console's queue)


@dataclass(frozen=True)
class Claim:
    """One moderator's lease on one slot of one task; ``token`` proves it."""

    token: str
    task_id: str
    slot: int
    moderator: str
    leased_until: float


@dataclass(frozen=True)
class LabelIn:
    """One label a moderator gives: ``value`` in [0, 1], ``confidence`` in (0, 1]."""

    item_id: str
    category: str
    value: float
    confidence: float = 1.0


@dataclass(frozen=True)
class Submission:
    """A stored submission; ``duplicate`` is True when this call repeated an earlier one."""

    submission_id: str
    task_id: str
    slot: int
    moderator: str
    labels: list[LabelIn]
    ts: float
    duplicate: bool
