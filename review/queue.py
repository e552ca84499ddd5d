"""The human-review queue: tasks of items, leased labelling slots, and the labels moderators give.

A task is one session of one tenant (its review items, user reports and session events), or one
item without a session. It needs ``slots`` labels from different moderators; each slot is leased
to one moderator at a time. Every state change is one transaction on SQLite (``BEGIN
IMMEDIATE``: writers queue on the file lock) or PostgreSQL (``FOR UPDATE SKIP LOCKED``: claimers
pass each other), so threads and processes may share a queue and a dying process leaves at most
a lease that expires. A submission's labels land in the one ``labels`` table (``core.labels``)
in the submission's own transaction: what retraining and drift read.

The queue is assembled from its parts: ``_intake`` (items, context, reports, events, gold,
priority), ``_claims`` (leases and submissions), this module (reading), on ``_base`` (the
engine and transactions) and ``_checks`` (argument checks).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from sqlalchemy import Connection, case, func, select

from bastion.core.store.tables import labels as labels_t
from bastion.core.store.tables import review_events as events
from bastion.core.store.tables import review_items as items
from bastion.core.store.tables import review_reports as reports
from bastion.core.store.tables import review_slots as slots
from bastion.core.store.tables import review_tasks as tasks
from bastion.review._base import LEASED, drop, item_record
from bastion.review._checks import scope
from bastion.review._claims import Claims
from bastion.review._intake import SOURCES, Intake
from bastion.review.records import (
    Claim,
    LabelIn,
    LeaseLost,
    NotFound,
    Report,
    ReviewError,
    ReviewItem,
    SessionEvent,
    Submission,
    Task,
)

__all__ = [
    "Claim",
    "LabelIn",
    "LeaseLost",
    "NotFound",
    "Report",
    "ReviewError",
    "ReviewItem",
    "ReviewQueue",
    "SOURCES",
    "SessionEvent",
    "Submission",
    "Task",
]


class ReviewQueue(Intake, Claims):
    """The review queue in the shared database (``Settings.database_url``: a SQLite file or
    PostgreSQL; ``?options=-csearch_path%3Dschema`` selects a PostgreSQL schema).

    Args:
        url: The database URL, or an engine (the caller's to dispose).
        lease_s: How long a claim holds its slot unless renewed.
        clock: Unix time source; tests inject one to expire leases without sleeping.
    """

    # -- reading ---------------------------------------------------------------------------

    def known_items(self, tenant: str, item_ids: list[str]) -> set[str]:
        """Which of these items the queue already holds (for a tenant)."""
        def run(conn: Connection) -> set[str]:
            found: set[str] = set()
            for start in range(0, len(item_ids), 500):
                found.update(conn.execute(select(items.c.item_id).where(
                    items.c.tenant == tenant,
                    items.c.item_id.in_(item_ids[start:start + 500]))).scalars().all())
            return found

        return self._read(run)

    def reporter_record(self, tenant: str, reporter: str) -> tuple[int, int]:
        """(confirmed, resolved) of a reporter's earlier reports: resolved once a moderator
        labelled the reported item, confirmed when some category's mean label is >= 0.5."""
        per_cat = (select(labels_t.c.item_id, func.avg(labels_t.c.value).label("mean"))
                   .where(labels_t.c.tenant == tenant, labels_t.c.submission_id.is_not(None))
                   .group_by(labels_t.c.item_id, labels_t.c.category).subquery())
        per_item = (select(per_cat.c.item_id, func.max(per_cat.c.mean).label("top"))
                    .group_by(per_cat.c.item_id).subquery())
        q = (select(func.count(), func.coalesce(func.sum(
                 case((per_item.c.top >= 0.5, 1), else_=0)), 0))
             .select_from(reports.join(per_item, per_item.c.item_id == reports.c.reported_item))
             .where(reports.c.tenant == tenant, reports.c.reporter == reporter))
        resolved, confirmed = self._read(lambda conn: conn.execute(q).one())
        return int(confirmed), int(resolved)

    def task(self, task_id: str, tenants: Collection[str]) -> Task:
        """The task with its items, reports, events, gold; :class:`NotFound` outside ``tenants``."""
        allowed = scope(tenants)
        found = self._read(lambda conn: self._tasks(conn, select(tasks).where(
            tasks.c.task_id == task_id, tasks.c.tenant.in_(allowed))))
        if not found:
            raise NotFound(f"no review task {task_id!r} in tenants {allowed}")
        return found[0]

    def item_media(self, task_id: str, item_id: str,
                   tenants: Collection[str]) -> tuple[str, bytes]:
        """The kept raw media (MIME type, bytes) of one item of a task; :class:`NotFound` when
        the task is outside ``tenants`` or the tenant's policy kept none."""
        allowed = scope(tenants)
        row = self._read(lambda conn: conn.execute(
            select(items.c.media_type, items.c.media_blob).where(
                items.c.task_id == task_id, items.c.item_id == item_id,
                items.c.tenant.in_(allowed))).first())
        if row is None or row.media_blob is None:
            raise NotFound(f"no kept media for item {item_id!r} of task {task_id!r} (the "
                           "tenant's policy keeps none, or it was purged)")
        return str(row.media_type or "application/octet-stream"), bytes(row.media_blob)

    def task_tenant(self, task_id: str) -> str | None:
        """The tenant a task belongs to (None for no such task): one indexed read."""
        return self._read(lambda conn: conn.execute(
            select(tasks.c.tenant).where(tasks.c.task_id == task_id)).scalar_one_or_none())

    def tasks(self, task_ids: Collection[str], tenants: Collection[str]) -> list[Task]:
        """Several tasks in one read (those outside ``tenants``, or gone, are left out)."""
        ids = list(dict.fromkeys(task_ids))
        if not ids:
            return []
        allowed = scope(tenants)
        return self._read(lambda conn: self._tasks(conn, select(tasks).where(
            tasks.c.task_id.in_(ids), tasks.c.tenant.in_(allowed))))

    def pending(self, tenants: Collection[str] | None = None, limit: int = 50) -> list[Task]:
        """Open tasks, highest priority first (all tenants when ``tenants`` is None)."""
        q = select(tasks).where(tasks.c.status == "open")
        if tenants is not None:
            q = q.where(tasks.c.tenant.in_(scope(tenants)))
        q = q.order_by(tasks.c.priority.desc(), tasks.c.created_ts, tasks.c.task_id).limit(limit)
        return self._read(lambda conn: self._tasks(conn, q))

    def _tasks(self, conn: Connection, q: Any) -> list[Task]:
        rows = conn.execute(q).all()
        ids = [r.task_id for r in rows]
        its: dict[str, list[Any]] = {i: [] for i in ids}
        reps: dict[str, list[Report]] = {i: [] for i in ids}
        evs: dict[str, list[SessionEvent]] = {i: [] for i in ids}
        # every column but the raw media (item_media reads it, one item at a time)
        cols = [c for c in items.c if c.name != "media_blob"]
        for r in conn.execute(select(*cols, items.c.media_blob.is_not(None).label("has_media"))
                              .where(items.c.task_id.in_(ids))
                              .order_by(items.c.ts, items.c.item_id)):
            its[r.task_id].append(r)
        for r in conn.execute(select(reports).where(reports.c.task_id.in_(ids))
                              .order_by(reports.c.ts, reports.c.report_id)):
            reps[r.task_id].append(Report(**drop(r._mapping, "task_id")))
        for r in conn.execute(select(events).where(events.c.task_id.in_(ids))
                              .order_by(events.c.ts, events.c.event_id)):
            evs[r.task_id].append(SessionEvent(**drop(r._mapping, "task_id")))
        return [Task(
            task_id=t.task_id, tenant=t.tenant, group_key=t.group_key, priority=t.priority,
            reasons=json.loads(t.reasons), slots=t.slots, slots_done=t.slots_done,
            status=t.status, items=[item_record(i._mapping) for i in its[t.task_id]],
            reports=reps[t.task_id], events=evs[t.task_id],
            gold={i.item_id: json.loads(i.gold) for i in its[t.task_id] if i.gold is not None},
            created_ts=t.created_ts,
        ) for t in rows]

    def stats(self) -> dict[str, Any]:
        """Counts: tasks by status, slots by state, items, reports, events, labels, open tasks."""

        def run(conn: Connection) -> dict[str, Any]:
            now = self._clock()
            out: dict[str, Any] = {
                f"tasks_{s}": n for s, n in conn.execute(
                    select(tasks.c.status, func.count()).group_by(tasks.c.status))}
            for state, n in conn.execute(select(slots.c.state, func.count())
                                         .group_by(slots.c.state)):
                out[f"slots_{state}"] = n
            out["slots_expired"] = conn.execute(select(func.count()).select_from(slots).where(
                slots.c.state == LEASED, slots.c.leased_until <= now)).scalar_one()
            out["slots_leased"] = out.get("slots_leased", 0) - out["slots_expired"]
            for name, table in (("items", items), ("reports", reports), ("events", events)):
                out[name] = conn.execute(select(func.count()).select_from(table)).scalar_one()
            out["labels"] = conn.execute(select(func.count()).select_from(labels_t).where(
                labels_t.c.submission_id.is_not(None))).scalar_one()
            out["open_by_tenant"] = dict(conn.execute(
                select(tasks.c.tenant, func.count()).where(tasks.c.status == "open")
                .group_by(tasks.c.tenant)).tuples().all())
            for k in ("tasks_open", "tasks_done", "slots_free", "slots_leased", "slots_expired",
                      "slots_done"):
                out.setdefault(k, 0)
            return out

        return self._read(run)
