"""Shared fixtures. Integration fixtures (one Ray cluster, one trained starter model, one Serve
application per test session) live in tests/integration/conftest.py."""

from __future__ import annotations

import os
from collections.abc import Iterator

from bastion.core.runtime import ray_env

# Before anything imports ray: some of its settings are read at import time.
for _k, _v in ray_env().items():
    os.environ.setdefault(_k, _v)


import pytest  # noqa: E402  (after the Ray environment above)

from tests._databases import postgres_schema, postgres_server, sqlite_url  # noqa: E402


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[str]:
    """The database URL a store test runs on: once a SQLite file, once a fresh PostgreSQL
    schema at head (``tests._databases``)."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path_factory.mktemp("db"))
        return
    with postgres_schema(postgres_server()) as url:
        yield url
