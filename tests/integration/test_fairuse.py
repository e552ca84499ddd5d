"""Fair use through the real served API: a policy edit gives a tenant limits (hot reload, no
restart); past them it gets 429 with Retry-After, while another tenant is served as before."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from bastion.core.policy import parse_policy
from bastion.platform import deploy

from .conftest import Served

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.model]


@pytest.fixture()
def limited(served: Served) -> Iterator[Served]:
    """acme limited to 2 items/s (a burst of 4) and 2 requests in flight; restored after."""
    data = served.policy.model_dump(mode="json", exclude_none=True)
    data["tenants"]["acme"]["fair_use"] = {"items_per_s": 2, "burst_items": 4,
                                           "max_in_flight": 2}
    deploy(served.settings, parse_policy(data), served.keys, served.dashboard)
    try:
        yield served
    finally:
        deploy(served.settings, served.policy, served.keys, served.dashboard)


async def _flood(served: Served, tenant: str, n: int) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {served.keys[tenant]}"}
    body = {"tenant": tenant, "items": [{"id": "1", "text": "see you at lunch"}]}
    async with httpx.AsyncClient(base_url=served.url, timeout=60) as client:
        return list(await asyncio.gather(*[client.post("/v1/moderate", json=body,
                                                       headers=headers) for _ in range(n)]))


def test_a_tenant_past_its_limits_gets_429_and_another_is_still_served(
        limited: Served) -> None:
    answers = asyncio.run(_flood(limited, "acme", 12))
    codes = [r.status_code for r in answers]
    assert set(codes) <= {200, 429} and codes.count(200) >= 1, codes
    refused = [r for r in answers if r.status_code == 429]
    assert len(refused) >= 8, codes  # at most the burst of 4 passes at once
    for r in refused:
        assert int(r.headers["Retry-After"]) >= 1
        assert "tenants.acme.fair_use" in r.json()["error"]
    # the other tenant, at the same moment, is served in full
    assert [r.status_code for r in asyncio.run(_flood(limited, "studio", 8))] == [200] * 8
    # a request larger than acme's whole burst can never pass: 413, not a retry
    big = limited.moderate("acme", ["hello"] * 5)
    assert big.status_code == 413 and "burst_items" in big.json()["error"]
