"""Fault injection for ``bench/faults.py`` and the integration tests: load that counts every
status (a failure is data here, not an abort), SIGKILL of a replica by the pid ``/readyz``
reports, and a database outage (a TCP relay in front of PostgreSQL that can be cut and
restored, as a network partition or a stopped server would look to the replicas)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

__all__ = ["Load", "LoadResult", "TcpRelay", "kill_replica", "readyz"]


def readyz(base_url: str) -> tuple[int, dict[str, Any]]:
    r = httpx.get(f"{base_url}/readyz", timeout=30)
    return r.status_code, r.json()


def kill_replica(base_url: str, deployment: str) -> int:
    """SIGKILL the process of one ``deployment`` replica (``ingress`` or ``scorer``), as
    ``kill -9`` would; returns its pid. The pid comes from ``/readyz`` (same machine)."""
    _, body = readyz(base_url)
    pid = int(body[deployment]["pid"])
    os.kill(pid, signal.SIGKILL)
    return pid


@dataclass
class LoadResult:
    requests: int = 0
    statuses: Counter[str] = field(default_factory=Counter)  # "200", "503", "connection"
    latencies_s: list[float] = field(default_factory=list)
    answered_2xx_items: list[tuple[str, str]] = field(default_factory=list)  # (tenant, id)
    retry_after: list[str] = field(default_factory=list)
    bodies_5xx: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        ms = np.array(self.latencies_s or [0.0]) * 1000
        ok = sum(v for k, v in self.statuses.items() if k.startswith("2"))
        return {
            "requests": self.requests, "status_codes": dict(sorted(self.statuses.items())),
            "failures": self.requests - ok,
            "server_errors_500": self.statuses.get("500", 0),
            "answered_2xx": ok, "items_answered_2xx": len(self.answered_2xx_items),
            "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "retry_after_seen": sorted(set(self.retry_after)),
            "examples_5xx": self.bodies_5xx[:3],
        }


class Load:
    """``concurrency`` clients sending one-item requests in a thread until :meth:`stop`;
    every answer is counted by status, and the item ids answered 2xx are kept."""

    def __init__(self, base_url: str, tenant: str, key: str, texts: list[str],
                 concurrency: int = 8, prefix: str = "f", timeout_s: float = 60.0) -> None:
        self.url = f"{base_url}/v1/moderate"
        self.tenant, self.key, self.texts = tenant, key, texts
        self.concurrency, self.prefix, self.timeout_s = concurrency, prefix, timeout_s
        self.result = LoadResult()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()),
                                        name="bench-load", daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> LoadResult:
        self._halt.set()
        self._thread.join(self.timeout_s + 30)
        return self.result

    def wait_requests(self, n: int, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.result.requests < n and time.monotonic() < deadline:
            time.sleep(0.05)

    async def _main(self) -> None:
        import aiohttp

        counter = iter(range(10**9))
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async def client(c: int) -> None:
                while not self._halt.is_set():
                    n = next(counter)
                    item_id = f"{self.prefix}-{n}"
                    body = {"tenant": self.tenant, "items": [
                        {"id": item_id, "text": self.texts[n % len(self.texts)]}]}
                    t0 = time.perf_counter()
                    try:
                        async with session.post(
                                self.url, json=body,
                                headers={"Authorization": f"Bearer {self.key}"}) as r:
                            text = await r.text()
                            status = str(r.status)
                            if r.headers.get("Retry-After"):
                                self.result.retry_after.append(r.headers["Retry-After"])
                    except (TimeoutError, aiohttp.ClientError, OSError) as err:
                        status, text = "connection", type(err).__name__
                    self.result.latencies_s.append(time.perf_counter() - t0)
                    self.result.requests += 1
                    self.result.statuses[status] += 1
                    if status.startswith("2"):
                        self.result.answered_2xx_items.append((self.tenant, item_id))
                    elif status.startswith("5"):
                        self.result.bodies_5xx.append(f"{status}: {text[:300]}")
                    if status == "connection":
                        await asyncio.sleep(0.2)  # the server is down: do not spin

            await asyncio.gather(*[client(c) for c in range(self.concurrency)])


class TcpRelay:
    """127.0.0.1:<port> relayed to ``target``; :meth:`cut` closes the listener and every
    open connection (the database is unreachable), :meth:`restore` listens again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-relay",
                                        daemon=True)
        self._thread.start()
        self.restore()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._conns.update((writer, up_w))
        await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))
        self._conns.difference_update((writer, up_w))

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port,
                                                  reuse_address=True)

    async def _stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for w in list(self._conns):
            w.close()
        self._conns.clear()
        if server is not None:
            await server.wait_closed()

    def restore(self) -> None:
        self._call(self._start())

    def cut(self) -> None:
        self._call(self._stop())

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
