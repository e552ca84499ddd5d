"""Intake into the review queue: items (a task per session), the session's context, user
reports, session events, gold answers, and a task's priority."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update

from bastion.core.store.tables import review_events as events
from bastion.core.store.tables import review_items as items
from bastion.core.store.tables import review_reports as reports
from bastion.core.store.tables import review_slots as slots
from bastion.core.store.tables import review_tasks as tasks
from bastion.review._base import DONE, FREE, QueueBase, rowcount
from bastion.review._checks import category, name, number
from bastion.review._checks import task_id as task_id_of
from bastion.review._checks import tenant as tenant_of
from bastion.review.records import NotFound, Report, ReviewError, ReviewItem, SessionEvent

__all__ = ["Intake", "SOURCES"]

SOURCES = ("decision", "report", "event", "sample", "context")


def _group(item: ReviewItem) -> str:
    """The task an item belongs to: its session's, or one of its own."""
    return f"session:{item.session_id}" if item.session_id else f"item:{item.item_id}"


class Intake(QueueBase):
    """What comes into the queue (see :class:`~bastion.review.queue.ReviewQueue`)."""

    # -- intake ----------------------------------------------------------------------------

    def _ensure_task(self, conn: Connection, tenant: str, group_key: str) -> str:
        tid, now = task_id_of(tenant, group_key), self._clock()
        conn.execute(self._insert_ignore(tasks).values(
            task_id=tid, tenant=tenant, group_key=group_key, priority=0.0, reasons="[]",
            slots=0, slots_done=0, status="open", n_items=0, created_ts=now, updated_ts=now))
        return tid

    def _raise_slots(self, conn: Connection, tid: str, n: int, *, more: bool = False) -> None:
        """Make the task need at least ``n`` slots (``more``: ``n`` more than it has done)."""
        row = conn.execute(select(tasks.c.slots, tasks.c.slots_done)
                           .where(tasks.c.task_id == tid)).one()
        want = row.slots_done + n if more else n
        if want > row.slots:
            conn.execute(update(tasks).where(tasks.c.task_id == tid, tasks.c.slots < want)
                         .values(slots=want, status="open", updated_ts=self._clock()))
            conn.execute(self._insert_ignore(slots), [
                {"task_id": tid, "slot": i, "state": FREE} for i in range(want)])

    def add_context(self, item: ReviewItem) -> str | None:
        """Add an item to its session's task only if that task exists, without asking for more
        labels: the session's other messages, for the moderator to read. Returns the task id,
        or None when the session has no task."""
        self._check_item(item, context=True)
        return self._write(lambda conn: self._add_context(conn, item))

    def add_item(self, item: ReviewItem, *, slots: int = 1) -> str:
        """Add an item to its session's task (or a task of its own); the same item again is a no-op.

        Args:
            item: The item.
            slots: How many moderators should label the task; raising it never lowers it. A new
                item in a task already done reopens the task for ``slots`` more labels.

        Returns:
            The task id.
        """
        self._check_item(item, slots=slots)
        return self._write(lambda conn: self._add_item(conn, item, slots))

    def add_items(self, batch: list[tuple[ReviewItem, int | None]]) -> list[str | None]:
        """Many :meth:`add_item` (slots given) and :meth:`add_context` (slots ``None``) calls in
        one transaction, with the same result as making them in order: what serving's intake
        writes per drained batch. Set-based, so a batch costs a fixed handful of statements
        (reads of the items and tasks it touches, one insert each of tasks, items and slots,
        one update each of the item counts and the slots), whatever its size. Returns each
        one's task id."""
        for item, n in batch:
            self._check_item(item, slots=n, context=n is None)
        if not batch:
            return []
        return self._write(lambda conn: self._add_batch(conn, batch))

    def _add_batch(self, conn: Connection,
                   batch: list[tuple[ReviewItem, int | None]]) -> list[str | None]:
        now = self._clock()
        keys = list(dict.fromkeys((i.tenant, i.item_id) for i, _ in batch))
        queued: dict[tuple[str, str], str] = {}  # (tenant, item_id) -> its task, once queued
        for tenant in {t for t, _ in keys}:
            ids = [i for t, i in keys if t == tenant]
            queued.update(((tenant, r.item_id), r.task_id) for r in conn.execute(
                select(items.c.item_id, items.c.task_id)
                .where(items.c.tenant == tenant, items.c.item_id.in_(ids))))
        wanted = {task_id_of(i.tenant, _group(i)) for i, n in batch
                  if n is not None or i.session_id}  # a context item's is its session's
        state = {r.task_id: [r.slots, r.slots_done, r.status] for r in conn.execute(
            select(tasks.c.task_id, tasks.c.slots, tasks.c.slots_done, tasks.c.status)
            .where(tasks.c.task_id.in_(wanted)))}
        new_tasks: list[tuple[str, str, str]] = []  # (task, tenant, group) made by this batch
        # the calls in order, on the tasks' state as it would be after each one
        out: list[str | None] = []
        rows: list[dict[str, Any]] = []
        added: dict[str, int] = {}
        raised: dict[str, int] = {}
        for item, n in batch:
            key = (item.tenant, item.item_id)
            if n is None:  # context: joins its session's task only if there is one
                tid = (task_id_of(item.tenant, f"session:{item.session_id}")
                       if item.session_id else None)
                if tid is None or tid not in state:
                    out.append(None)
                    continue
                if key not in queued:
                    queued[key] = tid
                    rows.append(self._item_row(item, tid, "context"))
                    added[tid] = added.get(tid, 0) + 1
                out.append(tid)
                continue
            group = _group(item)
            tid = task_id_of(item.tenant, group)
            if tid not in state:
                new_tasks.append((tid, item.tenant, group))
                state[tid] = [0, 0, "open"]
            more = False
            if key in queued:  # already queued, perhaps in another task: that one is its task
                tid = queued[key]
                if tid not in state:
                    (row,) = conn.execute(select(tasks.c.slots, tasks.c.slots_done,
                                                 tasks.c.status).where(tasks.c.task_id == tid))
                    state[tid] = [row.slots, row.slots_done, row.status]
            else:
                queued[key] = tid
                rows.append(self._item_row(item, tid, item.source))
                added[tid] = added.get(tid, 0) + 1
                more = state[tid][2] == DONE
            slots_now, done, _ = state[tid]
            want = done + n if more else n
            if want > slots_now:
                state[tid][0], state[tid][2] = want, "open"
                raised[tid] = want
            out.append(tid)
        if new_tasks:
            conn.execute(self._insert_ignore(tasks), [dict(
                task_id=tid, tenant=tenant, group_key=group, priority=0.0,
                reasons="[]", slots=0, slots_done=0, status="open", n_items=0,
                created_ts=now, updated_ts=now) for tid, tenant, group in new_tasks])
        if rows:
            conn.execute(self._insert_ignore(items), rows)
        if added:
            conn.execute(update(tasks).where(tasks.c.task_id == bindparam("tid"))
                         .values(n_items=tasks.c.n_items + bindparam("added")),
                         [{"tid": t, "added": k} for t, k in added.items()])
        if raised:
            conn.execute(update(tasks).where(tasks.c.task_id == bindparam("tid"),
                                             tasks.c.slots < bindparam("want"))
                         .values(slots=bindparam("want"), status="open", updated_ts=now),
                         [{"tid": t, "want": w} for t, w in raised.items()])
            conn.execute(self._insert_ignore(slots), [
                {"task_id": t, "slot": i, "state": FREE}
                for t, w in raised.items() for i in range(w)])
        return out

    def _check_item(self, item: ReviewItem, *, slots: int | None = None,
                    context: bool = False) -> None:
        tenant_of(item.tenant)
        name(item.item_id, "item_id")
        if context:
            return
        if item.source not in SOURCES:
            raise ReviewError(f"item {item.item_id!r}: source {item.source!r} is not one of "
                              f"{', '.join(SOURCES)}")
        if isinstance(slots, bool) or not isinstance(slots, int) or not 1 <= slots <= 20:
            raise ReviewError(f"slots must be an integer in [1, 20], got {slots!r}")

    def _item_row(self, item: ReviewItem, tid: str, source: str) -> dict[str, Any]:
        return dict(
            tenant=item.tenant, item_id=item.item_id, task_id=tid, text=item.text,
            text_sha256=item.text_sha256, session_id=item.session_id, user_id=item.user_id,
            source=source, scores=json.dumps(item.scores),
            keyword_hits=json.dumps(item.keyword_hits), decision=item.decision,
            model_version=item.model_version, policy_version=item.policy_version,
            ts=item.ts, gold=None, modality=item.modality,
            media=None if item.media is None else json.dumps(item.media),
            media_type=item.media_type if item.media_blob is not None else None,
            media_blob=item.media_blob, language=item.language)

    def _add_context(self, conn: Connection, item: ReviewItem) -> str | None:
        if not item.session_id:
            return None
        tid = task_id_of(item.tenant, f"session:{item.session_id}")
        if conn.execute(select(tasks.c.task_id).where(tasks.c.task_id == tid)).first() is None:
            return None
        added = rowcount(conn.execute(self._insert_ignore(items).values(
            **self._item_row(item, tid, "context"))))
        if added:
            conn.execute(update(tasks).where(tasks.c.task_id == tid)
                         .values(n_items=tasks.c.n_items + 1))
        return tid

    def _add_item(self, conn: Connection, item: ReviewItem, slots: int) -> str:
        tid = self._ensure_task(conn, item.tenant, _group(item))
        added = rowcount(conn.execute(self._insert_ignore(items).values(
            **self._item_row(item, tid, item.source))))
        if not added:  # already queued, perhaps in another task: that one is its task
            tid = conn.execute(select(items.c.task_id).where(
                items.c.tenant == item.tenant, items.c.item_id == item.item_id)).scalar_one()
            self._raise_slots(conn, tid, slots)
            return str(tid)
        conn.execute(update(tasks).where(tasks.c.task_id == tid)
                     .values(n_items=tasks.c.n_items + 1))
        status = conn.execute(select(tasks.c.status)
                              .where(tasks.c.task_id == tid)).scalar_one()
        self._raise_slots(conn, tid, slots, more=status == DONE)
        return tid

    def add_report(self, report: Report) -> str | None:
        """Attach a user report to the task it is about; the same report again is a no-op.

        The task is the reported item's, else the session's it names (made if needed), else
        the reported user's most recent one, else a task for the report alone. A report on a task
        already done reopens it for one more label.

        Returns:
            The task id.
        """
        tenant_of(report.tenant)
        name(report.report_id, "report_id")
        name(report.reporter, "reporter")

        def run(conn: Connection) -> str:
            old = conn.execute(select(reports.c.task_id).where(
                reports.c.tenant == report.tenant,
                reports.c.report_id == report.report_id)).scalar_one_or_none()
            if old is not None:
                return str(old)
            tid: str | None = None
            if report.reported_item:
                tid = conn.execute(select(items.c.task_id).where(
                    items.c.tenant == report.tenant,
                    items.c.item_id == report.reported_item)).scalar_one_or_none()
            if tid is None and report.session_id:
                tid = self._ensure_task(conn, report.tenant, f"session:{report.session_id}")
            if tid is None and report.reported_user:
                tid = conn.execute(select(items.c.task_id).where(
                    items.c.tenant == report.tenant, items.c.user_id == report.reported_user)
                    .order_by(items.c.ts.desc()).limit(1)).scalar_one_or_none()
            if tid is None:
                tid = self._ensure_task(conn, report.tenant, f"report:{report.report_id}")
            conn.execute(self._insert_ignore(reports).values(
                tenant=report.tenant, report_id=report.report_id, task_id=tid,
                reporter=report.reporter, reported_user=report.reported_user,
                reported_item=report.reported_item, session_id=report.session_id,
                reason=report.reason, text=report.text, ts=report.ts))
            self._raise_slots(conn, tid, 1, more=conn.execute(
                select(tasks.c.status).where(tasks.c.task_id == tid)).scalar_one() == DONE)
            return tid

        return self._write(run)

    def add_event(self, event: SessionEvent) -> str:
        """Attach a session event to its session's task (made if needed); idempotent by id."""
        tenant_of(event.tenant)
        name(event.event_id, "event_id")
        name(event.session_id, "session_id")
        name(event.kind, "event kind")

        def run(conn: Connection) -> str:
            tid = self._ensure_task(conn, event.tenant, f"session:{event.session_id}")
            conn.execute(self._insert_ignore(events).values(
                tenant=event.tenant, event_id=event.event_id, task_id=tid,
                session_id=event.session_id, user_id=event.user_id, kind=event.kind,
                target_user=event.target_user, ts=event.ts))
            self._raise_slots(conn, tid, 1)
            return tid

        return self._write(run)

    def set_priority(self, task_id: str, priority: float, reasons: list[dict[str, Any]]) -> None:
        """Set a task's priority (higher is claimed first) and the reasons behind it."""
        self.set_priorities({task_id: (priority, reasons)})

    def set_priorities(self, ranked: dict[str, tuple[float, list[dict[str, Any]]]]) -> None:
        """:meth:`set_priority` for many tasks, in one transaction."""
        rows = [(tid, number(p, "priority", -1e12, 1e12), json.dumps(r))
                for tid, (p, r) in ranked.items()]

        def run(conn: Connection) -> None:
            ids = [tid for tid, _, _ in rows]
            found = set(conn.execute(select(tasks.c.task_id)
                                     .where(tasks.c.task_id.in_(ids))).scalars())
            for tid in ids:
                if tid not in found:
                    raise NotFound(f"no review task {tid!r}")
            conn.execute(update(tasks).where(tasks.c.task_id == bindparam("tid"))
                         .values(priority=bindparam("p"), reasons=bindparam("why"),
                                 updated_ts=self._clock()),
                         [{"tid": tid, "p": p, "why": text} for tid, p, text in rows])

        self._write(run)

    def set_gold(self, tenant: str, item_id: str, labels: dict[str, float]) -> None:
        """Record the known answer of a queued item; its task gets one more slot (once)."""
        where = f"in the gold labels of item {item_id!r}"
        gold = {category(c, where): number(v, f"gold value of {c!r}", 0.0, 1.0)
                for c, v in labels.items()}

        def run(conn: Connection) -> None:
            tid = conn.execute(select(items.c.task_id).where(
                items.c.tenant == tenant, items.c.item_id == item_id)).scalar_one_or_none()
            if tid is None:
                raise NotFound(f"no queued item {item_id!r} of tenant {tenant!r}; add_item it "
                               "before giving its gold labels")
            had_gold = conn.execute(select(func.count()).select_from(items).where(
                items.c.task_id == tid, items.c.gold.is_not(None))).scalar_one()
            conn.execute(update(items).where(items.c.tenant == tenant,
                                             items.c.item_id == item_id)
                         .values(gold=json.dumps(gold)))
            if not had_gold:
                slots_now = conn.execute(select(tasks.c.slots)
                                         .where(tasks.c.task_id == tid)).scalar_one()
                self._raise_slots(conn, tid, slots_now + 1)

        self._write(run)

    def gold_items(self) -> dict[tuple[str, str], dict[str, float]]:
        """(tenant, item_id) -> known labels, of every item given gold answers."""
        rows = self._read(lambda conn: conn.execute(
            select(items.c.tenant, items.c.item_id, items.c.gold)
            .where(items.c.gold.is_not(None))).all())
        return {(r.tenant, r.item_id): json.loads(r.gold) for r in rows}
