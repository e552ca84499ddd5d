"""What the Ingress does when something under it fails: a Scorer replica dies, the event log's
store goes down. A client gets its answer, or a 503 with ``Retry-After`` that says what to
wait for; never a 500 for a fault one retry hides, never a 2xx whose decisions are not kept.

- :func:`retrying` calls a Scorer method, and on a replica failure (the replica died mid-call,
  or Serve has no replica to give it) calls it once more: Serve routes the second call to a
  live replica when there is one (a dead replica leaves the handle's routing table when its
  call fails), else waits for the controller's replacement. Both calls share one time budget;
  past it, or on a second failure, the answer is 503 with ``Retry-After``. Scoring is pure, so
  calling it twice is safe.
- :func:`record` hands a response's decisions to the event log and review intake writers, or
  refuses the request with 503 when either queue is full (the store has been failing long
  enough to fill it): a request answered 2xx always has its decisions queued.
- :func:`store_health` is what ``/readyz`` shows of those writers, and whether they are fine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

from ray.exceptions import RayActorError
from ray.serve.exceptions import (
    BackPressureError,
    DeploymentUnavailableError,
    ReplicaUnavailableError,
)

from bastion.core.http import ApiError
from bastion.core.writer import BackgroundWriter, WriterFull

__all__ = ["REPLICA_FAILURES", "Reachability", "record", "retrying", "store_health"]

log = logging.getLogger("ray.serve")

# What a DeploymentHandle call raises when the replica, not the request, failed: the actor
# died mid-call (ActorDiedError) or cannot be reached (ActorUnavailableError), both
# RayActorError; no replica to route to; the replicas' queues are full.
REPLICA_FAILURES: tuple[type[BaseException], ...] = (
    RayActorError, DeploymentUnavailableError, ReplicaUnavailableError, BackPressureError)

# One budget for a call and its retry. A replacement Scorer replica loads the encoder before it
# takes calls (~10-30 s on a small CPU machine): with one replica, a retry waits for it within
# this budget; with two, the live one answers at once. Past it the client is told to come back.
CALL_BUDGET_S = 45.0
RETRY_AFTER_S = 5.0
# The longest a response waits for its decisions to be written while the store looks healthy.
DURABLE_WAIT_S = 5.0


class _Method(Protocol):
    def remote(self, *args: Any) -> Any: ...


async def retrying(method: _Method, *args: Any, attempts: int = 2,
                   budget_s: float = CALL_BUDGET_S, what: str = "Scorer") -> Any:
    """``await method.remote(*args)``, called again once (``attempts``) on a replica failure,
    all within ``budget_s`` seconds; a 503 with ``Retry-After`` when it cannot succeed."""
    deadline = time.monotonic() + budget_s
    last: BaseException | None = None
    for attempt in range(attempts):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        response = method.remote(*args)
        try:
            return await asyncio.wait_for(_awaited(response), remaining)
        except REPLICA_FAILURES as err:
            last = err
            log.warning("%s call failed on a replica (attempt %d of %d): %s: %s", what,
                        attempt + 1, attempts, type(err).__name__, str(err).splitlines()[0]
                        if str(err) else "")
        except TimeoutError as err:
            last = err
            break
    reason = ("no replica answered within "
              f"{budget_s:.0f} s" if isinstance(last, TimeoutError) or last is None
              else f"its replica failed ({type(last).__name__}) and so did the retry")
    raise ApiError(503, f"the {what} cannot serve right now: {reason}; retry shortly",
                   retry_after_s=RETRY_AFTER_S)


async def _awaited(response: Any) -> Any:
    return await response


async def record(events: BackgroundWriter[Any], review: BackgroundWriter[Any] | None,
                 decisions: Sequence[Any], review_items: Sequence[Any]) -> None:
    """Queue a response's decisions (and its review-band items), or refuse the request with
    503 + ``Retry-After`` if either writer cannot take them; then wait until the decisions are
    written (group commit, one transaction), so that a replica killed right after it answered
    loses nothing it answered. While the store fails, the answer goes out once they are queued
    (bounded, retried, reported by ``/readyz``), and after ``DURABLE_WAIT_S`` at most."""
    for writer, items in ((events, decisions), (review, review_items)):
        if writer is not None and items and not writer.room(len(items)):
            err = writer.full_error()
            raise ApiError(503, str(err), retry_after_s=err.retry_after_s)
    loop = asyncio.get_running_loop()
    written: asyncio.Future[None] = loop.create_future()
    try:
        events.submit(list(decisions), on_done=lambda: loop.call_soon_threadsafe(
            _resolve, written))
        if review is not None:
            review.submit(list(review_items))
    except WriterFull as err:
        raise ApiError(503, str(err), retry_after_s=err.retry_after_s) from None
    if decisions and events.failing_since is None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(written), DURABLE_WAIT_S)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def store_health(*writers: BackgroundWriter[Any] | None) -> tuple[bool, dict[str, Any]]:
    """``/readyz``'s view of the writers: each one's health, and whether all write."""
    out: dict[str, Any] = {}
    ok = True
    for w in writers:
        if w is None:
            continue
        h = w.health()
        out[w.name.replace(" ", "_")] = h.as_dict()
        if not h.ok:
            ok = False
            out.setdefault("not_ready_because", []).append(
                f"{w.name} writes fail since "
                f"{time.strftime('%H:%M:%S', time.gmtime(h.failing_since or time.time()))} "
                f"UTC ({h.last_error}); {h.queued} of {h.capacity} accepted items wait")
    return ok, out


class Reachability:
    """Whether a dependency polled in the background (the Scorer's MLflow registry) answers:
    the Scorer keeps serving its loaded champion while it does not, and says so."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failing_since: float | None = None
        self.last_error: str | None = None
        self.last_ok: float | None = None

    def ok(self) -> None:
        if self.failing_since is not None:
            log.warning("%s reachable again after %.0f s", self.what,
                        time.time() - self.failing_since)
        self.failing_since, self.last_error, self.last_ok = None, None, time.time()

    def failed(self, err: BaseException) -> None:
        self.last_error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        if self.failing_since is None:
            self.failing_since = time.time()

    def as_dict(self) -> dict[str, Any]:
        return {"what": self.what, "reachable": self.failing_since is None,
                "failing_since": self.failing_since, "last_error": self.last_error,
                "last_ok": self.last_ok}
