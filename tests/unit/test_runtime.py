"""How Bastion sets Ray's environment: auth off on a local (loopback-only) cluster, kept on
where the cluster runs with Ray's token (KubeRay's authOptions)."""

from __future__ import annotations

import pytest


def test_a_cluster_with_token_auth_keeps_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.core.runtime import process_ray_env, ray_env

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    assert process_ray_env()["RAY_AUTH_MODE"] == "disabled" == ray_env()["RAY_AUTH_MODE"]
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # KubeRay's authOptions set it in the pod
    assert "RAY_AUTH_MODE" not in process_ray_env()
