"""Tables of the review queue (SQLAlchemy Core), one schema for SQLite and PostgreSQL, and the
little per-backend SQL plumbing: SQLite's locking mode, INSERT ... ON CONFLICT, DDL under a lock.

Lists and mappings (scores, reasons, keyword hits, gold labels) are JSON text; timestamps are
unix seconds. A task's slots are rows of their own, so a claim is a compare-and-set on one row.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Double,
    Engine,
    Index,
    Insert,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import URL

__all__ = ["claims", "create_tables", "events", "insert_ignore", "items", "labels", "metadata",
           "reports", "slots", "sqlite_engine", "tasks"]

DDL_LOCK = 0x62617374_01  # pg_advisory_xact_lock key: one process creates the tables at a time

metadata = MetaData()

# status: "open" | "done"; n_items: a task without items has nothing to label, so none claims it.
tasks = Table(
    "review_tasks", metadata,
    Column("task_id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("group_key", Text, nullable=False),
    Column("priority", Double, nullable=False),
    Column("reasons", Text, nullable=False),
    Column("slots", Integer, nullable=False),
    Column("slots_done", Integer, nullable=False),
    Column("status", String(8), nullable=False),
    Column("n_items", Integer, nullable=False),
    Column("created_ts", Double, nullable=False),
    Column("updated_ts", Double, nullable=False),
    UniqueConstraint("tenant", "group_key", name="review_tasks_group"),
    Index("review_tasks_queue", "status", "priority"),
)

items = Table(
    "review_items", metadata,
    Column("tenant", String(64), primary_key=True),
    Column("item_id", String(256), primary_key=True),
    Column("task_id", String(32), nullable=False),
    Column("text", Text),
    Column("text_sha256", String(64), nullable=False),
    Column("session_id", Text),
    Column("user_id", Text),
    Column("source", String(16), nullable=False),
    Column("scores", Text, nullable=False),
    Column("keyword_hits", Text, nullable=False),
    Column("decision", String(32)),
    Column("model_version", Text),
    Column("policy_version", Text),
    Column("ts", Double, nullable=False),
    Column("gold", Text),  # JSON {category: value} when the answer is known
    Index("review_items_task", "task_id"),
    Index("review_items_user", "tenant", "user_id", "ts"),
)

reports = Table(
    "review_reports", metadata,
    Column("tenant", String(64), primary_key=True),
    Column("report_id", String(256), primary_key=True),
    Column("task_id", String(32), nullable=False),
    Column("reporter", Text, nullable=False),
    Column("reported_user", Text),
    Column("reported_item", Text),
    Column("session_id", Text),
    Column("reason", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("ts", Double, nullable=False),
    Index("review_reports_task", "task_id"),
)

events = Table(
    "review_events", metadata,
    Column("tenant", String(64), primary_key=True),
    Column("event_id", String(256), primary_key=True),
    Column("task_id", String(32), nullable=False),
    Column("session_id", Text, nullable=False),
    Column("user_id", Text),
    Column("kind", String(32), nullable=False),
    Column("target_user", Text),
    Column("ts", Double, nullable=False),
    Index("review_events_task", "task_id"),
)

# state: "free" | "leased" (by token until leased_until; past it, anyone may take it) | "done".
slots = Table(
    "review_slots", metadata,
    Column("task_id", String(32), primary_key=True),
    Column("slot", Integer, primary_key=True),
    Column("state", String(8), nullable=False),
    Column("token", String(64)),
    Column("moderator", Text),
    Column("leased_until", Double),
)

# One row per claim ever made; (task_id, moderator) unique: one moderator, one slot of a task.
# state: "leased" | "released" | "submitted"; a lost lease is one whose slot has another token.
claims = Table(
    "review_claims", metadata,
    Column("token", String(64), primary_key=True),
    Column("task_id", String(32), nullable=False),
    Column("slot", Integer, nullable=False),
    Column("moderator", Text, nullable=False),
    Column("state", String(10), nullable=False),
    Column("leased_until", Double, nullable=False),
    Column("claimed_ts", Double, nullable=False),
    Column("submission_id", String(128), unique=True),
    Column("submitted_ts", Double),
    UniqueConstraint("task_id", "moderator", name="review_claims_one_per_moderator"),
)

labels = Table(
    "review_labels", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("submission_id", String(128), nullable=False),
    Column("tenant", String(64), nullable=False),
    Column("task_id", String(32), nullable=False),
    Column("item_id", String(256), nullable=False),
    Column("moderator", Text, nullable=False),
    Column("category", String(64), nullable=False),
    Column("value", Double, nullable=False),
    Column("confidence", Double, nullable=False),
    Column("ts", Double, nullable=False),
    UniqueConstraint("submission_id", "item_id", "category", name="review_labels_once"),
    sqlite_autoincrement=True,  # never reuse a seq: labels_since readers keep a high-water mark
)


def create_tables(conn: Connection, pg: bool) -> None:
    """Create the tables that are missing (concurrent creators on PostgreSQL wait their turn)."""
    if pg:
        conn.execute(select(func.pg_advisory_xact_lock(DDL_LOCK)))
    metadata.create_all(conn)


def insert_ignore(pg: bool, table: Table) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING on the primary key: what makes intake idempotent."""
    if pg:
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert
    return sqlite_insert(table).on_conflict_do_nothing()


def sqlite_engine(url: URL) -> Engine:
    """An engine whose write transactions are ``BEGIN IMMEDIATE`` (reads: ``bastion_read``)."""
    # timeout is SQLite's busy_timeout: a writer waits up to 30 s for the file lock.
    engine = create_engine(url, connect_args={"timeout": 30.0})
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # SQLAlchemy's documented recipe: pysqlite must not emit BEGIN itself; _sqlite_begin does.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
    cur.execute("PRAGMA synchronous=NORMAL")  # WAL: a crashed process loses no commit
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    # IMMEDIATE takes the write lock before the first read, so read-then-write never races.
    if conn.get_execution_options().get("bastion_read"):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
