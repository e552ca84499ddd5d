"""The event log: every decision, with its scores and embedding, in the shared database.

Writes happen on a background thread in batches, so the request path only enqueues. Raw text
is kept only when the tenant's policy allows (``store_raw_text``); its keyed digest always
(``text_sha256`` holds an HMAC-SHA256 under the install's secret, see ``core.textkey``: the
column keeps its name so that nothing reading it has to change).
Later stages (review, drift, training) read it with :meth:`EventLog.read`, as the same
:class:`DecisionEvent` records serving wrote.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import DataError, IntegrityError

from bastion.core.store import READ, open_store
from bastion.core.store.counts import add_event_counts
from bastion.core.store.tables import events
from bastion.core.textkey import text_digest
from bastion.core.writer import BackgroundWriter

__all__ = ["DecisionEvent", "EventLog", "EventWriter", "text_digest"]


@dataclass(frozen=True)
class DecisionEvent:
    """One decision: what serving writes and what :meth:`EventLog.read` gives back."""

    ts: float
    request_id: str
    tenant: str
    item_id: str
    session_id: str | None
    user_id: str | None
    text: str | None
    text_sha256: str  # the keyed digest: core.textkey.text_digest
    text_len: int
    decision: str
    scores: dict[str, float]
    reasons: list[dict[str, Any]]
    model_version: str
    policy_version: str
    embedding: np.ndarray | None  # float16 on disk, float32 when read back
    seq: int = 0  # arrival order, given by the log; 0 before it is appended
    # "text", "image" or "audio". For media, ``text`` is what the item showed or said (only
    # where store_raw_text), ``embedding`` the image model's (image) or the text encoder's
    # (audio transcript), ``media`` its facts (format, size, duration, PDQ hash, acoustic
    # cues): never the raw media.
    modality: str = "text"
    media: dict[str, Any] | None = None
    language: str | None = None  # ISO 639-1 of its text (core.language); None: none to tell

    def row(self) -> dict[str, Any]:
        emb = None if self.embedding is None else self.embedding.astype(np.float16).tobytes()
        return {
            "ts": self.ts, "request_id": self.request_id, "tenant": self.tenant,
            "item_id": self.item_id, "session_id": self.session_id, "user_id": self.user_id,
            "text": self.text, "text_sha256": self.text_sha256, "text_len": self.text_len,
            "decision": self.decision, "scores": json.dumps(self.scores),
            "reasons": json.dumps(self.reasons), "model_version": self.model_version,
            "policy_version": self.policy_version, "embedding": emb,
            "category": self.category, "modality": self.modality,
            "media": None if self.media is None else json.dumps(self.media),
            "language": self.language,
        }

    @property
    def category(self) -> str | None:
        """The category that decided a block or review: the first reason's (reasons come
        most severe first); None for an allow."""
        if self.decision == "allow" or not self.reasons:
            return None
        cat = self.reasons[0].get("category")
        return str(cat)[:64] if cat else None


def _event(m: Any) -> DecisionEvent:
    blob = m["embedding"]
    return DecisionEvent(
        ts=m["ts"], request_id=m["request_id"], tenant=m["tenant"], item_id=m["item_id"],
        session_id=m["session_id"], user_id=m["user_id"], text=m["text"],
        text_sha256=m["text_sha256"], text_len=m["text_len"], decision=m["decision"],
        scores=json.loads(m["scores"]), reasons=json.loads(m["reasons"]),
        model_version=m["model_version"], policy_version=m["policy_version"],
        embedding=None if blob is None else np.frombuffer(blob, dtype=np.float16).astype(
            np.float32),
        seq=m["seq"], modality=m["modality"] or "text",
        media=None if m["media"] is None else json.loads(m["media"]),
        language=m.get("language"),
    )


class EventLog:
    """Reader/writer of the decision log in the database at ``url`` (the platform's
    ``Settings.database_url``, or an engine); several processes and machines may share it."""

    def __init__(self, url: str | URL | Engine) -> None:
        self._engine, self._owned = open_store(url)

    def append(self, batch: list[DecisionEvent]) -> None:
        if not batch:
            return
        rows = [e.row() for e in batch]
        with self._engine.begin() as conn:  # the events and their counts, together
            conn.execute(insert(events), rows)
            add_event_counts(conn, rows)

    def count(self, tenant: str | None = None) -> int:
        q = select(func.count()).select_from(events)
        if tenant is not None:
            q = q.where(events.c.tenant == tenant)
        with self._engine.connect().execution_options(**READ) as conn, conn.begin():
            return int(conn.execute(q).scalar_one())

    def read(
        self, tenant: str | None = None, since: float | None = None, limit: int | None = None,
        *, until: float | None = None, modality: str | None = None,
    ) -> Iterator[DecisionEvent]:
        """Decisions in arrival order, embeddings as float32 arrays; ``since`` inclusive,
        ``until`` exclusive; ``modality``: only text, image or audio items."""
        q = select(events)
        if tenant is not None:
            q = q.where(events.c.tenant == tenant)
        if since is not None:
            q = q.where(events.c.ts >= since)
        if until is not None:
            q = q.where(events.c.ts < until)
        if modality is not None:
            q = q.where(events.c.modality == modality)
        q = q.order_by(events.c.seq)
        if limit:
            q = q.limit(int(limit))
        with self._engine.connect().execution_options(**READ) as conn, conn.begin():
            rows = conn.execute(q).mappings().all()
        for m in rows:
            yield _event(m)

    def latest(self, keys: Iterable[tuple[str, str]], modality: str | None = None,
               chunk: int = 500) -> dict[tuple[str, str], DecisionEvent]:
        """The last decision logged for each (tenant, item_id) of ``keys`` that has one
        (``modality``: only such items): what training joins labels with, e.g. an image's
        embedding for the image heads."""
        by_tenant: dict[str, list[str]] = {}
        for tenant, item_id in keys:
            by_tenant.setdefault(tenant, []).append(item_id)
        out: dict[tuple[str, str], DecisionEvent] = {}
        with self._engine.connect().execution_options(**READ) as conn, conn.begin():
            for tenant, ids in by_tenant.items():
                for i in range(0, len(ids), chunk):
                    q = select(events).where(events.c.tenant == tenant,
                                             events.c.item_id.in_(ids[i:i + chunk]))
                    if modality is not None:
                        q = q.where(events.c.modality == modality)
                    for m in conn.execute(q.order_by(events.c.seq)).mappings():
                        out[(tenant, m["item_id"])] = _event(m)
        return out

    def reset(self) -> None:
        """Drop pooled connections (after a failure: a store that comes back is reached anew)."""
        self._engine.dispose()

    def close(self) -> None:
        if self._owned:
            self._engine.dispose()


class EventWriter(BackgroundWriter[DecisionEvent]):
    """Batches events off the request path (``core.writer``): a failing store is retried until
    it is back, a full queue refuses new events (:class:`~bastion.core.writer.WriterFull`)
    rather than drop them, and ``close()`` flushes everything accepted."""

    def __init__(self, log: EventLog, flush_every_s: float = 0.2, max_batch: int = 512,
                 capacity: int = 100_000, max_backoff_s: float = 5.0) -> None:
        self.log = log
        super().__init__("event log", log.append, permanent=_invalid_data, reset=log.reset,
                         capacity=capacity, flush_every_s=flush_every_s, max_batch=max_batch,
                         max_backoff_s=max_backoff_s)


def _invalid_data(err: BaseException) -> bool:
    """An error about the rows themselves, which no retry fixes (any other is the store's)."""
    return isinstance(err, (IntegrityError, DataError))
