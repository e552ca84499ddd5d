"""One local Ray cluster, one small starter model in a real MLflow registry (SQLite), and one
Serve application per test session; tests clean up what they change."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bastion.core.keys import ensure_keys
from bastion.core.model import ModerationModel
from bastion.core.policy import PolicySet, load_policy
from bastion.core.settings import Settings, load_settings

POLICY = Path(__file__).with_name("policy.yaml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    # the canary guard every 2 s (test_shadow.py), not every minute
    return load_settings(tmp_path_factory.mktemp("state"), port=free_port(),
                         serving={"canary_check_s": 2.0})


@dataclass
class Starter:
    version: str
    model: ModerationModel


@pytest.fixture(scope="session")
def starter(settings: Settings) -> Starter:
    """The shipped starter heads, registered as @champion exactly as 'bastion up' does on an
    empty registry (seconds; no development data needed)."""
    from bastion.training.starter import register_starter

    version, model = register_starter(settings, load_policy(POLICY))
    return Starter(version, model)


@pytest.fixture(scope="session")
def dashboard(settings: Settings) -> Iterator[str]:
    import shutil

    from bastion.core.runtime import ray_temp_dir, start_ray, stop_ray

    url = start_ray(settings)
    yield url
    stop_ray()
    shutil.rmtree(ray_temp_dir(settings.state_dir), ignore_errors=True)


@dataclass
class Served:
    url: str
    keys: dict[str, str]
    settings: Settings
    dashboard: str
    policy: PolicySet

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def moderate(self, tenant: str, texts: list[str], key: str | None = None,
                 **extra: object) -> httpx.Response:
        body = {"tenant": tenant, "items": [{"id": str(i), "text": t}
                                            for i, t in enumerate(texts)], **extra}
        with self.client() as c:
            return c.post("/v1/moderate", json=body,
                          headers={"Authorization": f"Bearer {key or self.keys[tenant]}"})


@pytest.fixture(scope="session")
def served(settings: Settings, starter: Starter, dashboard: str) -> Served:
    from bastion.platform import deploy

    policy = load_policy(POLICY)
    keys, _ = ensure_keys(settings.keys_file, policy.tenants)
    deploy(settings, policy, keys, dashboard)
    return Served(f"http://127.0.0.1:{settings.port}", keys, settings, dashboard, policy)
