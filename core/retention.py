"""Retention: raw text, embeddings and report text older than a tenant's ``retention_days``
are purged from every store that keeps them; the rows themselves (ids, scores, decisions,
keyed digests) stay, so counts, rates and the audit of what was decided survive.

What each store keeps past the retention (``docs/architecture.md``, "Retention"):

- ``events``: ``text`` and ``embedding`` set to NULL.
- ``review_items`` of finished (``done``) tasks: ``text`` set to NULL; an open task keeps its
  text until it is reviewed (a moderator must read it).
- ``review_reports`` of finished tasks: ``text`` emptied (the column is NOT NULL).
- ``embeddings`` (the training cache, keyed by the text's SHA-256, with no tenant or time):
  the rows of every text purged above are deleted; a text that is also labelled is encoded
  again at the next retraining.
- ``label_items`` are kept: labelled text is training data, the model is rebuilt from it. An
  operator removes labels with the label store, not by age.

Each batch of rows is one short transaction, so a purge never holds the write lock long and an
interrupted purge resumes where it stopped when run again (the next pass of ``bastion up`` or
``bastion db purge``). Works on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, and_, delete, or_, select, update
from sqlalchemy.engine import URL

from bastion.core.policy import DEFAULT_RETENTION_DAYS, PolicySet
from bastion.core.store import open_store
from bastion.core.store.tables import (
    embeddings,
    events,
    review_items,
    review_reports,
    review_tasks,
)

__all__ = ["PurgeReport", "purge", "retention_days"]

_BATCH = 500  # rows per transaction (and per IN (...) list: under SQLite's old 999 limit)
DAY_S = 86400.0


@dataclass
class PurgeReport:
    """Rows whose text or embedding one :func:`purge` removed, per tenant and table."""

    cutoffs: dict[str, float] = field(default_factory=dict)  # tenant -> purged before (ts)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # tenant -> table -> rows
    cached_embeddings: int = 0  # rows deleted from the embedding cache

    def add(self, tenant: str, table: str, n: int) -> None:
        if n:
            per = self.counts.setdefault(tenant, {})
            per[table] = per.get(table, 0) + n

    @property
    def total(self) -> int:
        return sum(n for per in self.counts.values() for n in per.values())

    def summary(self) -> str:
        if not self.total and not self.cached_embeddings:
            return "Retention purge: nothing older than any tenant's retention_days"
        parts = [f"{t}: " + ", ".join(f"{n} {table}" for table, n in sorted(per.items()))
                 for t, per in sorted(self.counts.items())]
        return ("Retention purge: " + "; ".join(parts)
                + f"; {self.cached_embeddings} cached embedding(s)")


def retention_days(policy: PolicySet) -> dict[str, int]:
    """Each tenant's ``retention_days``."""
    return {t: tp.retention_days for t, tp in policy.tenants.items()}


def purge(url: str | URL | Engine, retention: Mapping[str, int] | PolicySet,
          now: float | None = None, default_days: int = DEFAULT_RETENTION_DAYS) -> PurgeReport:
    """Purge what is older than each tenant's retention.

    Args:
        url: the database (``Settings.database_url``), or an engine.
        retention: days per tenant, or the policy (its tenants' ``retention_days``).
        now: the time the ages are measured from (default: now).
        default_days: the retention of tenants the database holds but the policy no longer
            lists (a removed tenant's text is not kept forever).
    """
    days = retention_days(retention) if isinstance(retention, PolicySet) else dict(retention)
    now = time.time() if now is None else now
    engine, owned = open_store(url)
    report = PurgeReport()
    try:
        tenants = set(days) | _tenants(engine)
        for tenant in sorted(tenants):
            cutoff = now - days.get(tenant, default_days) * DAY_S
            report.cutoffs[tenant] = cutoff
            shas: set[bytes] = set()
            report.add(tenant, "events", _purge_events(engine, tenant, cutoff, shas))
            report.add(tenant, "review_items", _purge_review_items(engine, tenant, cutoff, shas))
            report.add(tenant, "review_reports", _purge_reports(engine, tenant, cutoff))
            report.cached_embeddings += _purge_cache(engine, shas)
    finally:
        if owned:
            engine.dispose()
    return report


def _tenants(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return ({r[0] for r in conn.execute(select(events.c.tenant).distinct())}
                | {r[0] for r in conn.execute(select(review_items.c.tenant).distinct())})


def _sha(text: str) -> bytes:
    # the embedding cache's key (core.embcache): the plain SHA-256 of the text
    return hashlib.sha256(text.encode("utf-8")).digest()


def _purge_events(engine: Engine, tenant: str, cutoff: float, shas: set[bytes]) -> int:
    done = 0
    where = and_(events.c.tenant == tenant, events.c.ts < cutoff,
                 or_(events.c.text.is_not(None), events.c.embedding.is_not(None)))
    while True:
        with engine.begin() as conn:
            rows = conn.execute(select(events.c.seq, events.c.text).where(where)
                                .order_by(events.c.seq).limit(_BATCH)).all()
            if not rows:
                return done
            shas.update(_sha(r.text) for r in rows if r.text is not None)
            conn.execute(update(events).where(events.c.seq.in_([r.seq for r in rows]))
                         .values(text=None, embedding=None))
            done += len(rows)


def _finished(tenant: str) -> Any:
    return select(review_tasks.c.task_id).where(review_tasks.c.tenant == tenant,
                                                review_tasks.c.status == "done")


def _purge_review_items(engine: Engine, tenant: str, cutoff: float, shas: set[bytes]) -> int:
    done = 0
    where = and_(review_items.c.tenant == tenant, review_items.c.ts < cutoff,
                 or_(review_items.c.text.is_not(None), review_items.c.media_blob.is_not(None)),
                 review_items.c.task_id.in_(_finished(tenant)))
    while True:
        with engine.begin() as conn:
            rows = conn.execute(select(review_items.c.item_id, review_items.c.text).where(where)
                                .order_by(review_items.c.item_id).limit(_BATCH)).all()
            if not rows:
                return done
            shas.update(_sha(r.text) for r in rows if r.text is not None)
            conn.execute(update(review_items).where(
                review_items.c.tenant == tenant,
                review_items.c.item_id.in_([r.item_id for r in rows])).values(
                    text=None, media_blob=None, media_type=None))
            done += len(rows)


def _purge_reports(engine: Engine, tenant: str, cutoff: float) -> int:
    done = 0
    where = and_(review_reports.c.tenant == tenant, review_reports.c.ts < cutoff,
                 review_reports.c.text != "",
                 review_reports.c.task_id.in_(_finished(tenant)))
    while True:
        with engine.begin() as conn:
            ids = [r[0] for r in conn.execute(select(review_reports.c.report_id).where(where)
                                              .order_by(review_reports.c.report_id)
                                              .limit(_BATCH))]
            if not ids:
                return done
            conn.execute(update(review_reports).where(
                review_reports.c.tenant == tenant,
                review_reports.c.report_id.in_(ids)).values(text=""))
            done += len(ids)


def _purge_cache(engine: Engine, shas: set[bytes]) -> int:
    done, todo = 0, sorted(shas)
    for i in range(0, len(todo), _BATCH):
        with engine.begin() as conn:
            done += conn.execute(delete(embeddings).where(
                embeddings.c.sha.in_(todo[i:i + _BATCH]))).rowcount or 0
    return done
