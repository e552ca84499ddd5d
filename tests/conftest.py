"""Shared fixtures. Integration fixtures (one Ray cluster, one trained starter model, one Serve
application per test session) live in tests/integration/conftest.py."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Sequence
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
