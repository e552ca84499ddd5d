"""A new category after it is served (``training.category``): what moderators' reviewed labels
say about its precision, the block threshold threshold calibration (``review.calibration``)
proposes once that precision meets the target, and active learning (``review.selection``)
choosing the tenant's logged items most worth a label for it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bastion.core.embcache import EmbeddingCache
from bastion.core.events import EventLog
from bastion.core.labels import LabelStore
from bastion.core.model import ModerationModel
from bastion.core.policy import PolicySet
from bastion.core.settings import Settings
from bastion.core.textkey import text_key
from bastion.registry.store import CHAMPION, ModelRegistry
from bastion.review.calibration import Proposal, propose
from bastion.review.queue import ReviewQueue
from bastion.review.records import ReviewItem
from bastion.review.selection import Pick, select
from bastion.review.service import ReviewService
from bastion.training._category_policy import (
    parse_text,
    policy_with_block_threshold,
    read_policy,
    write_policy,
)
from bastion.training.category import ANNOTATOR, CategoryError, fingerprints

__all__ = ["CategoryStatus", "apply_block_threshold", "category_status", "queue_for_labelling",
           "rank_for_labelling", "status_of"]


@dataclass
class CategoryStatus:
    tenant: str
    name: str
    head: str
    blocks: bool  # the policy gives it a block threshold already
    review_threshold: float | None
    block_threshold: float | None
    target_precision: float
    n_reviewed: int
    n_positive: int
    n_in_band: int  # reviewed items at or above the review threshold
    precision_in_band: float | None  # their share of positives
    n_example_labels: int
    proposal: Proposal


def _category(policy: PolicySet, tenant: str, name: str) -> Any:
    if tenant not in policy.tenants:
        raise CategoryError(f"unknown tenant {tenant!r}; the policy has "
                            f"{', '.join(sorted(policy.tenants))}")
    cats = policy.tenants[tenant].categories
    if name not in cats:
        raise CategoryError(f"tenant {tenant!r} has no category {name!r}; its categories: "
                            f"{', '.join(cats)} (add one with 'bastion category add')")
    return cats[name]


def category_status(settings: Settings, policy: PolicySet, tenant: str, name: str, *,
                    confidence: float = 0.95, min_items: int = 30) -> CategoryStatus:
    """What moderators' reviewed labels say about a category: its precision in the review
    band against the target, and calibration's block threshold proposal (one with
    ``proposed_block`` only once the precision's lower bound at ``confidence`` meets the
    target on at least ``min_items`` reviewed items)."""
    _category(policy, tenant, name)  # unknown tenant or category: say so before reading
    store = LabelStore(settings.database_url)
    try:
        reviewed = store.reviewed()
        examples = sum(1 for r in store.aggregated(tenants=[tenant]) if r.category == name
                       and ANNOTATOR in r.annotators)
    finally:
        store.close()
    scores, labels = reviewed.get((tenant, name), (np.zeros(0), np.zeros(0)))
    return status_of(policy, tenant, name, scores, labels, examples, confidence=confidence,
                     min_items=min_items)


def status_of(policy: PolicySet, tenant: str, name: str, scores: np.ndarray,
              labels: np.ndarray, n_example_labels: int = 0, *, confidence: float = 0.95,
              min_items: int = 30) -> CategoryStatus:
    """:func:`category_status` from the reviewed items' scores and aggregated labels."""
    cpol = _category(policy, tenant, name)
    pair = (tenant, name)
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, np.float64)
    (proposal,) = [p for p in propose(policy, {pair: (scores, labels)} if len(scores) else {},
                                      confidence=confidence, min_items=min_items)
                   if (p.tenant, p.category) == pair]
    thr = cpol.review_threshold if cpol.review_threshold is not None else cpol.block_threshold
    band = scores >= thr if thr is not None else np.ones(len(scores), bool)
    pos = labels >= 0.5
    return CategoryStatus(
        tenant=tenant, name=name, head=cpol.head or f"{tenant}/{name}",
        blocks=cpol.block_threshold is not None or cpol.target_precision is not None,
        review_threshold=cpol.review_threshold, block_threshold=cpol.block_threshold,
        target_precision=proposal.target_precision, n_reviewed=len(scores),
        n_positive=int(pos.sum()), n_in_band=int(band.sum()),
        precision_in_band=float(pos[band].mean()) if band.any() else None,
        n_example_labels=n_example_labels, proposal=proposal)


