"""Keyed text digests: HMAC-SHA256 of a text under one secret per install.

The stores keep a digest of every text (``text_sha256`` columns: the event log, the review
queue, the label items) so that equal texts can be matched without keeping them. A plain
SHA-256 of a short text is reversed by hashing a dictionary of candidates; an HMAC under a
secret the database never holds is not. The secret is created on first use at
``<state_dir>/secrets/text-hmac.key`` (mode 0600), or given by ``BASTION_TEXT_HMAC_KEY``
(``Settings.text_hmac_key``; on Kubernetes a Secret shared by every pod). Every process of one
install must see the same secret: within it, equal texts give equal digests; a new secret
starts a new digest space (digests written before no longer match new ones).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from bastion.core.errors import ConfigError
from bastion.core.settings import Settings

__all__ = ["MIN_KEY_CHARS", "key_file", "load_text_key", "text_digest", "text_key"]

# 32 characters of a URL-safe token carry ~190 bits; below that a secret is likely a
# placeholder someone typed.
MIN_KEY_CHARS = 32


def text_digest(text: str, key: bytes) -> str:
    """The keyed digest (64 hex digits) of ``text`` under the install's ``key``."""
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def key_file(state_dir: Path) -> Path:
    return state_dir / "secrets" / "text-hmac.key"


def _checked(value: str, where: str) -> bytes:
    value = value.strip()
    if len(value) < MIN_KEY_CHARS:
        raise ConfigError(
            f"{where}: the text digest key has {len(value)} characters, fewer than "
            f"{MIN_KEY_CHARS}; make one with python -c \"import secrets; "
            "print(secrets.token_urlsafe(32))\"")
    return value.encode("utf-8")


def load_text_key(state_dir: Path, override: str | None = None) -> bytes:
    """The install's key: ``override`` (the environment's) if given, else the state
    directory's file, created (atomically, mode 0600) if there is none yet. Two processes
    creating it at once end up with the same one."""
    if override:
        return _checked(override, "BASTION_TEXT_HMAC_KEY")
    path = key_file(state_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        try:
            os.link(tmp, path)  # fails if another process created it first: theirs wins
        except FileExistsError:
            pass
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return _checked(path.read_text(), str(path))


def text_key(settings: Settings) -> bytes:
    """The install's key for ``settings`` (``text_hmac_key``, else the state directory's)."""
    override = settings.text_hmac_key
    return load_text_key(settings.state_dir,
                         override.get_secret_value() if override is not None else None)
