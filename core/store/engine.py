"""The database every store shares: URL resolution, the engine factory, per-backend SQL.

SQLite (the embedded default, one file in the state directory) gets WAL, a 30 s busy timeout,
foreign keys, and write transactions that take the file lock first (``BEGIN IMMEDIATE``), so a
read-then-write never races another process; PostgreSQL (several machines, pods) gets the
psycopg 3 driver and ``pool_pre_ping``, so a connection the server dropped is replaced.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Insert, Table, create_engine, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from bastion.core.errors import ConfigError

__all__ = ["default_database_url", "display_url", "insert_ignore", "is_postgres", "normalise_url",
           "open_engine", "READ"]

# Execution option of a read-only transaction: SQLite begins it deferred (no write lock).
READ = {"bastion_read": True}
_HOW = ("give BASTION_DATABASE_URL (or --url) as sqlite:///<path> for a file on this machine, "
        "or postgresql://user@host:5432/db for a database several machines share")


def default_database_url(state_dir: str | Path) -> str:
    """The embedded default: the SQLite file ``bastion.db`` in the state directory."""
    return f"sqlite:///{(Path(state_dir) / 'bastion.db').resolve()}"


def display_url(url: str | URL | Engine) -> str:
    """The database's URL as messages show it: normalised, the password hidden."""
    parsed = url.url if isinstance(url, Engine) else normalise_url(url)
    return parsed.render_as_string(hide_password=True)


def normalise_url(url: str | URL) -> URL:
    """``url`` parsed, with PostgreSQL on the psycopg 3 driver (the one installed).

    Raises:
        ConfigError: not a URL, an unsupported scheme, or an in-memory SQLite database (which
            each connection would see empty).
    """
    try:
        u = make_url(url)
    except ArgumentError:
        raise ConfigError(f"database URL {str(url)!r} is not a URL; {_HOW}") from None
    backend, driver = u.get_backend_name(), u.get_driver_name()
    if backend == "postgresql":
        if driver not in ("psycopg", "psycopg2") or u.drivername == "postgresql":
            u = u.set(drivername="postgresql+psycopg")
        elif driver == "psycopg2":
            raise ConfigError(f"database URL {u.render_as_string()!r} asks for psycopg2, which "
                              "is not installed; use postgresql:// (psycopg 3)")
        return u
    if backend == "sqlite":
        if not u.database or u.database == ":memory:":
            raise ConfigError(f"database URL {str(url)!r} is an in-memory SQLite database, "
                              f"which every connection sees empty; {_HOW}")
        return u
    raise ConfigError(f"database URL {u.render_as_string()!r}: unsupported scheme "
                      f"{u.drivername!r}; {_HOW}")


def is_postgres(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "postgresql"


def open_engine(url: str | URL) -> Engine:
    """An engine on ``url`` (see :func:`normalise_url`); a SQLite file's folder is created."""
    u = normalise_url(url)
    if u.get_backend_name() == "postgresql":
        return create_engine(u, pool_pre_ping=True)
    Path(str(u.database)).parent.mkdir(parents=True, exist_ok=True)
    # timeout is SQLite's busy_timeout: a writer waits up to 30 s for the file lock.
    engine = create_engine(u, connect_args={"timeout": 30.0, "check_same_thread": False})
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def insert_ignore(engine: Engine | Connection, table: Table) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING on the primary key: what makes writes idempotent."""
    if is_postgres(engine):
        return pg_insert(table).on_conflict_do_nothing()
    return sqlite_insert(table).on_conflict_do_nothing()


def _wal(cur: Any, wait_s: float = 30.0) -> None:
    """WAL journal mode. It is kept in the file, so only the first connection of a new
    database sets it; switching needs the file to itself, and SQLite answers "database is
    locked" at once (no busy wait) while another process is doing the same or migrating the
    new file: retried until ``wait_s``."""
    import sqlite3

    if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + wait_s
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # SQLAlchemy's documented recipe: pysqlite must not emit BEGIN itself; _sqlite_begin does.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    _wal(cur)  # readers never wait for the writer
    cur.execute("PRAGMA synchronous=NORMAL")  # WAL: a crashed process loses no commit
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    # IMMEDIATE takes the write lock before the first read, so read-then-write never races.
    if conn.get_execution_options().get("bastion_read"):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