def apply_block_threshold(policy_path: Path, proposal: Proposal) -> Path:
    """Write a calibrated block threshold into the policy file
    (:func:`policy_with_block_threshold`); returns the backup of the old file.

    Raises:
        CategoryError: the proposal has no block threshold.
    """
    text = policy_with_block_threshold(read_policy(policy_path), proposal)
    parse_text(text, f"{policy_path} with a calibrated block threshold")
    return write_policy(policy_path, text)


def rank_for_labelling(emb: np.ndarray, scores: np.ndarray, name: str, threshold: float,
                       budget: int, *, labelled: np.ndarray | None = None, n_labels: int = 0,
                       seed: int = 0) -> list[Pick]:
    """``review.selection.select`` for one category's head: ``scores`` (n,) of the items
    ``emb`` (n, d), most unsure around ``threshold`` first, spread out and away from the
    ``labelled`` embeddings (the examples and what moderators labelled for it)."""
    thr = float(np.clip(threshold, 1e-3, 1 - 1e-3))
    return select(emb, np.asarray(scores, np.float64)[:, None], [name], budget,
                  thresholds={name: thr}, label_counts={name: n_labels}, labelled=labelled,
                  seed=seed)


def queue_for_labelling(settings: Settings, policy: PolicySet, tenant: str, name: str,
                        budget: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """Active learning for one category: the tenant's logged items (with text, on the
    champion's encoder, not yet queued) that ``review.selection.select`` finds most worth a
    label for it (scored by the champion's head, unsure around the category's threshold, far
    from what is labelled already and from each other), queued as ``sample`` tasks. Items
    logged before the category existed are scored from their logged embedding."""
    cpol = _category(policy, tenant, name)
    if not policy.tenants[tenant].store_raw_text:
        raise CategoryError(f"tenant {tenant!r} keeps no raw text in the event log "
                            "(store_raw_text: false), so logged items cannot be shown to a "
                            "moderator; its review-band items reach the queue by themselves. "
                            "Set store_raw_text: true to sample for labelling")
    registry = ModelRegistry(settings)
    champ = registry.by_alias(CHAMPION)
    model = ModerationModel.load(registry.download(champ.version),
                                 precision=settings.serving.precision)
    key = cpol.head or f"{tenant}/{name}"
    if key not in model.heads.index:
        raise CategoryError(f"@champion v{champ.version} has no head {key!r}")
    fingerprint = str(model.encoder.identity["fingerprint"])
    log = EventLog(settings.database_url)
    try:
        events = [e for e in log.read(tenant=tenant) if e.text]
    finally:
        log.close()
    of = fingerprints(registry)
    events = [e for e in events if e.embedding is not None and e.modality != "image"
              and of(e.model_version) == fingerprint]
    queue = ReviewQueue(settings.database_url)
    store = LabelStore(settings.database_url)
    try:
        queued = queue.known_items(tenant, [e.item_id for e in events])
        events = [e for e in events if e.item_id not in queued]
        if not events:
            return []
        emb = np.stack([e.embedding for e in events if e.embedding is not None])
        scores = model.heads.score(emb)[:, model.heads.index[key]]
        done = [r.text for r in store.aggregated(tenants=[tenant]) if r.category == name]
        cache = EmbeddingCache(settings.database_url, model.encoder)
        try:
            labelled = cache.embed(done)[0] if done else None
        finally:
            cache.close()
        thr = cpol.review_threshold if cpol.review_threshold is not None else \
            cpol.block_threshold
        picks = rank_for_labelling(emb, scores, name, 0.5 if thr is None else thr, budget,
                                   labelled=labelled, n_labels=len(done), seed=seed)
        items, out = [], []
        for p in picks:
            e = events[p.index]
            items.append(ReviewItem(
                tenant=tenant, item_id=e.item_id, text=e.text, text_sha256=e.text_sha256,
                session_id=e.session_id, user_id=e.user_id, source="sample",
                scores={**e.scores, name: round(float(scores[p.index]), 6)}, keyword_hits=[],
                decision=e.decision, model_version=e.model_version,
                policy_version=e.policy_version, ts=e.ts, language=e.language))
            out.append({"tenant": tenant, "item_id": e.item_id, "value": round(p.score, 4),
                        "why": p.reasons})
        ReviewService(queue, lambda: policy, text_key=text_key(settings)).intake_decisions(
            items)
        return out
    finally:
        queue.close()
        store.close()
