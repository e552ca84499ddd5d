"""Claims on the review queue: leased slots (claim, renew, release) and submissions, whose
labels go into the one label table in the submission's own transaction."""

from __future__ import annotations

import secrets
from collections.abc import Collection
from typing import Any

from sqlalchemy import Connection, and_, insert, or_, select, update
from sqlalchemy.sql.expression import ColumnElement

from bastion.core.labels import put_item, put_label
from bastion.core.store.tables import labels as labels_t  # `labels` is submit's argument
from bastion.core.store.tables import review_claims as claims
from bastion.core.store.tables import review_items as items
from bastion.core.store.tables import review_slots as slots
from bastion.core.store.tables import review_tasks as tasks
from bastion.review._base import DONE, FREE, LEASED, QueueBase, Retry, rowcount
from bastion.review._checks import check_labels, name, number, scope
from bastion.review.records import Claim, LabelIn, LeaseLost, NotFound, ReviewError, Submission

__all__ = ["Claims"]


class Claims(QueueBase):
    """Moderators' side of the queue (see :class:`~bastion.review.queue.ReviewQueue`)."""

    # -- leases ----------------------------------------------------------------------------

    def _lease(self, lease_s: float | None) -> float:
        return self.lease_s if lease_s is None else number(lease_s, "lease_s", 0.0, 7 * 86400.0,
                                                            lo_open=True)

    def claim(self, moderator: str, tenants: Collection[str],
              lease_s: float | None = None) -> Claim | None:
        """Lease the highest-priority free slot this moderator may take, or None if there is none.

        A slot is free when never leased, released, or its lease has passed. The moderator
        never gets a task of a tenant outside ``tenants``, nor a task they claimed before.
        """
        name(moderator, "moderator")
        lease, allowed = self._lease(lease_s), scope(tenants)
        if not allowed:
            return None

        def run(conn: Connection) -> Claim | None:
            now = self._clock()
            mine = select(claims.c.token).where(claims.c.task_id == slots.c.task_id,
                                                claims.c.moderator == moderator).exists()
            q = (select(slots.c.task_id, slots.c.slot)
                 .join(tasks, tasks.c.task_id == slots.c.task_id)
                 .where(tasks.c.status == "open", tasks.c.n_items > 0,
                        tasks.c.tenant.in_(allowed), _claimable(now), ~mine)
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
                .values(state=LEASED, token=token, moderator=moderator, leased_until=until))
            if rowcount(res) != 1:
                raise Retry
            # unique (task_id, moderator): the same moderator racing in two threads retries
            conn.execute(insert(claims).values(
                token=token, task_id=row.task_id, slot=row.slot, moderator=moderator,
                state=LEASED, leased_until=until, claimed_ts=now))
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
                slots.c.state == LEASED).values(leased_until=until))
            if c.state == "released" or not rowcount(res):
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
                slots.c.state == LEASED).values(state=FREE, token=None, moderator=None,
                                                 leased_until=None))
            conn.execute(update(claims).where(claims.c.token == token).values(state="released"))

        self._write(run)

    # -- labels ----------------------------------------------------------------------------

    def submit(self, token: str, submission_id: str, labels: list[LabelIn]) -> Submission:
        """Store a claim's labels; the same ``submission_id`` again returns the stored result.

        Accepted while the claim's slot is still its own, even past the lease; :class:`LeaseLost`
        once another moderator took the slot (or the claim was released).
        """
        name(submission_id, "submission_id")
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
            rows = check_labels(labels, allowed, c.task_id)
            now = self._clock()
            res = conn.execute(update(slots).where(
                slots.c.task_id == c.task_id, slots.c.slot == c.slot, slots.c.token == token,
                slots.c.state == LEASED).values(state=DONE))
            if c.state == "released" or not rowcount(res):
                raise LeaseLost(_lost(c))
            conn.execute(update(claims).where(claims.c.token == token).values(
                state="submitted", submission_id=submission_id, submitted_ts=now))
            self._store_labels(conn, c, submission_id, rows, now)
            conn.execute(update(tasks).where(tasks.c.task_id == c.task_id).values(
                slots_done=tasks.c.slots_done + 1, updated_ts=now))
            conn.execute(update(tasks).where(tasks.c.task_id == c.task_id,
                                             tasks.c.slots_done >= tasks.c.slots)
                         .values(status=DONE))
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
                     source="review", ts=it.ts, modality=it.modality)
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


def _claimable(now: float) -> ColumnElement[bool]:
    return or_(slots.c.state == FREE,
               and_(slots.c.state == LEASED, slots.c.leased_until <= now))


def _lost(c: Any) -> str:
    how = "was released" if c.state == "released" else f"expired at {c.leased_until:.0f}"
    return (f"the lease on task {c.task_id!r} slot {c.slot} {how} and the slot went back to the "
            "queue (maybe to another moderator); claim a task again")
