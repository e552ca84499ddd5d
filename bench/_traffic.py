"""Shared pieces of the benchmarks: real traffic, an HTTP load generator, percentiles."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import time
from typing import Any

import numpy as np

__all__ = ["real_texts", "load", "machine", "write_results"]


def real_texts(n: int, seed: int = 0) -> tuple[list[str], str]:
    """Real short texts in arrival order: Davidson tweets where present, else SMS messages."""
    from bastion.training.datasets import davidson_path, load_sms_spam

    path = davidson_path()
    if path is not None:
        import pandas as pd

        tweets = pd.read_csv(path)["tweet"].astype(str).tolist()
        source = "davidson tweets"
    else:
        tweets = load_sms_spam().texts
        source = "SMS spam collection"
    rng = random.Random(seed)
    return [rng.choice(tweets) for _ in range(n)], source


async def _run(url: str, bodies: list[tuple[dict[str, Any], str]], concurrency: int,
               ) -> tuple[list[float], int, float]:
    import aiohttp

    latencies: list[float] = []
    failures = 0
    queue: asyncio.Queue[tuple[dict[str, Any], str]] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as session:
        async def worker() -> None:
            nonlocal failures
            while not queue.empty():
                body, key = queue.get_nowait()
                t0 = time.perf_counter()
                async with session.post(url, json=body,
                                        headers={"Authorization": f"Bearer {key}"}) as r:
                    await r.read()
                    if r.status != 200:
                        failures += 1
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        wall = time.perf_counter() - start
    return latencies, failures, wall


def load(url: str, texts: list[str], tenants: list[tuple[str, str]], items_per_request: int,
         concurrency: int, n_requests: int) -> dict[str, Any]:
    """Send ``n_requests`` requests of ``items_per_request`` items, ``concurrency`` at a time,
    rotating through ``tenants`` ((name, key) pairs). Returns throughput and latency."""
    bodies = []
    k = 0
    for r in range(n_requests):
        tenant, key = tenants[r % len(tenants)]
        items = [{"id": str(i), "text": texts[(k + i) % len(texts)]}
                 for i in range(items_per_request)]
        k += items_per_request
        bodies.append(({"tenant": tenant, "items": items}, key))
    lat, failures, wall = asyncio.run(_run(url, bodies, concurrency))
    if failures:
        raise RuntimeError(f"{failures} of {n_requests} requests failed: the numbers would "
                           "measure errors, not moderation")
    ms = np.array(lat) * 1000
    return {
        "concurrency": concurrency, "items_per_request": items_per_request,
        "requests": n_requests, "failures": failures,
        "items_per_s": round(n_requests * items_per_request / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
    }


def machine() -> dict[str, Any]:
    import torch

    from bastion.core.encoders import bf16_supported

    return {
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "bf16": bf16_supported(), "platform": platform.platform(), **_cpu(), **_commit(),
    }


def _cpu() -> dict[str, Any]:
    """The CPU model and the flags that decide encoder numerics (AVX2/AVX-512/bf16/VNNI/AMX)."""
    model, flags = platform.processor(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16",
              "amx_int8")
    return {"cpu_model": model, "cpu_flags": [f for f in wanted if f in flags]}


def _commit() -> dict[str, Any]:
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", root, "status", "--porcelain", "--",
                                     ".", ":!bench/results"], capture_output=True, text=True,
                                    check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None}
    return {"commit": head, "dirty": dirty}


def write_results(path: str, results: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
