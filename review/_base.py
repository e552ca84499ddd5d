"""The review queue's database: the engine, one-transaction writes retried after a lost race,
snapshot reads, and the row helpers the queue's parts share."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, CursorResult, Engine, Insert, Table
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from bastion.core.store import READ, insert_ignore, is_postgres, open_store
from bastion.review._checks import number
from bastion.review.records import ReviewError, ReviewItem

__all__ = ["QueueBase", "Retry", "FREE", "LEASED", "DONE", "item_record", "rowcount", "drop"]

FREE, LEASED, DONE = "free", "leased", "done"
_RETRIES = 8  # a unique-key race (same moderator in two threads) or a PostgreSQL deadlock
_PG_RETRY_CODES = {"23505", "40001", "40P01"}  # unique_violation, serialization, deadlock
T = TypeVar("T")


class Retry(Exception):
    """Internal: roll back and run the transaction again."""


def item_record(m: Any) -> ReviewItem:
    return ReviewItem(
        tenant=m["tenant"], item_id=m["item_id"], text=m["text"], text_sha256=m["text_sha256"],
        session_id=m["session_id"], user_id=m["user_id"], source=m["source"],
        scores=json.loads(m["scores"]), keyword_hits=json.loads(m["keyword_hits"]),
        decision=m["decision"], model_version=m["model_version"],
        policy_version=m["policy_version"], ts=m["ts"], modality=m["modality"] or "text",
        media=None if m["media"] is None else json.loads(m["media"]),
        media_type=m["media_type"], has_media=bool(m["has_media"]),
        language=m.get("language"))


def rowcount(res: Any) -> int:
    return int(res.rowcount) if isinstance(res, CursorResult) else 0


def drop(m: Any, *keys: str) -> dict[str, Any]:
    return {k: v for k, v in m.items() if k not in keys}


class QueueBase:
    """The engine and transactions every part of :class:`~bastion.review.queue.ReviewQueue`
    runs on."""

    def __init__(self, url: str | URL | Engine, *, lease_s: float = 600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.lease_s = number(lease_s, "lease_s", 0.0, 7 * 86400.0, lo_open=True)
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
            except Retry:
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
