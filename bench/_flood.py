"""The fairness benchmark's flooder, in its own process so that its CPU is not the victim's
client's: ``connections`` clients of one tenant, each sending its next request as soon as
the last one is answered (a 429 too: a hostile client that ignores ``Retry-After``), paced
to at most ``rps`` requests per second in all when ``rps`` > 0 (a retry storm of a bounded
number of connections, as a misbehaving product service produces), for ``duration_s``.

Run: ``python -m bench._flood '<json of the arguments of flood()>'``; prints ``ready`` once
its connections are open, then one JSON line of counts.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any


async def flood(url: str, tenant: str, key: str, texts: list[str], items_per_request: int,
                connections: int, rps: float, duration_s: float) -> dict[str, Any]:
    import aiohttp

    statuses: Counter[int] = Counter()
    retry_after: Counter[str] = Counter()
    ok_latency: list[float] = []
    conn = aiohttp.TCPConnector(limit=connections)
    headers = {"Authorization": f"Bearer {key}"}
    interval = connections / rps if rps > 0 else 0.0  # per connection
    async with aiohttp.ClientSession(connector=conn) as session:
        print("ready", flush=True)
        start = time.perf_counter()
        end = start + duration_s

        async def client(c: int) -> None:
            k = c * items_per_request
            nxt = start + interval * c / connections
            while True:
                now = time.perf_counter()
                if now >= end:
                    return
                if interval and now < nxt:
                    await asyncio.sleep(nxt - now)
                nxt = max(nxt + interval, time.perf_counter()) if interval else 0.0
                items = [{"id": str(i), "text": texts[(k + i) % len(texts)]}
                         for i in range(items_per_request)]
                k += items_per_request
                t0 = time.perf_counter()
                try:
                    async with session.post(url, json={"tenant": tenant, "items": items},
                                            headers=headers) as r:
                        await r.read()
                        statuses[r.status] += 1
                        if r.status == 429:
                            retry_after[r.headers.get("Retry-After", "missing")] += 1
                        elif r.status == 200:
                            ok_latency.append(time.perf_counter() - t0)
                except aiohttp.ClientError:
                    statuses[0] += 1  # connection refused or reset: counted, not hidden

        await asyncio.gather(*[client(c) for c in range(connections)])
        wall = time.perf_counter() - start
    sent = sum(statuses.values())
    return {"connections": connections, "paced_rps": rps, "duration_s": round(wall, 2),
            "requests": sent, "requests_per_s": round(sent / wall, 1),
            "ok_2xx": sum(n for s, n in statuses.items() if 200 <= s < 300),
            "refused_429": statuses.get(429, 0),
            "other": {str(s): n for s, n in statuses.items() if s != 429 and not 200 <= s < 300},
            "retry_after_values": dict(retry_after),
            "ok_items_per_s": round(sum(n for s, n in statuses.items() if 200 <= s < 300)
                                    * items_per_request / wall, 1)}


def main() -> None:
    args = json.loads(sys.argv[1])
    print(json.dumps(asyncio.run(flood(**args))), flush=True)


if __name__ == "__main__":
    main()
