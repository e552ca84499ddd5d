"""What Bastion adds to Ray Serve's HTTP proxy: a request that no replica answered is sent
again, instead of failing with HTTP 500 (or 404 while the application is being deployed).

When an Ingress replica dies (``kill -9``, an out-of-memory kill, a node lost) with requests
in flight, Serve's proxy gets ``ActorDiedError`` for them and its ASGI app returns without
starting a response; uvicorn then answers ``500 Internal Server Error``. The request itself is
fine: another replica could answer it. This middleware runs in the proxy (Ray Serve's
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` hook, set by :func:`bastion.core.runtime.ray_env`
and in the Kubernetes ConfigMap). It keeps the request body, and when the app returns without
a response having started, it sends the same request again, once the proxy's router has
dropped the dead replica, until :data:`REPLAY_BUDGET_S` is spent. Past that, nothing could
answer: ``503`` with ``Retry-After``, never 500.

While ``bastion up`` starts or redeploys, the proxy is up before the application is, and
answers ``404 Path not found`` for every route. Every response of the application carries
:data:`SERVED_HEADER` (:class:`MarkServed`), so a 404 without it is the proxy's: no application
is deployed at that path yet. Such a request is replayed the same way, within the same budget.

What is and is not replayed:

- Only a request that got no response at all. A replica that answered, even with its own 500,
  is never asked twice, and neither is a response that had started.
- A body larger than :data:`MAX_REPLAY_BODY_BYTES` is passed through without a copy and is not
  replayed (the Ingress refuses bodies past ``limits.max_body_bytes``, 4 MiB by default).
- A replayed request may have been partly done by the replica that died: a decision it had
  already written to the event log is written again by the replay (at least once, never lost).
  Every Bastion endpoint that changes state is idempotent or keyed (label submissions, claims,
  policy edits), so a replay cannot do a thing twice that matters more than a duplicate event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.middleware import Middleware

__all__ = ["MAX_REPLAY_BODY_BYTES", "MarkServed", "REPLAY_BUDGET_S", "ReplayUnanswered",
           "SERVED_HEADER", "proxy_middlewares"]

logger = logging.getLogger("bastion.proxy")

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Bodies up to this size are kept for a replay (a copy of what the proxy buffers anyway).
MAX_REPLAY_BODY_BYTES = 16 * 1024 * 1024
#: How long a request may keep being replayed while no replica answers it; a replacement
#: Ingress replica starts in a few seconds, a whole redeploy in tens.
REPLAY_BUDGET_S = 30.0
#: ``Retry-After`` when nothing answered within the budget.
RETRY_AFTER_S = 5
#: The header every response of the application carries (:class:`MarkServed`).
SERVED_HEADER = b"x-bastion-served"


class MarkServed:
    """ASGI middleware of the application (not the proxy): every response carries
    :data:`SERVED_HEADER`, so the proxy's middleware tells the application's 404 (an unknown
    task) from the proxy's (no application deployed at the path yet)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  (SERVED_HEADER, b"1")]}
            await send(message)

        await self.app(scope, receive, marked)


class ReplayUnanswered:
    """ASGI middleware: replay a request that the app returned from without answering."""

    def __init__(self, app: ASGIApp, *, budget_s: float = REPLAY_BUDGET_S,
                 max_body_bytes: int = MAX_REPLAY_BODY_BYTES) -> None:
        self.app = app
        self.budget_s = budget_s
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending it all
                await self.app(scope, _replayed([], message, receive), send)
                return
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            more = bool(message.get("more_body", False))
            if more and size > self.max_body_bytes:  # too large to keep: no replay
                await self.app(scope, _replayed(chunks, None, receive, more=True), send)
                return
        body = b"".join(chunks)
        deadline = time.monotonic() + self.budget_s
        attempt = 0
        while True:
            started = dropped = False

            async def tracking_send(message: Message) -> None:
                nonlocal started, dropped
                if message["type"] == "http.response.start":
                    if message["status"] == 404 and not any(
                            k.lower() == SERVED_HEADER for k, _ in message.get("headers", [])):
                        dropped = True  # the proxy's: nothing deployed at this path yet
                        return
                    started = True
                if not dropped:
                    await send(message)

            await self.app(scope, _replayed([body], None, receive), tracking_send)
            if started:
                return
            attempt += 1
            left = deadline - time.monotonic()
            if left <= 0:
                logger.warning("%s %s: no replica answered in %d attempts over %.0f s; 503",
                               scope.get("method"), scope.get("path"), attempt, self.budget_s)
                await _unavailable(send, attempt)
                return
            logger.warning("%s %s: %s; replaying (attempt %d)", scope.get("method"),
                           scope.get("path"), "no application deployed at the path yet"
                           if dropped else "the replica died before answering", attempt + 1)
            await asyncio.sleep(min(0.05 * 2 ** attempt, 1.0, left))


def _replayed(chunks: list[bytes], last: Message | None, receive: Receive, *,
              more: bool = False) -> Receive:
    """A ``receive`` that gives the kept body again, then (``more``) the rest of it, then
    whatever the client sends next (its disconnect)."""
    pending: list[Message] = [{"type": "http.request", "body": c, "more_body": True}
                              for c in chunks]
    if pending and not more:
        pending[-1]["more_body"] = False
    if last is not None:
        pending.append(last)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


async def _unavailable(send: Send, attempts: int) -> None:
    body = json.dumps({  # the API's ErrorBody
        "error": f"No Ingress replica answered this request ({attempts} attempts over "
                 f"{REPLAY_BUDGET_S:.0f} s): the service is starting, restarting or "
                 f"overloaded. Send it again after Retry-After seconds.",
    }).encode()
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"retry-after", str(RETRY_AFTER_S).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def proxy_middlewares() -> list[Any]:
    """The callback Ray Serve's proxy calls at start
    (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``): the Starlette middlewares it wraps its
    ASGI app in."""
    return [Middleware(ReplayUnanswered)]
