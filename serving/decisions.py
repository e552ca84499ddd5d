"""A request's decisions, assembled in one pass over its scored items: the results the API
returns, the records the event log keeps and the items the review queue takes in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bastion.core.cascade import Stage, stage_reason
from bastion.core.decision import ResolvedTenant, decide, normalize_text
from bastion.core.events import DecisionEvent
from bastion.core.http import ApiError
from bastion.core.language import detect_language
from bastion.core.media_decision import cue_reasons, flagged_span, image_verdict, merge
from bastion.core.policy import MediaPolicy
from bastion.core.textkey import text_digest
from bastion.review.records import ReviewItem
from bastion.serving.schemas import ModerateRequest

__all__ = ["Decisions", "Scored", "assemble", "media_text"]


@dataclass(frozen=True)
class Decisions:
    """What one request decided, for the caller, the event log and the review queue."""

    response: dict[str, Any]  # a ModerateResponse
    events: list[DecisionEvent]
    review_items: list[ReviewItem]


@dataclass(frozen=True)
class Scored:
    """One item, scored: the text path's row for the text it carries, shows or says (None
    where there is none: an image without text, a clip without speech) and, for an image or a
    clip, what the media deployment read from it."""

    model_version: str
    tenant: ResolvedTenant  # the tenant's policy resolved for model_version
    scores: np.ndarray | None  # every head, model order
    embedding: np.ndarray | None
    stage: int | None = None  # core.cascade.Stage; None without the cascade
    media: dict[str, Any] | None = None  # serving.media's facts
    media_bytes: bytes | None = None  # the raw media, for a review item where the policy keeps it
    segment_scores: np.ndarray | None = None  # a clip's transcript segments, every head


def assemble(req: ModerateRequest, tenant: str, scored: Sequence[Scored],
             media_policy: MediaPolicy, *, request_id: str, now: float, review: bool,
             text_key: bytes, languages: Sequence[str | None] | None = None) -> Decisions:
    """Decide every item of ``req``.

    Args:
        req: the validated request.
        tenant: the authenticated tenant.
        scored: one per item of ``req``, in order.
        media_policy: the tenant's policy for images and voice.
        request_id: the id the response and the events carry.
        now: the decisions' timestamp.
        review: whether review is enabled: items decided "review", and the other items of
            their sessions (as context), go to the review queue.
        text_key: the install's text digest key (``core.textkey``).
        languages: each item's language, where the caller identified it already (the
            Ingress, to route); else identified here (``core.language``).

    Raises:
        ApiError: 422 when ``req.categories`` names a category the tenant does not enforce.
    """
    results: list[dict[str, Any]] = []
    events: list[DecisionEvent] = []
    review_items: list[ReviewItem] = []
    checked: set[str] = set()
    for k, (item, sc) in enumerate(zip(req.items, scored, strict=True)):
        rt = sc.tenant
        if req.categories is not None and sc.model_version not in checked:
            known = {c.name for c in rt.categories} | set(media_policy.image.categories)
            unknown = sorted(set(req.categories) - known)
            if unknown:
                raise ApiError(422, f"unknown categories {unknown} for tenant {tenant!r}; "
                                    f"it enforces {sorted(known)}")
            checked.add(sc.model_version)
        modality = item.modality
        text = item.text if item.text is not None else media_text(sc.media)
        d: dict[str, Any] = (
            decide(rt, text, sc.scores, req.categories) if sc.scores is not None else
             {"decision": "allow", "scores": {}, "reasons": [], "keyword_hits": [],
              "deprioritized": []})
        media_out: dict[str, Any] | None = None
        if sc.media is not None:
            d, media_out = _media_decision(d, modality, sc, text, media_policy, req.categories)
        digest = text_digest(text or f"{modality}:{(sc.media or {}).get('sha256', '')}",
                             text_key)
        language = languages[k] if languages is not None else detect_language(text)
        result: dict[str, Any] = {"id": item.id, **d, "model_version": sc.model_version,
                                  "policy_version": rt.version, "language": language}
        if modality != "text":
            result.update(modality=modality, media=media_out)
        results.append(result)
        in_review = d["decision"] == "review"
        if review and (in_review or item.context.session_id):
            # a session's other items join its review task as context (if it has one)
            kept = _kept_media(modality, sc, item.context.metadata, media_policy)
            review_items.append(ReviewItem(
                tenant=tenant, item_id=item.id, text=text or None,
                text_sha256=digest, session_id=item.context.session_id,
                user_id=item.context.user_id,
                source="decision" if in_review else "context", scores=d["scores"],
                keyword_hits=[str(h.get("rule") or h.get("category") or "")
                              for h in d["keyword_hits"]],
                decision=d["decision"], model_version=sc.model_version,
                policy_version=rt.version, ts=now, modality=modality,
                media=None if media_out is None else {**media_out, "reasons": d["reasons"]},
                media_type=None if kept is None else str((sc.media or {}).get("mime")),
                media_blob=kept, language=language))
        stage = sc.stage  # the cascade
        embedding = sc.embedding
        if modality == "image" and sc.media is not None:
            embedding = sc.media.get("embedding")  # the image model's: image drift reads it
        events.append(DecisionEvent(
            ts=now, request_id=request_id, tenant=tenant, item_id=item.id,
            session_id=item.context.session_id, user_id=item.context.user_id,
            text=text if (rt.store_raw_text and text) else None,
            text_sha256=digest, text_len=len(text),
            decision=d["decision"], scores=d["scores"],
            reasons=d["reasons"] + ([] if stage is None else [stage_reason(stage)]),
            model_version=sc.model_version, policy_version=rt.version,
            embedding=None if stage == Stage.first else embedding,
            modality=modality, media=None if media_out is None else _logged(media_out, sc.media),
            language=language,
        ))
    response = {"request_id": request_id, "tenant": tenant,
                "model_version": results[0]["model_version"],
                "policy_version": results[0]["policy_version"], "results": results}
    return Decisions(response, events, review_items)


def media_text(media: dict[str, Any] | None) -> str:
    """The text an image shows (OCR) or a clip says (its transcript); "" for none."""
    if not media:
        return ""
    return str(media.get("ocr_text") or media.get("transcript") or "")


def _media_decision(d: dict[str, Any], modality: str, sc: Scored, text: str,
                    policy: MediaPolicy, only: Sequence[str] | None
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The text path's decision with the image's or clip's own reasons merged in, and what the
    response's ``media`` says of the item."""
    facts = sc.media or {}
    if modality == "image":
        scores, reasons = image_verdict(policy.image, facts)
        if only is not None:
            scores = {k: v for k, v in scores.items() if k in only}
            reasons = [r for r in reasons if r["kind"] == "hash" or r["category"] in only]
        for r in d["reasons"]:  # the text path's reasons rest on the text the image shows
            if r["kind"] in ("model", "keyword"):
                r.update(source="ocr", text=text)
        out = {k: facts[k] for k in ("format", "width", "height", "bytes", "pdq")}
        out["image_version"] = facts.get("image_version")  # None: the backbone's own scores
        # the tenant's image categories: what a moderator labels the image for (a category
        # no head scores yet has no score to show, but its labels train the head)
        out["categories"] = sorted(policy.image.categories)
        out["text"] = facts.get("ocr_text")
        if facts.get("ocr_error"):
            out["ocr_error"] = facts["ocr_error"]
        return merge(d, scores, reasons), out
    segments = facts.get("segments") or []
    for r in d["reasons"]:  # the transcript span each text reason rests on
        if r["kind"] == "model":
            col = sc.tenant.category(r["category"])
            r["span"] = flagged_span(segments, sc.segment_scores,
                                     None if col is None else col.column)
        elif r["kind"] == "keyword":
            phrases = [p.casefold() for p in r.get("phrases") or []]
            r["span"] = flagged_span(
                segments, None, None,
                lambda t, ps=phrases: any(p in normalize_text(t) for p in ps))
    out = {k: facts[k] for k in ("format", "duration_s", "sample_rate", "channels", "bytes")}
    out.update(transcript=facts.get("transcript", ""), words=facts.get("words", []),
               segments=segments, speech_spans=facts.get("speech_spans", []),
               cues=facts.get("cues", {}))
    return merge(d, {}, cue_reasons(policy.audio, facts.get("cues") or {})), out


def _kept_media(modality: str, sc: Scored, metadata: dict[str, Any],
                policy: MediaPolicy) -> bytes | None:
    """The raw media a review item keeps: an image where the policy keeps images, a clip
    where it keeps audio and the product says the speaker consented; else none."""
    if modality == "image" and policy.keep_images:
        return sc.media_bytes
    if modality == "audio" and policy.keep_audio and metadata.get("consent") is True:
        return sc.media_bytes
    return None


def _logged(media: dict[str, Any], facts: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the event log keeps of an item's media: its facts, never the words said (those
    are the text, kept only where store_raw_text) nor the media itself; for an image also
    the image model's scores, the heads' and which backbone gave its embedding (what training
    the image heads and the gate's baseline read)."""
    out = {k: v for k, v in media.items() if k not in ("text", "transcript", "words",
                                                        "segments")}
    for k in ("image_scores", "head_scores", "image_version", "backbone_sha256"):
        if facts and k in facts:
            out[k] = facts[k]
    return out
