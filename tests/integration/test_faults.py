"""Faults under a little concurrent load on the real application: a Scorer replica killed
(SIGKILL), an Ingress replica killed, the database unreachable and back. Each test leaves
the session's application as it found it (replicas replaced, the database URL restored)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from sqlalchemy import make_url

from bastion.core.events import EventLog
from bastion.platform import deploy
from bench._faults import Load, TcpRelay, kill_replica, readyz
from tests._databases import postgres_schema, postgres_server

from .conftest import Served

pytestmark = [pytest.mark.ray, pytest.mark.model]

TEXTS = ["see you at lunch tomorrow?", "you are a worthless piece of trash", "gg all",
         "buy cheap followers now at spam.example", "what a lovely day"]


def wait_for(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if cond():
                return
        except Exception:  # noqa: BLE001 - a replica mid-restart: ask again
            pass
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s"
        time.sleep(0.25)


def logged_ids(url: str, prefix: str) -> set[str]:
    log = EventLog(url)
    try:
        return {e.item_id for e in log.read(tenant="acme") if e.item_id.startswith(prefix)}
    finally:
        log.close()


def test_killing_the_scorer_replica_under_load_never_answers_500(served: Served) -> None:
    prefix = f"scorer-kill-{time.time_ns()}"
    load = Load(served.url, "acme", served.keys["acme"], TEXTS, concurrency=4,
                prefix=prefix).start()
    load.wait_requests(20)
    pid = kill_replica(served.url, "scorer")
    wait_for(lambda: readyz(served.url)[0] == 200
             and readyz(served.url)[1]["scorer"]["pid"] != pid, 120, "a new Scorer replica")
    load.wait_requests(load.result.requests + 20)
    result = load.stop()
    summary = result.summary()
    refused = {k: v for k, v in result.statuses.items() if k != "200"}
    if served.settings.serving.scorer_replicas >= 2:
        assert summary["failures"] == 0, summary  # the retry went to the live replica
    else:
        # One replica: a retry waits for its replacement, within the call's budget; past it
        # (a loaded machine loads the encoder slowly) the answer is 503 with Retry-After.
        assert set(refused) <= {"503"}, summary
        assert len(result.retry_after) == refused.get("503", 0), summary
    answered = {i for _, i in result.answered_2xx_items}
    wait_for(lambda: answered <= logged_ids(served.settings.database_url, prefix), 30,
             "every answered item logged")


def test_killing_an_ingress_replica_under_load_answers_every_request(served: Served) -> None:
    """Two Ingress replicas: new requests go to the live one at once, and a request in flight
    on the replica killed is replayed by the proxy's middleware (core/proxyreplay.py)."""
    prefix = f"ingress-kill-{time.time_ns()}"
    load = Load(served.url, "acme", served.keys["acme"], TEXTS, concurrency=4,
                prefix=prefix).start()
    load.wait_requests(20)
    kill_replica(served.url, "ingress")
    at_kill = load.result.requests
    load.wait_requests(at_kill + 40)
    wait_for(lambda: readyz(served.url)[0] == 200, 120, "ready after the kill")
    load.wait_requests(load.result.requests + 20)
    result = load.stop()
    summary = result.summary()
    if served.settings.serving.ingress_replicas >= 2:
        assert summary["failures"] == 0, summary
    else:  # nothing serves until the replacement starts: 503 with Retry-After at worst
        refused = {k: v for k, v in result.statuses.items() if k != "200"}
        assert set(refused) <= {"503"}, summary
        assert len(result.retry_after) == refused.get("503", 0), summary
    answered = {i for _, i in result.answered_2xx_items}
    wait_for(lambda: answered <= logged_ids(served.settings.database_url, prefix), 30,
             "every answered item logged")


@pytest.mark.postgres
def test_database_outage_readyz_names_it_nothing_answered_is_lost(served: Served) -> None:
    server = postgres_server()
    with postgres_schema(server) as direct:
        relay = TcpRelay((server.host or "127.0.0.1", server.port or 5432))
        via = make_url(direct).set(host="127.0.0.1", port=relay.port).render_as_string(
            hide_password=False)
        settings = served.settings.model_copy(update={"database_url": via})
        try:
            deploy(settings, served.policy, served.keys, served.dashboard)
            prefix = f"outage-{time.time_ns()}"
            load = Load(served.url, "acme", served.keys["acme"], TEXTS, concurrency=4,
                        prefix=prefix).start()
            load.wait_requests(10)
            relay.cut()
            wait_for(lambda: readyz(served.url)[0] == 503, 60, "not ready in the outage")
            status, body = readyz(served.url)
            (why, *_) = body["stores"]["not_ready_because"]
            assert "writes fail since" in why and "accepted items wait" in why, why
            load.wait_requests(load.result.requests + 10)  # still answered: queued
            relay.restore()
            wait_for(lambda: readyz(served.url)[0] == 200, 90, "ready after the outage")
            load.wait_requests(load.result.requests + 10)
            result = load.stop()
            assert result.summary()["server_errors_500"] == 0, result.summary()
            answered = {i for _, i in result.answered_2xx_items}
            wait_for(lambda: answered <= logged_ids(direct, prefix), 60,
                     "every answered item logged after the store came back")
        finally:
            deploy(served.settings, served.policy, served.keys, served.dashboard)
            relay.close()
