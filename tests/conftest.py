"""Shared fixtures. Integration fixtures (one Ray cluster, one trained starter model, one Serve
application per test session) live in tests/integration/conftest.py."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType

from bastion.core.runtime import ray_env

# pytest puts the checkout on sys.path, where the stage folders would import under their bare
# names (``core``, ``registry``). Installed, they exist only as ``bastion.<stage>``: refuse the
# bare names here too, so a test cannot pass on a name a user's install does not have.
OLD_TOP_LEVEL = frozenset({"core", "serving", "training", "drift", "registry", "review"})


class _OnlyTheBastionNamespace(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] in OLD_TOP_LEVEL:
            raise ModuleNotFoundError(f"No module named {fullname!r} (Bastion's modules are "
                                      f"bastion.{fullname})", name=fullname)
        return None


sys.meta_path.insert(0, _OnlyTheBastionNamespace())

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
