"""The Ingress's answers to faults below it: one retry on a replica failure, 503 with
Retry-After when nothing can serve, a full writer refusing the request, /readyz's view."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError

from bastion.core.http import ApiError
from bastion.core.writer import BackgroundWriter
from bastion.serving.resilience import Reachability, record, retrying, store_health


class FakeMethod:
    """A Scorer method's handle: each ``remote`` call runs the next scripted outcome."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[tuple[Any, ...]] = []

    def remote(self, *args: Any) -> Any:
        self.calls.append(args)
        outcome = self.outcomes.pop(0)

        async def run() -> Any:
            if isinstance(outcome, float):
                await asyncio.sleep(outcome)
                return "late"
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

        return run()


def test_a_dead_replica_is_retried_once_and_the_answer_returned() -> None:
    method = FakeMethod(ActorDiedError(), "scored")
    assert asyncio.run(retrying(method, ["a", "b"])) == "scored"
    assert method.calls == [(["a", "b"],), (["a", "b"],)]


def test_two_failures_are_a_503_with_retry_after_never_a_500() -> None:
    method = FakeMethod(ActorDiedError(), ActorUnavailableError("gone", None))
    with pytest.raises(ApiError, match="Scorer cannot serve right now: its replica failed "
                                       r"\(ActorUnavailableError\) and so did the retry") as err:
        asyncio.run(retrying(method, ["a"]))
    assert err.value.status == 503 and err.value.headers == {"Retry-After": "5"}


def test_the_retry_is_bounded_in_time() -> None:
    method = FakeMethod(ActorDiedError(), 5.0)
    with pytest.raises(ApiError, match="no replica answered within 0 s") as err:
        asyncio.run(retrying(method, ["a"], budget_s=0.2))
    assert err.value.status == 503


def test_an_error_of_the_request_itself_is_not_retried() -> None:
    method = FakeMethod(ValueError("bad input"))
    with pytest.raises(ValueError, match="bad input"):
        asyncio.run(retrying(method, ["a"]))
    assert len(method.calls) == 1


def _down(_batch: list[Any]) -> None:
    raise ConnectionError("connection refused")


def test_record_refuses_with_503_when_a_writer_is_full_and_takes_nothing() -> None:
    events: BackgroundWriter[int] = BackgroundWriter("event log", _down, capacity=4,
                                                     flush_every_s=0.01, max_backoff_s=0.02)
    review: BackgroundWriter[int] = BackgroundWriter("review intake", _down, capacity=1,
                                                     flush_every_s=0.01, max_backoff_s=0.02)
    asyncio.run(record(events, review, [1, 2], []))  # the store fails: answered once queued
    with pytest.raises(ApiError, match="review intake cannot keep up") as err:
        asyncio.run(record(events, review, [3], [1, 2]))
    assert err.value.status == 503 and "Retry-After" in (err.value.headers or {})
    assert events.health().queued == 2  # the refused request's decisions were not taken
    with pytest.raises(ApiError, match="event log cannot keep up"):
        asyncio.run(record(events, None, [3, 4, 5], []))
    events.close(timeout=0.1)
    review.close(timeout=0.1)


def test_record_answers_once_the_decisions_are_written() -> None:
    written: list[int] = []

    def slow(batch: list[int]) -> None:
        time.sleep(0.2)
        written.extend(batch)

    events: BackgroundWriter[int] = BackgroundWriter("event log", slow, flush_every_s=10.0)

    async def three_requests() -> None:
        await asyncio.gather(*[record(events, None, [i], []) for i in range(3)])
        assert sorted(written) == [0, 1, 2]  # on disk before any of them is answered

    asyncio.run(three_requests())
    events.close()


def test_store_health_names_the_failing_writer() -> None:
    events: BackgroundWriter[int] = BackgroundWriter("event log", _down, flush_every_s=0.01,
                                                     max_backoff_s=0.02)
    fine: BackgroundWriter[int] = BackgroundWriter("review intake", lambda _b: None)
    assert store_health(events, fine, None)[0]
    events.submit([1])
    for _ in range(500):
        ok, details = store_health(events, fine)
        if not ok:
            break
        time.sleep(0.01)
    assert not ok
    assert details["event_log"]["queued"] == 1 and details["review_intake"]["ok"]
    (why,) = details["not_ready_because"]
    assert why.startswith("event log writes fail since ") and "ConnectionError" in why
    events.close(timeout=0.1)
    fine.close()


def test_reachability_reports_an_outage_and_its_end() -> None:
    r = Reachability("MLflow registry http://127.0.0.1:1")
    r.failed(ConnectionError("refused"))
    d = r.as_dict()
    assert not d["reachable"] and d["last_error"] == "ConnectionError: refused"
    r.ok()
    assert r.as_dict()["reachable"] and r.as_dict()["last_error"] is None
