"""The human-review queue: tasks of items, leased labelling slots, and the labels moderators give.

A task is one session of one tenant (its review items, user reports and session events), or one
item without a session. It needs ``slots`` labels from different moderators; each slot is leased
to one moderator at a time. Every state change is one transaction on SQLite (``BEGIN
IMMEDIATE``: writers queue on the file lock) or PostgreSQL (``FOR UPDATE SKIP LOCKED``: claimers
pass each other), so threads and processes may share a queue and a dying process leaves at most
a lease that expires. A submission's labels land in the one ``labels`` table (``core.labels``)
in the submission's own transaction: what retraining and drift read.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    Insert,
    Table,
    and_,
    case,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.expression import ColumnElement

from bastion.core.labels import put_item, put_label
from bastion.core.policy import SLUG
from bastion.core.store import READ, insert_ignore, is_postgres, open_store
from bastion.core.store.tables import labels as labels_t  # `labels` is submit's argument
from bastion.core.store.tables import review_claims as claims
from bastion.core.store.tables import review_events as events
from bastion.core.store.tables import review_items as items
from bastion.core.store.tables import review_reports as reports
from bastion.core.store.tables import review_slots as slots
from bastion.core.store.tables import review_tasks as tasks
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
    "SessionEvent",
    "Submission",
    "Task",
]


SOURCES = ("decision", "report", "event", "sample", "context")
_FREE, _LEASED, _DONE = "free", "leased", "done"
_RETRIES = 8  # a unique-key race (same moderator in two threads) or a PostgreSQL deadlock
_PG_RETRY_CODES = {"23505", "40001", "40P01"}  # unique_violation, serialization, deadlock
T = TypeVar("T")


class _Retry(Exception):
    """Internal: roll back and run the transaction again."""


def _task_id(tenant: str, group_key: str) -> str:
    return hashlib.sha256(f"{tenant}\x00{group_key}".encode()).hexdigest()[:16]


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 256:
        raise ReviewError(f"{what} must be a non-empty string of at most 256 characters, "
                          f"got {value!r}")
    return value


def _tenant(value: object) -> str:
    if not isinstance(value, str) or not re.match(SLUG, value):
        raise ReviewError(f"tenant {value!r} is not a lower-case slug (letters, digits, _ or -; "
                          "at most 63 characters), as in the policy file")
    return value


def _number(value: object, what: str, lo: float, hi: float, lo_open: bool = False) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        x = float(value)
        if (lo < x if lo_open else lo <= x) and x <= hi:
            return x
    rng = f"({lo:g}, {hi:g}]" if lo_open else f"[{lo:g}, {hi:g}]"
    raise ReviewError(f"{what} must be a number in {rng}, got {value!r}")


def _category(value: object, where: str) -> str:
    if not isinstance(value, str) or not re.match(SLUG, value):
        raise ReviewError(f"category {value!r} {where} is not a slug of the policy "
                          "(lower-case letters, digits, _ or -; at most 63 characters)")
    return value


def _scope(tenants: Collection[str]) -> list[str]:
    if isinstance(tenants, str):  # a bare "acme" would otherwise mean {"a", "c", "m", "e"}
        raise ReviewError(f"tenants must be a collection of tenant names, got the string "
                          f"{tenants!r}; pass [{tenants!r}]")
    return sorted(set(tenants))


def _item(m: Any) -> ReviewItem:
    return ReviewItem(
        tenant=m["tenant"], item_id=m["item_id"], text=m["text"], text_sha256=m["text_sha256"],
        session_id=m["session_id"], user_id=m["user_id"], source=m["source"],
        scores=json.loads(m["scores"]), keyword_hits=json.loads(m["keyword_hits"]),
        decision=m["decision"], model_version=m["model_version"],
        policy_version=m["policy_version"], ts=m["ts"])


class ReviewQueue:
    """The review queue in the shared database (``Settings.database_url``: a SQLite file or
    PostgreSQL; ``?options=-csearch_path%3Dschema`` selects a PostgreSQL schema).

    Args:
        url: The database URL, or an engine (the caller's to dispose).
        lease_s: How long a claim holds its slot unless renewed.
        clock: Unix time source; tests inject one to expire leases without sleeping.
    """

    def __init__(self, url: str | URL | Engine, *, lease_s: float = 600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.lease_s = _number(lease_s, "lease_s", 0.0, 7 * 86400.0, lo_open=True)
        self._clock = clock
        self._engine, self._owned = open_store(url)
        self._pg = is_postgres(self._engine)

    @property
    def engine(self) -> Engine:
        """The database's engine: the label store and event log beside the queue share it."""
        return self._engine

    def close(self) -> None:
        """Close the queue's database connections (when it opened them)."""
        if self._owned:
            self._engine.dispose()

    # -- transactions ----------------------------------------------------------------------

    def _write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one write transaction; retry it after a lost race, never half-apply."""
        for attempt in range(_RETRIES):
            try:
                with self._engine.connect() as conn, conn.begin():
                    return fn(conn)
            except _Retry:
                pass
            except DBAPIError as err:
                race = (getattr(err.orig, "sqlstate", None) in _PG_RETRY_CODES
                        or "UNIQUE constraint failed" in str(err.orig))
                if "database is locked" in str(err.orig):
                    raise ReviewError("review store is busy for more than 30 s: another "
                                      "process holds its write lock; try again") from err
                if not race or attempt == _RETRIES - 1:
                    raise
            time.sleep(0.002 * (attempt + 1) * (1 + secrets.randbelow(4)))
        raise ReviewError(f"review store: gave up after {_RETRIES} conflicting attempts; "
                          "try again")

    def _read(self, fn: Callable[[Connection], T]) -> T:
        with self._engine.connect() as conn:
            # one snapshot for the several SELECTs of a task listing
            conn.execution_options(**({"isolation_level": "REPEATABLE READ"} if self._pg
                                       else READ))
            with conn.begin():
                return fn(conn)

    def _insert_ignore(self, table: Table) -> Insert:
        return insert_ignore(self._engine, table)

    # -- intake ----------------------------------------------------------------------------

    def _ensure_task(self, conn: Connection, tenant: str, group_key: str) -> str:
        tid, now = _task_id(tenant, group_key), self._clock()
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
                {"task_id": tid, "slot": i, "state": _FREE} for i in range(want)])

    def add_context(self, item: ReviewItem) -> str | None:
        """Add an item to its session's task only if that task exists, without asking for more
        labels: the session's other messages, for the moderator to read. Returns the task id,
        or None when the session has no task."""
        _tenant(item.tenant)
        _name(item.item_id, "item_id")
        if not item.session_id:
            return None
        tid = _task_id(item.tenant, f"session:{item.session_id}")

        def run(conn: Connection) -> str | None:
            if conn.execute(select(tasks.c.task_id).where(tasks.c.task_id == tid)).first() \
                    is None:
                return None
            added = _rowcount(conn.execute(self._insert_ignore(items).values(
                tenant=item.tenant, item_id=item.item_id, task_id=tid, text=item.text,
                text_sha256=item.text_sha256, session_id=item.session_id, user_id=item.user_id,
                source="context", scores=json.dumps(item.scores),
                keyword_hits=json.dumps(item.keyword_hits), decision=item.decision,
                model_version=item.model_version, policy_version=item.policy_version,
                ts=item.ts, gold=None)))
            if added:
                conn.execute(update(tasks).where(tasks.c.task_id == tid)
                             .values(n_items=tasks.c.n_items + 1))
            return tid

        return self._write(run)

    def add_item(self, item: ReviewItem, *, slots: int = 1) -> str:
        """Add an item to its session's task (or a task of its own); the same item again is a no-op.

        Args:
            item: The item.
            slots: How many moderators should label the task; raising it never lowers it. A new
                item in a task already done reopens the task for ``slots`` more labels.

        Returns:
            The task id.
        """
        _tenant(item.tenant)
        _name(item.item_id, "item_id")
        if item.source not in SOURCES:
            raise ReviewError(f"item {item.item_id!r}: source {item.source!r} is not one of "
                              f"{', '.join(SOURCES)}")
        if isinstance(slots, bool) or not isinstance(slots, int) or not 1 <= slots <= 20:
            raise ReviewError(f"slots must be an integer in [1, 20], got {slots!r}")
        group = (f"session:{item.session_id}" if item.session_id
                 else f"item:{item.item_id}")

        def run(conn: Connection) -> str:
            tid = self._ensure_task(conn, item.tenant, group)
            added = _rowcount(conn.execute(self._insert_ignore(items).values(
                tenant=item.tenant, item_id=item.item_id, task_id=tid, text=item.text,
                text_sha256=item.text_sha256, session_id=item.session_id, user_id=item.user_id,
                source=item.source, scores=json.dumps(item.scores),
                keyword_hits=json.dumps(item.keyword_hits), decision=item.decision,
                model_version=item.model_version, policy_version=item.policy_version,
                ts=item.ts, gold=None)))
            if not added:  # already queued, perhaps in another task: that one is its task
                tid = conn.execute(select(items.c.task_id).where(
                    items.c.tenant == item.tenant, items.c.item_id == item.item_id)).scalar_one()
                self._raise_slots(conn, tid, slots)
                return tid
            conn.execute(update(tasks).where(tasks.c.task_id == tid)
                         .values(n_items=tasks.c.n_items + 1))
            status = conn.execute(select(tasks.c.status)
                                  .where(tasks.c.task_id == tid)).scalar_one()
            self._raise_slots(conn, tid, slots, more=status == _DONE)
            return tid

        return self._write(run)

    def add_report(self, report: Report) -> str | None:
        """Attach a user report to the task it is about; the same report again is a no-op.

        The task is the reported item's, else the session's it names (made if needed), else
        the reported user's most recent one, else a task for the report alone. A report on a task
        already done reopens it for one more label.

        Returns:
            The task id.
        """
        _tenant(report.tenant)
        _name(report.report_id, "report_id")
        _name(report.reporter, "reporter")

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
                select(tasks.c.status).where(tasks.c.task_id == tid)).scalar_one() == _DONE)
            return tid

        return self._write(run)

    def add_event(self, event: SessionEvent) -> str:
        """Attach a session event to its session's task (made if needed); idempotent by id."""
        _tenant(event.tenant)
        _name(event.event_id, "event_id")
        _name(event.session_id, "session_id")
        _name(event.kind, "event kind")

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
        p = _number(priority, "priority", -1e12, 1e12)
        text = json.dumps(reasons)

        def run(conn: Connection) -> None:
            res = conn.execute(update(tasks).where(tasks.c.task_id == task_id)
                               .values(priority=p, reasons=text, updated_ts=self._clock()))
            if not _rowcount(res):
                raise NotFound(f"no review task {task_id!r}")

        self._write(run)

    def set_gold(self, tenant: str, item_id: str, labels: dict[str, float]) -> None:
        """Record the known answer of a queued item; its task gets one more slot (once)."""
        where = f"in the gold labels of item {item_id!r}"
        gold = {_category(c, where): _number(v, f"gold value of {c!r}", 0.0, 1.0)
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

    # -- leases ----------------------------------------------------------------------------

    def _lease(self, lease_s: float | None) -> float:
        return self.lease_s if lease_s is None else _number(lease_s, "lease_s", 0.0, 7 * 86400.0,
                                                            lo_open=True)

    def claim(self, moderator: str, tenants: Collection[str],
              lease_s: float | None = None) -> Claim | None:
        """Lease the highest-priority free slot this moderator may take, or None if there is none.

        A slot is free when never leased, released, or its lease has passed. The moderator
        never gets a task of a tenant outside ``tenants``, nor a task they claimed before.
        """
        _name(moderator, "moderator")
        lease, scope = self._lease(lease_s), _scope(tenants)
        if not scope:
            return None

        def run(conn: Connection) -> Claim | None:
            now = self._clock()
            mine = select(claims.c.token).where(claims.c.task_id == slots.c.task_id,
                                                claims.c.moderator == moderator).exists()
            q = (select(slots.c.task_id, slots.c.slot)
                 .join(tasks, tasks.c.task_id == slots.c.task_id)
                 .where(tasks.c.status == "open", tasks.c.n_items > 0,
                        tasks.c.tenant.in_(scope), _claimable(now), ~mine)
                 .order_by(tasks.c.priority.desc(), tasks.c.created_ts, tasks.c.task_id,
                           slots.c.slot)
                 .limit(1))
            if self._pg:  # rows another claimer holds are skipped, not waited for
                q = q.with_for_update(skip_locked=True, of=slots)
            row = conn.execute(q).first()
            if row is None:
                return None
            token, until = secrets.token_urlsafe(24), now + lease
            res = conn.execute(update(slots).where(
                slots.c.task_id == row.task_id, slots.c.slot == row.slot, _claimable(now))
                .values(state=_LEASED, token=token, moderator=moderator, leased_until=until))
            if _rowcount(res) != 1:
                raise _Retry
            # unique (task_id, moderator): the same moderator racing in two threads retries
            conn.execute(insert(claims).values(
                token=token, task_id=row.task_id, slot=row.slot, moderator=moderator,
                state=_LEASED, leased_until=until, claimed_ts=now))
            return Claim(token, row.task_id, row.slot, moderator, until)

        return self._write(run)

    def _claim_row(self, conn: Connection, token: str) -> Any:
        q = select(claims).where(claims.c.token == token)
        row = conn.execute(q.with_for_update() if self._pg else q).first()
        if row is None:
            raise NotFound("no claim with this token; claim a task first")
        return row

    def claim_of(self, token: str) -> Claim:
        """The claim a token proves (any state); :class:`NotFound` for an unknown token."""
        c = self._read(lambda conn: self._claim_row(conn, token))
        return Claim(token=c.token, task_id=c.task_id, slot=c.slot, moderator=c.moderator,
                     leased_until=c.leased_until)

    def renew(self, token: str, lease_s: float | None = None) -> Claim:
        """Extend a claim's lease from now; :class:`LeaseLost` if its slot went to another."""
        lease = self._lease(lease_s)

        def run(conn: Connection) -> Claim:
            c = self._claim_row(conn, token)
            if c.state == "submitted":
                raise ReviewError(f"claim on task {c.task_id!r} is already submitted; "
                                  "nothing to renew")
            until = self._clock() + lease
            res = conn.execute(update(slots).where(
                slots.c.task_id == c.task_id, slots.c.slot == c.slot, slots.c.token == token,
                slots.c.state == _LEASED).values(leased_until=until))
            if c.state == "released" or not _rowcount(res):
                raise LeaseLost(_lost(c))
            conn.execute(update(claims).where(claims.c.token == token)
                         .values(leased_until=until))
            return Claim(token, c.task_id, c.slot, c.moderator, until)

        return self._write(run)

    def release(self, token: str) -> None:
        """Give the claim's slot back to the queue now (to other moderators; not to this one)."""

        def run(conn: Connection) -> None:
            c = self._claim_row(conn, token)
            if c.state == "submitted":
                raise ReviewError(f"claim on task {c.task_id!r} is already submitted; it "
                                  "cannot be released")
            conn.execute(update(slots).where(
                slots.c.task_id == c.task_id, slots.c.slot == c.slot, slots.c.token == token,
                slots.c.state == _LEASED).values(state=_FREE, token=None, moderator=None,
                                                 leased_until=None))
            conn.execute(update(claims).where(claims.c.token == token).values(state="released"))

        self._write(run)

    # -- labels ----------------------------------------------------------------------------

    def submit(self, token: str, submission_id: str, labels: list[LabelIn]) -> Submission:
        """Store a claim's labels; the same ``submission_id`` again returns the stored result.

        Accepted while the claim's slot is still its own, even past the lease; :class:`LeaseLost`
        once another moderator took the slot (or the claim was released).
        """
        _name(submission_id, "submission_id")
        if len(submission_id) > 128:
            raise ReviewError("submission_id must be at most 128 characters")

        def run(conn: Connection) -> Submission:
            c = self._claim_row(conn, token)
            if c.submission_id is not None:
                if c.submission_id != submission_id:
                    raise ReviewError(f"claim on task {c.task_id!r} was already submitted as "
                                      f"{c.submission_id!r}; claim a new task to label again")
                return self._stored(conn, c)
            other = conn.execute(select(claims.c.task_id).where(
                claims.c.submission_id == submission_id)).first()
            if other is not None:
                raise ReviewError(f"submission_id {submission_id!r} was already used for "
                                  "another claim; use a fresh id for each submission")
            allowed = set(conn.execute(select(items.c.item_id).where(
                items.c.task_id == c.task_id)).scalars())
            rows = _check_labels(labels, allowed, c.task_id)
            now = self._clock()
            res = conn.execute(update(slots).where(
                slots.c.task_id == c.task_id, slots.c.slot == c.slot, slots.c.token == token,
                slots.c.state == _LEASED).values(state=_DONE))
            if c.state == "released" or not _rowcount(res):
                raise LeaseLost(_lost(c))
            conn.execute(update(claims).where(claims.c.token == token).values(
                state="submitted", submission_id=submission_id, submitted_ts=now))
            self._store_labels(conn, c, submission_id, rows, now)
            conn.execute(update(tasks).where(tasks.c.task_id == c.task_id).values(
                slots_done=tasks.c.slots_done + 1, updated_ts=now))
            conn.execute(update(tasks).where(tasks.c.task_id == c.task_id,
                                             tasks.c.slots_done >= tasks.c.slots)
                         .values(status=_DONE))
            return Submission(submission_id, c.task_id, c.slot, c.moderator,
                              [LabelIn(**r) for r in rows], now, duplicate=False)

        return self._write(run)

    def _store_labels(self, conn: Connection, c: Any, submission_id: str,
                      rows: list[dict[str, Any]], now: float) -> None:
        """The labels into the one label table, in the submission's transaction: retraining
        and drift read them from there, nothing copies them later."""
        tenant = conn.execute(select(tasks.c.tenant)
                              .where(tasks.c.task_id == c.task_id)).scalar_one()
        ids = sorted({r["item_id"] for r in rows})
        for it in conn.execute(select(items).where(items.c.tenant == tenant,
                                                   items.c.item_id.in_(ids))):
            put_item(conn, tenant=tenant, item_id=it.item_id, text=it.text,
                     text_sha256=it.text_sha256, session_id=it.session_id, user_id=it.user_id,
                     source="review", ts=it.ts)
        for r in rows:
            put_label(conn, tenant=tenant, item_id=r["item_id"], annotator=c.moderator,
                      category=r["category"], value=r["value"], confidence=r["confidence"],
                      ts=now, submission_id=submission_id)

    def _stored(self, conn: Connection, c: Any) -> Submission:
        got = conn.execute(select(labels_t.c.item_id, labels_t.c.category, labels_t.c.value,
                                  labels_t.c.confidence)
                           .where(labels_t.c.submission_id == c.submission_id)
                           .order_by(labels_t.c.item_id, labels_t.c.category)).all()
        return Submission(c.submission_id, c.task_id, c.slot, c.moderator,
                          [LabelIn(*r) for r in got], c.submitted_ts, duplicate=True)

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
        scope = _scope(tenants)
        found = self._read(lambda conn: self._tasks(conn, select(tasks).where(
            tasks.c.task_id == task_id, tasks.c.tenant.in_(scope))))
        if not found:
            raise NotFound(f"no review task {task_id!r} in tenants {scope}")
        return found[0]

    def pending(self, tenants: Collection[str] | None = None, limit: int = 50) -> list[Task]:
        """Open tasks, highest priority first (all tenants when ``tenants`` is None)."""
        q = select(tasks).where(tasks.c.status == "open")
        if tenants is not None:
            q = q.where(tasks.c.tenant.in_(_scope(tenants)))
        q = q.order_by(tasks.c.priority.desc(), tasks.c.created_ts, tasks.c.task_id).limit(limit)
        return self._read(lambda conn: self._tasks(conn, q))

    def _tasks(self, conn: Connection, q: Any) -> list[Task]:
        rows = conn.execute(q).all()
        ids = [r.task_id for r in rows]
        its: dict[str, list[Any]] = {i: [] for i in ids}
        reps: dict[str, list[Report]] = {i: [] for i in ids}
        evs: dict[str, list[SessionEvent]] = {i: [] for i in ids}
        for r in conn.execute(select(items).where(items.c.task_id.in_(ids))
                              .order_by(items.c.ts, items.c.item_id)):
            its[r.task_id].append(r)
        for r in conn.execute(select(reports).where(reports.c.task_id.in_(ids))
                              .order_by(reports.c.ts, reports.c.report_id)):
            reps[r.task_id].append(Report(**_drop(r._mapping, "task_id")))
        for r in conn.execute(select(events).where(events.c.task_id.in_(ids))
                              .order_by(events.c.ts, events.c.event_id)):
            evs[r.task_id].append(SessionEvent(**_drop(r._mapping, "task_id")))
        return [Task(
            task_id=t.task_id, tenant=t.tenant, group_key=t.group_key, priority=t.priority,
            reasons=json.loads(t.reasons), slots=t.slots, slots_done=t.slots_done,
            status=t.status, items=[_item(i._mapping) for i in its[t.task_id]],
            reports=reps[t.task_id], events=evs[t.task_id],
            gold={i.item_id: json.loads(i.gold) for i in its[t.task_id] if i.gold is not None},
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
                slots.c.state == _LEASED, slots.c.leased_until <= now)).scalar_one()
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


def _claimable(now: float) -> ColumnElement[bool]:
    return or_(slots.c.state == _FREE,
               and_(slots.c.state == _LEASED, slots.c.leased_until <= now))


def _rowcount(res: Any) -> int:
    return int(res.rowcount) if isinstance(res, CursorResult) else 0


def _lost(c: Any) -> str:
    how = "was released" if c.state == "released" else f"expired at {c.leased_until:.0f}"
    return (f"the lease on task {c.task_id!r} slot {c.slot} {how} and the slot went back to the "
            "queue (maybe to another moderator); claim a task again")


def _drop(m: Any, *keys: str) -> dict[str, Any]:
    return {k: v for k, v in m.items() if k not in keys}


def _check_labels(given: Iterable[LabelIn], allowed: set[str],
                  task_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for lab in given:
        if not isinstance(lab, LabelIn):
            raise ReviewError(f"labels must be LabelIn values, got {lab!r}")
        if lab.item_id not in allowed:
            raise ReviewError(f"item {lab.item_id!r} is not in task {task_id!r}; label only "
                              f"the task's items ({', '.join(sorted(allowed)) or 'none'})")
        where = f"on item {lab.item_id!r}"
        cat = _category(lab.category, where)
        if (lab.item_id, cat) in seen:
            raise ReviewError(f"category {cat!r} {where} is labelled twice; give one label "
                              "per item and category")
        seen.add((lab.item_id, cat))
        rows.append({"item_id": lab.item_id, "category": cat,
                     "value": _number(lab.value, f"value of {cat!r} {where} (1 = applies)",
                                      0.0, 1.0),
                     "confidence": _number(lab.confidence, f"confidence of {cat!r} {where}",
                                           0.0, 1.0, lo_open=True)})
    if not rows:
        raise ReviewError("a submission needs at least one label (value 0 says a category "
                          "does not apply); release the claim to skip the task")
    return rows
