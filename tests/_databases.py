"""The databases store tests run on: a SQLite file, and a fresh schema on a real PostgreSQL
server (skipped with a message when none answers, failed under ``CI=true``).

Each PostgreSQL test gets a schema of its own, named in the URL's ``search_path``, so spawned
processes use it too and concurrent test runs (other checkouts) never collide; it is migrated
to head as ``bastion db upgrade`` would, and dropped afterwards.

Set BASTION_TEST_POSTGRES_URL to use another server than postgres@127.0.0.1:5432/test.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import URL

from bastion.core.store import default_database_url, normalise_url
from bastion.core.store.schema import upgrade_url
from tests._requires import missing

__all__ = ["DEFAULT_POSTGRES_URL", "postgres_schema", "postgres_server", "sqlite_url"]

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
_reachable: dict[str, bool] = {}


def postgres_server() -> URL:
    """The server's URL, or skip (fail in CI) when none answers within 2 s."""
    url = normalise_url(os.environ.get("BASTION_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    key = url.render_as_string(hide_password=False)
    if key not in _reachable:
        engine = create_engine(url, connect_args={"connect_timeout": 2})
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            _reachable[key] = True
        except Exception:  # any failure to reach it: refused, timeout, auth, missing database
            _reachable[key] = False
        finally:
            engine.dispose()
    if not _reachable[key]:
        missing(f"PostgreSQL on {url.host}:{url.port or 5432}",
                "start a server there or set BASTION_TEST_POSTGRES_URL")
    return url


@contextmanager
def postgres_schema(server: URL, *, migrate: bool = True) -> Iterator[str]:
    """The URL of a fresh schema on ``server`` (at head unless ``migrate`` is False)."""
    schema = f"bastion_test_{secrets.token_hex(6)}"
    admin = create_engine(server)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(server).update_query_dict({"options": f"-csearch_path={schema}"})
    rendered = url.render_as_string(hide_password=False)
    try:
        if migrate:
            upgrade_url(rendered)
        yield rendered
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def sqlite_url(directory: Path) -> str:
    return default_database_url(directory)
