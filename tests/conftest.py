"""Shared fixtures. Integration fixtures (one Ray cluster, one trained starter model, one Serve
application per test session) live in tests/integration/conftest.py."""

from __future__ import annotations

import os

from bastion.core.runtime import ray_env

# Before anything imports ray: some of its settings are read at import time.
for _k, _v in ray_env().items():
    os.environ.setdefault(_k, _v)
