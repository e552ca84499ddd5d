"""The store layer: one database (SQLite file or PostgreSQL) for every store Bastion keeps.

The event log, the review queue, the labels, the drift trigger log and the embedding cache
all live in the tables of :mod:`bastion.core.store.tables`, reached through one engine per URL
(:func:`open_store`), whose schema Alembic migrations keep at head
(:mod:`bastion.core.store.schema`). The URL comes from ``Settings.database_url``
(``BASTION_DATABASE_URL``).
"""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.engine import URL

from bastion.core.store.engine import (
    READ,
    default_database_url,
    display_url,
    insert_ignore,
    is_postgres,
    normalise_url,
    open_engine,
)
from bastion.core.store.schema import current_revision, ensure_schema, head_revision, upgrade

__all__ = [
    "READ", "current_revision", "default_database_url", "display_url", "ensure_schema",
    "head_revision",
    "insert_ignore", "is_postgres", "normalise_url", "open_engine", "open_store", "upgrade",
]


def open_store(url: str | URL | Engine) -> tuple[Engine, bool]:
    """The engine a store works on, its schema checked (see :func:`ensure_schema`).

    Returns:
        The engine, and whether the store owns it (opened it from a URL: dispose on close) or
        was handed one (the caller's to dispose).
    """
    if isinstance(url, Engine):
        ensure_schema(url)
        return url, False
    engine = open_engine(url)
    try:
        ensure_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine, True
