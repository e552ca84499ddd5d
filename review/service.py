"""The review loop's operations over one queue: intake, priority, claims, submissions, and the
labels handed on to retraining.

Serving calls :meth:`ReviewService.intake_decisions` for every decision in a review band (a
background thread, off the request path), :meth:`report` and :meth:`event` for user reports
and session events; moderators claim and submit through the API. Every intake re-ranks the
task (``review.priority``). A submission's labels go into the one label table in the
submission's own transaction (``ReviewQueue.submit``), where retraining and drift read them.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Collection
from dataclasses import asdict
from typing import Any

import numpy as np

from bastion.core.aggregation import dawid_skene
from bastion.core.decision import written_flag_thresholds
from bastion.core.events import EventLog
from bastion.core.labels import LabelStore, item_key
from bastion.core.policy import PolicySet
from bastion.core.writer import BackgroundWriter
from bastion.review.priority import task_priority
from bastion.review.queue import ReviewQueue
from bastion.review.records import (
    Claim,
    LabelIn,
    NotFound,
    Report,
    ReviewError,
    ReviewItem,
    SessionEvent,
    Submission,
    Task,
    media_without_words,
)
from bastion.review.selection import select

__all__ = ["ReviewService", "IntakeWriter", "task_view"]



def task_view(task: Task, *, show_gold: bool = False) -> dict[str, Any]:
    """What a moderator sees of a task (gold answers only for ML ops: they measure moderators)."""
    out = asdict(task)
    if not show_gold:
        out.pop("gold")
    return out


class ReviewService:
    """Intake, ranking, claims and label hand-off for one review queue."""

    def __init__(self, queue: ReviewQueue, policy: Callable[[], PolicySet],
                 thresholds: Callable[[str], dict[str, float]] | None = None,
                 text_key: bytes | None = None) -> None:
        """
        Args:
            queue: the review queue.
            policy: returns the current policy (it may be reloaded while serving).
            thresholds: a tenant's block thresholds per category as serving resolved them.
            text_key: the install's text digest key (``core.textkey``), for gold items.
        """
        self.queue = queue
        self._policy = policy
        self.labels = LabelStore(queue.engine, text_key)  # the queue writes labels there on submit
        self._thresholds = thresholds or (lambda _t: {})

    def policy(self) -> PolicySet:
        """The policy as it is now (it may be reloaded while serving)."""
        return self._policy()

    # -- intake ------------------------------------------------------------------------------
    def _slots(self, tenant: str, item: ReviewItem) -> int:
        pol = self._policy().tenants[tenant]
        rp = pol.review
        th = self._thresholds(tenant)
        for name, cat in pol.categories.items():
            t = th.get(name, cat.block_threshold)
            s = item.scores.get(name)
            if t is not None and s is not None and abs(s - t) <= rp.uncertain_margin:
                return max(rp.redundancy, rp.uncertain_redundancy)
        return rp.redundancy

    def intake_decisions(self, items: list[ReviewItem]) -> list[str]:
        """Queue items whose decision sent them to review (a task per session); the other items
        of a session (``source="context"``) join that session's task when it has one, so the
        moderator reads the session, not fragments. Returns the task ids touched.

        The whole batch is one write transaction and one re-ranking pass (a read and a write),
        whatever its size: serving's intake drains many requests into one batch, so the
        queue costs the request path a few statements per item (docs/benchmarks.md)."""
        review = [i for i in items if i.source != "context"]
        context = [i for i in items if i.source == "context"]
        policy = self._policy()
        batch: list[tuple[ReviewItem, int | None]] = []
        for item in review + context:  # review items first: they make the session's task
            pol = policy.tenants.get(item.tenant)
            if pol is None:
                continue
            if not pol.review.keep_text:  # and none of a clip's words or an image's text
                item = ReviewItem(**{**asdict(item), "text": None,
                                     "media": media_without_words(item.media)})
            batch.append((item, None if item.source == "context"
                          else self._slots(item.tenant, item)))
        touched = [t for t in (self.queue.add_items(batch) if batch else []) if t is not None]
        self.rerank_many(touched)
        return touched

    def report(self, report: Report) -> str:
        tid = self.queue.add_report(report) or ""
        self.rerank(tid)
        return tid

    def event(self, event: SessionEvent) -> str:
        tid = self.queue.add_event(event)
        self.rerank(tid)
        return tid

    def rerank(self, task_id: str) -> float:
        """Recompute a task's priority and reasons from everything it holds now."""
        ranked = self.rerank_many([task_id])
        if task_id not in ranked:
            raise NotFound(f"no review task {task_id!r} in the policy's tenants")
        return ranked[task_id]

    def rerank_many(self, task_ids: Collection[str]) -> dict[str, float]:
        """:meth:`rerank` for several tasks: one read, one write. Returns their priorities."""
        policy = self._policy()
        ranked: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        for task in self.queue.tasks(task_ids, list(policy.tenants)):
            tpol = policy.tenants[task.tenant]
            ranked[task.task_id] = task_priority(
                task.items, task.reports, task.events, tpol,
                reporter_record=functools.partial(self.queue.reporter_record, task.tenant),
                thresholds=self._thresholds(task.tenant))
        if ranked:
            self.queue.set_priorities(ranked)
        return {tid: p for tid, (p, _) in ranked.items()}

    # -- moderators --------------------------------------------------------------------------
    def claim(self, moderator: str, tenants: Collection[str]) -> tuple[Claim, Task] | None:
        """The most urgent task with a free slot in the moderator's tenants, leased to them."""
        policy = self._policy()
        scope = [t for t in tenants if t in policy.tenants]
        if not scope:
            return None
        lease = min(policy.tenants[t].review.lease_s for t in scope)
        claim = self.queue.claim(moderator, scope, lease_s=lease)
        if claim is None:
            return None
        return claim, self.queue.task(claim.task_id, scope)

    def submit(self, token: str, submission_id: str, labels: list[LabelIn]) -> Submission:
        return self.queue.submit(token, submission_id, labels)

    # -- calibration and active learning ------------------------------------------------------
    def reviewed(self, model_version: str | None = None
                 ) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
        """(tenant, category) -> (model scores, Dawid-Skene labels) of reviewed items, for the
        policy's tenants and categories (see ``LabelStore.reviewed``)."""
        policy = self._policy()
        return {k: v for k, v in self.labels.reviewed(model_version).items()
                if k[0] in policy.tenants and k[1] in policy.tenants[k[0]].categories}

    def add_gold(self, tenant: str, item_id: str, text: str, labels: dict[str, float],
                 session_id: str | None = None) -> str:
        """Queue an item whose answer is known: it measures the moderators who label it, and
        its known labels go to the label store as annotator ``gold``."""
        item = ReviewItem(tenant=tenant, item_id=item_id, text=text,
                          text_sha256=self.labels.digest(text), session_id=session_id, user_id=None,
                          source="sample", scores={}, keyword_hits=[], decision=None,
                          model_version=None, policy_version=None, ts=time.time())
        tid = self.queue.add_item(item, slots=self._policy().tenants[tenant].review.redundancy)
        self.queue.set_gold(tenant, item_id, labels)
        self.rerank(tid)
        self.labels.add_item(tenant=tenant, item_id=item_id, text=text, session_id=session_id,
                             source="gold")
        self.labels.add_labels(tenant, item_id, "gold", labels)
        return tid

    def moderators(self, tenants: Collection[str] | None = None) -> list[dict[str, Any]]:
        """Each moderator's estimated reliability per category (Dawid-Skene over every label
        in the queue, or ``tenants``' only; gold answers clamped), with their accuracy on gold
        items."""
        votes = self.labels.votes(tenants, reviewed=True)
        gold = {(item_key(t, i), c): v for (t, i), labels in self.queue.gold_items().items()
                for c, v in labels.items() if tenants is None or t in tenants}
        if not votes:
            return []
        result = dawid_skene(votes, gold={k: v for k, v in gold.items() if k in votes})
        return [asdict(r) for r in sorted(result.reliability.values(),
                                          key=lambda r: (r.annotator, r.category))]

    def agreement(self, tenants: Collection[str]) -> dict[str, dict[str, float | int]]:
        """Each moderator's agreement with their peers: over the (item, category) pairs that
        others labelled too, the share where their label (>= 0.5) matches the majority of the
        others' (ties left out)."""
        agree: dict[str, list[int]] = {}
        for votes in self.labels.votes(tenants, reviewed=True).values():
            if len(votes) < 2:
                continue
            for v in votes:
                others = [o.value >= 0.5 for o in votes if o.annotator != v.annotator]
                yes = sum(others)
                if not others or yes * 2 == len(others):
                    continue
                hit = (v.value >= 0.5) == (yes * 2 > len(others))
                tally = agree.setdefault(v.annotator, [0, 0])
                tally[0] += int(hit)
                tally[1] += 1
        return {a: {"agreement": round(k / n, 4), "pairs": n} for a, (k, n) in agree.items()}

    def select_for_labelling(self, budget: int, *,
                             tenants: list[str] | None = None, since: float | None = None,
                             ) -> list[dict[str, Any]]:
        """Active learning: pick up to ``budget`` logged decisions per tenant that teach the
        model most (``review.selection``: uncertain, rare categories first, spread out in
        embedding space), and queue them as ``sample`` tasks. Only decisions whose text the
        event log kept (``store_raw_text``) can be labelled."""
        policy = self._policy()
        log_ = EventLog(self.queue.engine)
        picked: list[dict[str, Any]] = []
        label_counts = self._label_counts()
        try:
            for tenant in tenants or sorted(policy.tenants):
                tpol = policy.tenants[tenant]
                cats = list(tpol.categories)
                rows = [r for r in log_.read(tenant=tenant, since=since)
                        if r.text and r.embedding is not None]
                queued = self.queue.known_items(tenant, [r.item_id for r in rows])
                rows = [r for r in rows if r.item_id not in queued]
                if not rows:
                    continue
                emb = np.stack([r.embedding for r in rows if r.embedding is not None]).astype(
                    np.float32)
                scores = np.array([[r.scores.get(c, 0.0) for c in cats] for r in rows])
                # where serving acts on a score: resolved for the serving model if known,
                # else as the policy file writes it (0.5 only for a category with neither)
                th = {c: min(max(t, 1e-3), 1 - 1e-3)
                      for c, t in {**{c: 0.5 for c in cats}, **written_flag_thresholds(tpol),
                                   **self._thresholds(tenant)}.items() if c in cats}
                picks = select(emb, scores, cats, budget, thresholds=th,
                               label_counts={c: label_counts.get(c, 0) for c in cats})
                items = []
                for p in picks:
                    r = rows[p.index]
                    items.append(ReviewItem(
                        tenant=tenant, item_id=r.item_id, text=r.text,
                        text_sha256=r.text_sha256, session_id=r.session_id,
                        user_id=r.user_id, source="sample", scores=r.scores,
                        keyword_hits=[], decision=r.decision,
                        model_version=r.model_version, policy_version=r.policy_version,
                        ts=r.ts))
                    picked.append({"tenant": tenant, "item_id": r.item_id,
                                   "value": round(p.score, 4), "why": p.reasons})
                self.intake_decisions(items)
        finally:
            log_.close()
        return picked

    def _label_counts(self) -> dict[str, int]:
        return dict(self.labels.stats()["by_category"])


class IntakeWriter(BackgroundWriter[ReviewItem]):
    """Queues review-band decisions from the request path on a background thread, like the
    event log's writer (``core.writer``): a failing store is retried until it is back, a full
    queue refuses new items rather than drop them, and ``close()`` flushes what it accepted.
    Only a :class:`ReviewError` (the items themselves are invalid) leaves items out, logged."""

    def __init__(self, service: ReviewService, retry_s: float = 1.0, capacity: int = 100_000,
                 flush_every_s: float = 0.2, linger_s: float = 0.5) -> None:
        self.service = service
        super().__init__("review intake", self._intake, permanent=_invalid_items,
                         reset=service.queue.engine.dispose, capacity=capacity,
                         flush_every_s=flush_every_s, max_batch=256, linger_s=linger_s,
                         max_backoff_s=retry_s * 5)

    def _intake(self, items: list[ReviewItem]) -> None:
        self.service.intake_decisions(items)


def _invalid_items(err: BaseException) -> bool:
    return isinstance(err, ReviewError)
