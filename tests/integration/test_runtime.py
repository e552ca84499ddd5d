"""Local Ray keeps its control plane on loopback: the dashboard and Jobs API (a job submission
runs code, and auth is off locally) and the GCS listen on 127.0.0.1 only."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from bastion.core.runtime import dashboard_http

pytestmark = [pytest.mark.ray,
              pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/net/tcp")]


def _listeners(port: int) -> set[str]:
    """Addresses with a listening TCP socket on ``port`` (IPv4 and IPv6), from /proc/net."""
    found = set()
    for table in ("tcp", "tcp6"):
        path = Path("/proc/net") / table
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, _, hex_port = local.rpartition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(addr)
    return found


# 127.0.0.1, ::1 and ::ffff:127.0.0.1, as /proc/net writes them
LOOPBACK = {"0100007F", "00000000000000000000000001000000",
            "0000000000000000FFFF00000100007F"}


def test_the_dashboard_and_gcs_listen_on_loopback_only(dashboard: str) -> None:
    import ray

    url = urlsplit(dashboard_http(dashboard))
    assert url.hostname == "127.0.0.1"
    assert url.port is not None
    assert httpx.get(f"http://127.0.0.1:{url.port}/api/version", timeout=10).status_code == 200
    listeners = _listeners(url.port)
    assert listeners and listeners <= LOOPBACK, listeners
    gcs_host, _, gcs_port = ray.get_runtime_context().gcs_address.rpartition(":")
    assert gcs_host == "127.0.0.1"
    gcs = _listeners(int(gcs_port))
    assert gcs and gcs <= LOOPBACK, gcs
