"""The background writers through a store outage: nothing accepted is lost, a full queue
refuses rather than drops, health says what is wrong, and the log recovers with the store."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.core.events import EventLog, EventWriter
from bastion.core.writer import BackgroundWriter, WriterFull
from tests._databases import sqlite_url

from .test_events import event


def wait_for(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


class VanishingStore:
    """A real SQLite event log whose folder disappears and comes back: connections opened
    while it is gone fail (``unable to open database file``), as a lost disk would."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "db"
        self.dir.mkdir()
        self.log = EventLog(sqlite_url(self.dir))

    def fail(self) -> None:
        self.log.reset()  # drop pooled connections: the next write must open the file
        os.rename(self.dir, self.dir.with_name("db.gone"))

    def recover(self) -> None:
        os.rename(self.dir.with_name("db.gone"), self.dir)


def test_event_writer_survives_a_store_outage_and_keeps_every_event(tmp_path: Path) -> None:
    store = VanishingStore(tmp_path)
    writer = EventWriter(store.log, flush_every_s=0.01, max_backoff_s=0.05)
    writer.submit([event(i) for i in range(10)])
    wait_for(lambda: writer.health().written == 10)
    store.fail()
    writer.submit([event(i) for i in range(10, 30)])  # accepted while the store is down
    wait_for(lambda: not writer.health().ok)
    h = writer.health()
    assert h.queued == 20 and h.failing_since is not None and h.errors >= 1
    assert h.last_error is not None and "OperationalError" in h.last_error
    time.sleep(0.3)  # several failed retries: the writer keeps going
    assert writer._thread.is_alive() and writer.health().queued == 20
    store.recover()
    wait_for(lambda: writer.health().ok and writer.health().queued == 0)
    writer.close()
    assert store.log.count("acme") == 30 and writer.health().failing_since is None
    assert sorted(int(e.item_id) for e in store.log.read()) == list(range(30))
    store.log.close()


def test_a_full_queue_refuses_new_work_and_drops_nothing(tmp_path: Path) -> None:
    store = VanishingStore(tmp_path)
    store.fail()
    writer = EventWriter(store.log, flush_every_s=0.01, max_backoff_s=0.05, capacity=8)
    writer.submit([event(i) for i in range(5)])
    assert not writer.room(4) and writer.room(3)
    with pytest.raises(WriterFull, match=r"event log cannot keep up: 5 items wait .*capacity 8"):
        writer.submit([event(i) for i in range(5, 9)])  # all or nothing: none of it taken
    wait_for(lambda: writer.health().last_error is not None)
    with pytest.raises(WriterFull, match="failing since .* UTC: OperationalError") as err:
        writer.submit([event(9)] * 4)
    assert err.value.retry_after_s >= 1
    store.recover()
    wait_for(lambda: writer.health().queued == 0)
    writer.submit([event(i) for i in range(5, 8)])
    writer.close()
    assert sorted(int(e.item_id) for e in store.log.read()) == list(range(8))
    with pytest.raises(WriterFull, match="shutting down"):
        writer.submit([event(99)])
    store.log.close()


def test_an_invalid_row_is_left_out_and_counted_the_rest_written(tmp_path: Path) -> None:
    store = VanishingStore(tmp_path)
    writer = EventWriter(store.log, flush_every_s=0.05)
    bad = dataclasses.replace(event(1), tenant=None)  # type: ignore[arg-type]  # NOT NULL
    writer.submit([event(0), bad, event(2)])
    writer.close()
    assert [e.item_id for e in store.log.read()] == ["0", "2"]
    h = writer.health()
    assert h.rejected == 1 and h.written == 2 and h.ok
    store.log.close()


def test_close_flushes_and_gives_up_loudly_only_past_its_timeout(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    writes: list[list[int]] = []

    def down(batch: list[int]) -> None:
        raise ConnectionError("store unreachable")

    writer: BackgroundWriter[int] = BackgroundWriter("test log", down, flush_every_s=0.01,
                                                     max_backoff_s=0.02)
    writer.submit([1, 2, 3])
    writer.close(timeout=0.2)
    assert not writer._thread.is_alive()
    assert "3 accepted item(s) could not be written" in caplog.text

    ok: BackgroundWriter[int] = BackgroundWriter("test log", writes.append,
                                                 flush_every_s=10.0)
    ok.submit([1, 2])
    ok.submit([3])
    ok.close()
    assert [x for b in writes for x in b] == [1, 2, 3]
