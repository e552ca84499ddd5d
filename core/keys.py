"""Tenant API keys: generated once per tenant, kept in the state directory (mode 0600).

Only SHA-256 digests reach the serving replicas; the operator reads the keys from the file
(``bastion keys``) or from ``bastion up``'s output.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from core.errors import ConfigError

__all__ = ["load_keys", "ensure_keys", "key_hashes", "new_key"]


def new_key() -> str:
    return "bst_" + secrets.token_urlsafe(24)


def load_keys(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"{path}: not valid JSON ({err}); fix it or delete it to re-issue keys"
        ) from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError(f"{path}: expected a mapping of tenant -> key")
    return data


def ensure_keys(path: Path, tenants: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """Every tenant gets a key; returns (all keys, tenants that got a new one)."""
    keys = load_keys(path)
    added = [t for t in tenants if t not in keys]
    if added:
        for t in added:
            keys[t] = new_key()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(keys, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
    return keys, added


def key_hashes(keys: dict[str, str]) -> dict[str, str]:
    return {t: hashlib.sha256(k.encode("utf-8")).hexdigest() for t, k in keys.items()}
