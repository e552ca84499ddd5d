"""Tenant API keys: generated once per tenant, kept in the state directory (mode 0600).

Only SHA-256 digests reach the serving replicas; the operator reads the keys from the file
(``bastion keys``) or from ``bastion up``'s output.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TypeVar

from bastion.core.errors import ConfigError

__all__ = [
    "load_keys", "ensure_keys", "key_hash", "key_hashes", "holder", "new_key", "ROLES",
    "reviewers_path", "load_reviewers", "add_reviewer", "reviewer_hashes",
]

T = TypeVar("T")


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
        _write_private(path, keys)
    return keys, added


def _write_private(path: Path, data: object) -> None:
    """Write JSON readable by its owner only (mode 0600), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def key_hash(key: str) -> str:
    """The SHA-256 of a key, as the serving replicas hold it."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_hashes(keys: dict[str, str]) -> dict[str, str]:
    return {t: key_hash(k) for t, k in keys.items()}


def holder(by_hash: Mapping[str, T], key: str) -> T | None:
    """Whom ``key`` belongs to in ``{sha256(key): who}``, or None. Every digest is compared, in
    constant time, so the answer's timing says nothing about which one matched."""
    digest, found = key_hash(key), None
    for h, who in by_hash.items():
        if hmac.compare_digest(h, digest):
            found = who
    return found


# -- reviewers: moderators and ML ops ---------------------------------------------------------
ROLES = ("moderator", "mlops")


def reviewers_path(state_dir: Path) -> Path:
    return state_dir / "review_keys.json"


def load_reviewers(path: Path) -> dict[str, dict[str, object]]:
    """name -> {"key", "role", "tenants"} (tenants: the tenants whose items they may see)."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err}); fix it or delete it") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of reviewer name -> key, role, tenants")
    return data


def add_reviewer(path: Path, name: str, role: str, tenants: Iterable[str]) -> str:
    """Issue (or re-issue) a reviewer's key; returns it. Kept with mode 0600."""
    if role not in ROLES:
        raise ConfigError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$", name):
        raise ConfigError(f"reviewer name {name!r}: use letters, digits, _ . @ or - "
                          "(at most 64)")
    scope = sorted(set(tenants))
    if not scope:
        raise ConfigError("give at least one tenant (--tenant) whose items the reviewer sees")
    data = load_reviewers(path)
    key = "rev_" + secrets.token_urlsafe(24)
    data[name] = {"key": key, "role": role, "tenants": scope}
    _write_private(path, data)
    return key


def reviewer_hashes(reviewers: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    """sha256(key) -> {"name", "role", "tenants"}: what the serving replicas receive."""
    return {key_hash(str(r["key"])):
            {"name": name, "role": r["role"], "tenants": r["tenants"]}
            for name, r in reviewers.items()}
