"""The proxy middleware that replays a request no replica answered (core/proxyreplay.py), on
plain ASGI apps: the integration test kills a real Ingress replica."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bastion.core.proxyreplay import SERVED_HEADER, MarkServed, ReplayUnanswered, proxy_middlewares
from bastion.core.runtime import ray_env

Message = dict[str, Any]


class Flaky:
    """An app that returns without answering (as Serve's proxy does when the replica died)
    the first ``dies`` times, then echoes the body it read."""

    def __init__(self, dies: int, status: int = 200) -> None:
        self.dies, self.status, self.calls = dies, status, 0
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        if self.calls <= self.dies:
            return
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": body, "more_body": False})


def call(app: Any, chunks: list[bytes]) -> list[Message]:
    sent: list[Message] = []
    incoming = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                for i, c in enumerate(chunks)]

    async def receive() -> Message:
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(3600)  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/moderate", "headers": []}
    asyncio.run(app(scope, receive, send))
    return sent


def test_an_unanswered_request_is_replayed_with_its_whole_body() -> None:
    inner = Flaky(dies=2)
    sent = call(ReplayUnanswered(inner, budget_s=10), [b'{"items": ', b"[]}"])
    assert inner.calls == 3
    assert inner.bodies == [b'{"items": []}'] * 3
    assert sent[0]["status"] == 200 and sent[1]["body"] == b'{"items": []}'


def test_an_answer_is_never_replayed_even_a_500() -> None:
    inner = Flaky(dies=0, status=500)
    sent = call(ReplayUnanswered(inner, budget_s=10), [b"x"])
    assert inner.calls == 1 and sent[0]["status"] == 500


def test_when_nothing_answers_within_the_budget_it_is_503_with_retry_after() -> None:
    inner = Flaky(dies=10**6)
    sent = call(ReplayUnanswered(inner, budget_s=0.3), [b"x"])
    assert inner.calls >= 2
    start, body = sent
    assert start["status"] == 503
    headers = dict(start["headers"])
    assert int(headers[b"retry-after"]) >= 1
    assert "No Ingress replica answered" in json.loads(body["body"])["error"]


def test_a_body_too_large_to_keep_passes_through_and_is_not_replayed() -> None:
    inner = Flaky(dies=1)
    sent = call(ReplayUnanswered(inner, budget_s=10, max_body_bytes=4), [b"12345", b"678"])
    assert inner.calls == 1 and inner.bodies == [b"12345678"]
    assert sent == []  # the proxy's own 500 stands: the body could not be sent again


def test_ray_processes_load_it_as_the_proxy_callback() -> None:
    path = ray_env()["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"]
    assert path == "bastion.core.proxyreplay:proxy_middlewares"
    (middleware,) = proxy_middlewares()
    assert middleware.cls is ReplayUnanswered


class NotDeployedYet:
    """The proxy before the application is deployed: 404 without the application's header,
    ``until`` times, then the application's own answer (a 404 of its own here)."""

    def __init__(self, until: int) -> None:
        self.until, self.calls = until, 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        await receive()
        if self.calls <= self.until:
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"Path '/v1' not found."})
            return
        await MarkServed(self._app)(scope, receive, send)

    @staticmethod
    async def _app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b'{"error": "no task"}'})


def test_the_proxys_404_before_deployment_is_replayed_the_apps_own_404_is_not() -> None:
    inner = NotDeployedYet(until=2)
    sent = call(ReplayUnanswered(inner, budget_s=10), [b"x"])
    assert inner.calls == 3
    start, body = sent
    assert start["status"] == 404 and (SERVED_HEADER, b"1") in start["headers"]
    assert body["body"] == b'{"error": "no task"}'


def test_nothing_deployed_within_the_budget_is_503_not_404() -> None:
    sent = call(ReplayUnanswered(NotDeployedYet(until=10**6), budget_s=0.3), [b"x"])
    assert [m.get("status") for m in sent] == [503, None]
