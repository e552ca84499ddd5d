from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from bastion.cli import cli

DEFAULT = Path(__file__).resolve().parents[2] / "core" / "default_policy.yaml"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_policy_validate_accepts_the_default(tmp_path: Path) -> None:
    code, out = run("policy", "validate", str(DEFAULT), "--state-dir", str(tmp_path))
    assert code == 0
    assert "valid (2 tenant(s)" in out and "not checked against a model" in out


def test_policy_validate_names_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("tenants:\n  acme:\n    categories:\n      hate: {block_threshold: 2}\n")
    code, out = run("policy", "validate", str(bad), "--state-dir", str(tmp_path))
    assert code == 2
    assert f"error: {bad}: invalid policy" in out
    assert "tenants.acme.categories.hate.block_threshold" in out


def test_moderate_without_a_server_says_how_to_start_one(tmp_path: Path) -> None:
    code, out = run("moderate", "--state-dir", str(tmp_path), "hello")
    assert code == 2 and "start one with 'bastion up'" in out


def test_moderate_unreachable_url(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out = run("moderate", "--state-dir", str(tmp_path), "--url",
                    f"http://127.0.0.1:{port}", "--key", "k", "hello")
    assert code == 2 and "is 'bastion up' running?" in out


def test_up_refuses_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, out = run("up", "--state-dir", str(tmp_path), "--port", str(port))
    assert code == 2 and f"port {port} on 127.0.0.1 is in use" in out and "--port" in out


def test_keys_command(tmp_path: Path) -> None:
    from bastion.core.keys import ensure_keys

    keys, _ = ensure_keys(tmp_path / "tenant_keys.json", ["demo"])
    code, out = run("keys", "demo", "--state-dir", str(tmp_path))
    assert code == 0 and out.strip() == keys["demo"]
    code, out = run("keys", "nobody", "--state-dir", str(tmp_path))
    assert code == 2 and "no key for tenant 'nobody'" in out


def test_limits_are_configurable_and_bad_values_named(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.core.settings import load_settings

    monkeypatch.setenv("BASTION_LIMITS__MAX_ITEMS", "512")
    assert load_settings(tmp_path).limits.max_items == 512
    monkeypatch.setenv("BASTION_LIMITS__MAX_ITEMS", "0")
    code, out = run("keys", "--state-dir", str(tmp_path))
    assert code == 2 and "BASTION_LIMITS__MAX_ITEMS: Input should be greater than" in out


def test_up_prints_a_key_only_in_the_start_that_created_it(tmp_path: Path) -> None:
    from bastion.core.keys import load_keys
    from bastion.core.policy import load_policy
    from bastion.core.settings import load_settings
    from bastion.platform import announce_keys

    settings = load_settings(tmp_path)
    policy = load_policy(DEFAULT)
    first: list[str] = []
    keys = announce_keys(settings, policy, first.append)
    assert keys == load_keys(settings.keys_file) and set(keys) == set(policy.tenants)
    for tenant, key in keys.items():
        assert sum(key in line for line in first) == 1, first
        assert any(f"Tenant {tenant!r} API key (new, shown once)" in line for line in first)
    again: list[str] = []
    assert announce_keys(settings, policy, again.append) == keys
    assert not any(key in line for line in again for key in keys.values()), again
    assert any("see them with 'bastion keys TENANT" in line for line in again), again
    code, out = run("keys", "demo", "--state-dir", str(tmp_path))
    assert code == 0 and out.strip() == keys["demo"]


def test_registry_commands_refuse_clearly_when_mlflow_is_unreachable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("BASTION_MLFLOW_TRACKING_URI", uri)
    for args in (["rollback"], ["promote", "2"], ["models", "list"]):
        code, out = run(*args, "--state-dir", str(tmp_path))
        assert code == 2, out
        assert f"error: the model registry (MLflow tracking URI {uri}) is unreachable" in out
        assert "BASTION_MLFLOW_TRACKING_URI" in out and "Traceback" not in out


def test_image_retraining_refuses_the_text_models_options_and_needs_labelled_images(
        tmp_path: Path) -> None:
    code, out = run("retrain", "--modality", "image", "--mode", "full",
                    "--state-dir", str(tmp_path))
    assert code == 2 and "frozen image backbone: drop --mode full" in out
    code, out = run("retrain", "--modality", "image", "--state-dir", str(tmp_path))
    assert code != 0 and "no reviewed image to train on" in out
