"""Keyed text digests: one secret per install, created once (mode 0600), or from the
environment; equal texts match within an install and nowhere else."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from bastion.core.errors import ConfigError
from bastion.core.settings import load_settings
from bastion.core.textkey import key_file, load_text_key, text_digest, text_key


def test_the_key_is_created_once_private_and_kept(tmp_path: Path) -> None:
    key = load_text_key(tmp_path)
    path = key_file(tmp_path)
    assert path == tmp_path / "secrets" / "text-hmac.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_text_key(tmp_path) == key and len(key) >= 32
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind
    assert load_text_key(tmp_path / "another") != key  # another install, another secret


def test_digests_are_keyed_not_plain_sha256(tmp_path: Path) -> None:
    key = load_text_key(tmp_path)
    digest = text_digest("hi", key)
    assert digest == text_digest("hi", key) and len(digest) == 64
    assert digest != hashlib.sha256(b"hi").hexdigest()
    assert digest != text_digest("hi", load_text_key(tmp_path / "another"))


def test_the_environment_overrides_the_file(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_TEXT_HMAC_KEY", "a Kubernetes Secret of 32+ characters")
    settings = load_settings(tmp_path)
    assert text_key(settings) == b"a Kubernetes Secret of 32+ characters"
    assert not key_file(tmp_path).exists()
    assert "Kubernetes" not in repr(settings)  # a SecretStr: never printed


def test_a_short_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"BASTION_TEXT_HMAC_KEY: .* fewer than 32.*token_"):
        load_text_key(tmp_path, override="changeme")

