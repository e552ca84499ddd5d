"""A background writer that never gives up on what it accepted: the shared engine of the event
log's writer (``core.events.EventWriter``) and the review intake's (``review.service``).

The request path only enqueues. A write that fails is retried with capped exponential backoff
until the store is back, however long that takes; the queue is bounded, so while the store is
down the writer accepts work until the queue is full and then refuses it (:class:`WriterFull`:
the API answers 503 with ``Retry-After``) instead of accepting and dropping it. Only an item the
store itself rejects as invalid (an integrity or data error, where retrying cannot help) is left
out, and that is logged and counted, never silent. :meth:`BackgroundWriter.health` says whether
writes succeed, since when they fail and why: ``/readyz`` reports it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from bastion.core.errors import StoreError

__all__ = ["BackgroundWriter", "WriterFull", "WriterHealth"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class WriterFull(StoreError):
    """The writer's queue cannot take more: the store has been failing for a while."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class WriterHealth:
    """What ``/readyz`` shows of one writer."""

    ok: bool  # the last write succeeded (or none was needed) and the writer runs
    queued: int  # items accepted and not yet written
    capacity: int  # the most items the queue holds before new work is refused
    written: int  # items written since start
    rejected: int  # items the store refused as invalid (logged one by one)
    errors: int  # failed write attempts since start
    failing_since: float | None  # epoch seconds of the first failure of the current outage
    last_error: str | None  # the last failure, "<type>: <message>"

    def as_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class BackgroundWriter(Generic[T]):
    """Writes batches of ``T`` with ``write`` on a thread; ``close()`` flushes what it accepted.

    Args:
        name: what it writes, for messages and the thread name ("event log").
        write: writes one batch in one transaction; raises on failure.
        permanent: whether an error means the data is invalid (retrying cannot help): the
            batch is then written item by item and only the items that fail are left out.
        reset: called after a failed write (e.g. drop pooled connections, so a store that
            comes back is reached afresh).
        capacity: most items queued; past it :meth:`submit` raises :class:`WriterFull`.
        flush_every_s: how long a partial batch waits for more items.
        max_batch: most items per write.
        linger_s: how long a write waits after the first item for more, unless ``max_batch``
            items wait or a caller waits for it (``on_done``). 0: write at once (group commit:
            what arrives during a write joins the next). The review intake lingers: nobody
            waits for it, and a batch of many items costs about what one item costs.
        backoff_s: first retry delay, doubled per failure up to ``max_backoff_s``.
    """

    def __init__(
        self, name: str, write: Callable[[list[T]], None], *,
        permanent: Callable[[BaseException], bool] = lambda _e: False,
        reset: Callable[[], None] | None = None,
        capacity: int = 100_000, flush_every_s: float = 0.2, max_batch: int = 512,
        linger_s: float = 0.0, backoff_s: float = 0.1, max_backoff_s: float = 5.0,
    ) -> None:
        self.name = name
        self._write, self._permanent, self._reset = write, permanent, reset
        self.capacity, self._flush_every_s, self._max_batch = capacity, flush_every_s, max_batch
        self._backoff_s, self._max_backoff_s = backoff_s, max_backoff_s
        self._linger_s = linger_s
        self._q: deque[T] = deque()
        self._cv = threading.Condition()
        self._inflight = 0
        self._closed = False
        self._stop = False
        self.written = self.rejected = self.errors = 0
        self.failing_since: float | None = None
        self.last_error: str | None = None
        self._close_deadline = float("inf")
        self._accepted = self._completed = 0  # items accepted / written or rejected, in order
        self._waiters: deque[tuple[int, Callable[[], object]]] = deque()
        self._thread = threading.Thread(target=self._run, name=f"bastion-{name}-writer",
                                        daemon=True)
        self._thread.start()

    # -- the request path ---------------------------------------------------------------------
    def submit(self, items: list[T], on_done: Callable[[], object] | None = None) -> None:
        """Accept ``items`` whole, or none of them (:class:`WriterFull`). ``on_done`` is called
        on the writer's thread once they are written (or rejected as invalid), or as soon as a
        write fails (they stay queued and retried): the caller may wait for it before it
        answers, so that what it answered is on disk unless the store is down."""
        if not items:
            return
        with self._cv:
            if self._closed or len(self._q) + self._inflight + len(items) > self.capacity:
                raise self.full_error()
            self._q.extend(items)
            self._accepted += len(items)
            if on_done is not None:
                self._waiters.append((self._accepted, on_done))
            # Write now: concurrent submissions gather while a write runs (group commit), so
            # waiting callers pay one transaction, not the flush interval. A lingering writer
            # is woken only by a full batch or a waiting caller.
            if (not self._linger_s or on_done is not None
                    or len(self._q) >= self._max_batch):
                self._cv.notify()

    def full_error(self) -> WriterFull:
        """The refusal of work that does not fit, saying why and when to come back."""
        if self._closed:
            return WriterFull(f"the {self.name} writer is shutting down (the replica stops); "
                              "retry shortly", retry_after_s=1.0)
        queued = len(self._q) + self._inflight
        why = (f", failing since {time.strftime('%H:%M:%S', time.gmtime(self.failing_since))}"
               f" UTC: {self.last_error}" if self.failing_since else "")
        return WriterFull(f"the {self.name} cannot keep up: {queued} items wait to be written "
                          f"(capacity {self.capacity}){why}; retry later",
                          retry_after_s=self._retry_after())

    def room(self, n: int) -> bool:
        """Whether ``n`` more items fit now."""
        with self._cv:
            return not self._closed and len(self._q) + self._inflight + n <= self.capacity

    def health(self) -> WriterHealth:
        with self._cv:
            queued = len(self._q) + self._inflight
        alive = self._thread.is_alive() or self._closed
        return WriterHealth(ok=self.failing_since is None and alive, queued=queued,
                            capacity=self.capacity, written=self.written,
                            rejected=self.rejected, errors=self.errors,
                            failing_since=self.failing_since, last_error=self.last_error)

    def _retry_after(self) -> float:
        return max(1.0, min(self._max_backoff_s * 2, 30.0))

    # -- the writer thread --------------------------------------------------------------------
    def _take(self) -> list[T]:
        with self._cv:
            if not self._q and not self._stop:
                self._cv.wait(self._flush_every_s)
            if self._linger_s and self._q and not self._stop and not self._waiters:
                deadline = time.monotonic() + self._linger_s
                while (len(self._q) < self._max_batch and not self._stop
                       and not self._waiters and time.monotonic() < deadline):
                    self._cv.wait(max(deadline - time.monotonic(), 0.001))
            n = min(len(self._q), self._max_batch)
            batch = [self._q.popleft() for _ in range(n)]
            self._inflight = n
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch:
                self._write_until_done(batch)
            with self._cv:
                self._inflight = 0
                self._completed += len(batch)
                due = []
                while self._waiters and self._waiters[0][0] <= self._completed:
                    due.append(self._waiters.popleft()[1])
                stop = self._stop and not self._q
            for callback in due:
                try:
                    callback()
                except Exception:  # noqa: BLE001 - a caller gone (its loop closed) is fine
                    pass
            if stop:
                return

    def _write_until_done(self, batch: list[T]) -> None:
        delay = self._backoff_s
        while True:
            try:
                self._write(batch)
            except Exception as err:  # noqa: BLE001 - every failure is retried or reported
                if self._permanent(err):
                    self._write_each(batch)
                    return
                self._failed(err)
                if self._stop and self._give_up():
                    log.error("%s writer: shutting down with the store failing (%s); %d "
                              "accepted item(s) could not be written", self.name,
                              self.last_error, len(batch) + len(self._q))
                    with self._cv:
                        self._q.clear()
                    return
                time.sleep(delay)
                delay = min(delay * 2, self._max_backoff_s)
                continue
            self._succeeded(len(batch))
            return

    def _write_each(self, batch: list[T]) -> None:
        for item in batch:
            try:
                self._write([item])
            except Exception as err:  # noqa: BLE001 - one invalid item must not stop the rest
                if not self._permanent(err):
                    self._write_until_done([item])
                    continue
                self.rejected += 1
                log.error("%s writer: the store rejected an item, left out: %s: %s",
                          self.name, type(err).__name__, err)
            else:
                self._succeeded(1)

    def _failed(self, err: BaseException) -> None:
        with self._cv:  # nobody waits on a store that is down: their items stay queued
            due = [cb for _, cb in self._waiters]
            self._waiters.clear()
        for callback in due:
            try:
                callback()
            except Exception:  # noqa: BLE001 - see _run
                pass
        self.errors += 1
        self.last_error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        if self.failing_since is None:
            self.failing_since = time.time()
            log.error("%s writer: writes fail, retrying until the store is back: %s",
                      self.name, self.last_error)
        if self._reset is not None:
            try:
                self._reset()
            except Exception:  # noqa: BLE001 - a reset is best effort; the retry reports
                pass

    def _succeeded(self, n: int) -> None:
        self.written += n
        if self.failing_since is not None:
            log.warning("%s writer: the store is back after %.1f s", self.name,
                        time.time() - self.failing_since)
        self.failing_since = None

    def _give_up(self) -> bool:
        return time.monotonic() > self._close_deadline

    def close(self, timeout: float = 30.0) -> None:
        """Stop accepting, flush what was accepted; with the store down, keep retrying for up
        to ``timeout`` seconds, then report (log) what could not be written."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            self._stop = True
            self._close_deadline = time.monotonic() + timeout
            self._cv.notify()
        self._thread.join(timeout + self._max_backoff_s + 1)
