"""The schema's version: Alembic migrations shipped in the package, applied programmatically.

``bastion up`` and ``bastion db upgrade`` bring a database to the newest revision (head). A store
opening a database checks it first (:func:`ensure_schema`): the embedded SQLite default is
upgraded on the spot; any other database that is not at head is an error telling the operator
to run ``bastion db upgrade``, so no process changes a shared schema behind their back.
"""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from bastion.core.errors import StoreError
from bastion.core.store.engine import display_url, is_postgres, open_engine

__all__ = ["alembic_config", "current_revision", "ensure_schema", "head_revision", "upgrade"]

MIGRATIONS = Path(__file__).with_name("migrations")
_checked: set[str] = set()  # URLs found at head by this process: checked once, not per store
_lock = threading.Lock()


def alembic_config(engine: Engine) -> Config:
    """An Alembic config of the packaged migrations, running on ``engine``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str:
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The database's revision; None for a database Alembic never ran on."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Apply the migrations up to ``revision``; returns (revision before, revision after)."""
    before = current_revision(engine)
    command.upgrade(alembic_config(engine), revision)
    return before, current_revision(engine)


def _where(engine: Engine) -> str:
    return display_url(engine)


def ensure_schema(engine: Engine) -> None:
    """Make sure the database is at head before a store uses it.

    Raises:
        StoreError: a database other than the embedded SQLite one is not at head (never
            migrated, or older or newer than this code).
    """
    key = _where(engine)
    sqlite_file = engine.url.database if not is_postgres(engine) else None
    with _lock:
        if key in _checked and (sqlite_file is None or Path(sqlite_file).exists()):
            return
        head, current = head_revision(), current_revision(engine)
        if current != head:
            if is_postgres(engine):
                state = ("has no Bastion schema yet" if current is None
                         else f"is at revision {current}")
                raise StoreError(
                    f"database {key} {state}, this code needs revision {head}; run "
                    f"'bastion db upgrade --url {key}' (or 'bastion up', which upgrades it)")
            upgrade(engine)
        _checked.add(key)


def upgrade_url(url: str) -> tuple[str | None, str | None]:
    """:func:`upgrade` on the database at ``url``."""
    engine = open_engine(url)
    try:
        return upgrade(engine)
    finally:
        engine.dispose()
