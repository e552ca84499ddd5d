"""Fair-use benchmark (issue 14): one tenant flooding never raises another tenant's p99 by
more than 2x.

The platform runs as ``bench/serving.py`` starts it (the shipped starter model registered in
a fresh MLflow registry, Ray, the Serve application), with two tenants on the default
policy's categories: ``victim`` (no limits) and ``flooder`` (``fair_use``: a rate and an
in-flight limit). The victim sends normal traffic, open loop (a request every 1/rps s,
latency counted from when it was due, so a stall is not hidden by a client that waits); the
flooder sends far above its limit from a bounded number of connections in another process
(``bench/_flood.py``: each retries at once on a 429, ignoring Retry-After, paced to at most
``--flood-rps`` in all). Three phases, each ``--duration-s`` long:

1. ``alone``: the victim only;
2. ``flood``: the victim during the flood, the flooder under its limits;
3. ``flood_unlimited``: the same flood with the flooder's limits removed (a hot policy
   reload, no restart), which shows what the limits buy.

The load generators run on the same cores as the platform: the flooder's CPU competes with
the service, so the flood is paced rather than unbounded. Writes bench/results/fairness.json.

Run: ``flock /tmp/bastion-ray.lock .venv/bin/python bench/fairness.py`` (about 5 minutes;
``--scale 0.2`` for a quick check).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bastion.core.runtime import ray_env  # noqa: E402

for _k, _v in ray_env().items():
    os.environ.setdefault(_k, _v)

from bench._traffic import machine, real_texts, write_results  # noqa: E402
from bench.serving import deploy  # noqa: E402


def fairness_policy(flooder_limits: dict[str, Any] | None) -> dict[str, Any]:
    """The default policy's ``demo`` tenant twice: ``victim`` and ``flooder``."""
    default = yaml.safe_load((ROOT / "core/default_policy.yaml").read_text())
    demo = default["tenants"]["demo"]
    flooder = {**demo, "fair_use": flooder_limits or {}}
    return {"version": "fairness", "tenants": {"victim": demo, "flooder": flooder}}


async def _victim(url: str, key: str, texts: list[str], items: int, rps: float,
                  duration_s: float) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    n = int(rps * duration_s)
    async with aiohttp.ClientSession() as session:
        start = time.perf_counter() + 0.05

        async def one(i: int) -> None:
            due = start + i / rps
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            body = {"tenant": "victim", "items": [
                {"id": str(j), "text": texts[(i * items + j) % len(texts)]} for j in range(items)]}
            try:
                async with session.post(url, json=body,
                                        headers={"Authorization": f"Bearer {key}"}) as r:
                    await r.read()
                    status = r.status
            except aiohttp.ClientError:
                status = 0
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                latencies.append(time.perf_counter() - due)

        await asyncio.gather(*[one(i) for i in range(n)])
    ms = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    return {"requests": n, "items_per_request": items, "rps": rps,
            "ok": statuses.get(200, 0),
            "failures": {str(s): c for s, c in statuses.items() if s != 200},
            "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "max_ms": round(float(ms.max()), 1)}


def victim(url: str, key: str, texts: list[str], args: argparse.Namespace,
           duration_s: float) -> dict[str, Any]:
    return asyncio.run(_victim(url, key, texts, args.victim_items, args.victim_rps,
                               duration_s))


def start_flood(url: str, key: str, texts: list[str], args: argparse.Namespace,
                duration_s: float) -> subprocess.Popen[str]:
    spec = {"url": url, "tenant": "flooder", "key": key, "texts": texts[:200],
            "items_per_request": args.flood_items, "connections": args.flood_connections,
            "rps": args.flood_rps, "duration_s": duration_s}
    proc = subprocess.Popen([sys.executable, "-m", "bench._flood", json.dumps(spec)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError("the flooder did not start")
    return proc


def flood_phase(url: str, keys: dict[str, str], texts: list[str], args: argparse.Namespace,
                duration_s: float) -> dict[str, Any]:
    ramp = 3.0  # the flood reaches its rate before the victim is measured
    proc = start_flood(url, keys["flooder"], texts, args, duration_s + 2 * ramp)
    try:
        time.sleep(ramp)
        measured = victim(url, keys["victim"], texts, args, duration_s)
        out, _ = proc.communicate(timeout=duration_s + 120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return {"victim": measured, "flooder": json.loads(out.strip().splitlines()[-1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="Multiply the phases' duration.")
    ap.add_argument("--duration-s", type=float, default=60.0, help="Seconds per phase.")
    ap.add_argument("--victim-rps", type=float, default=20.0)
    ap.add_argument("--victim-items", type=int, default=1, help="Items per victim request.")
    ap.add_argument("--flood-connections", type=int, default=32)
    ap.add_argument("--flood-rps", type=float, default=400.0,
                    help="Most requests/s of the whole flood (0: as fast as answers come).")
    ap.add_argument("--flood-items", type=int, default=8, help="Items per flooder request.")
    ap.add_argument("--flooder-items-per-s", type=float, default=40.0,
                    help="The flooder's fair_use.items_per_s.")
    ap.add_argument("--flooder-burst", type=int, default=80)
    ap.add_argument("--flooder-in-flight", type=int, default=4)
    ap.add_argument("--out", default=str(ROOT / "bench/results/fairness.json"))
    args = ap.parse_args()
    from bastion.core.runtime import start_ray, stop_ray
    from bastion.core.settings import load_settings
    from bastion.training.starter import register_starter

    duration = max(5.0, args.duration_s * args.scale)
    limits = {"items_per_s": args.flooder_items_per_s, "burst_items": args.flooder_burst,
              "max_in_flight": args.flooder_in_flight}
    texts, source = real_texts(3000)
    results: dict[str, Any] = {
        "benchmark": "fairness", "machine": machine(), "traffic": source,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "parameters": {"phase_s": duration, "victim_rps": args.victim_rps,
                       "victim_items_per_request": args.victim_items,
                       "flood_connections": args.flood_connections,
                       "flood_paced_rps": args.flood_rps,
                       "flood_items_per_request": args.flood_items,
                       "flooder_fair_use": limits,
                       "load_generators": "on the same machine as the platform; the flooder "
                                          "in its own process"}}
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as state:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        settings = load_settings(state, port=port)
        print("registering the shipped starter model (as 'bastion up' does) ...", flush=True)
        register_starter(settings)
        dashboard = start_ray(settings)
        url = f"http://127.0.0.1:{port}/v1/moderate"
        try:
            keys = deploy(settings, dashboard, fairness_policy(limits), None)
            victim(url, keys["victim"], texts, args, 3.0)  # warm up batching and connections
            print(f"1. victim alone ({duration:.0f} s)", flush=True)
            results["alone"] = victim(url, keys["victim"], texts, args, duration)
            print(f"  {results['alone']}", flush=True)
            print("2. victim during the flood, flooder under its limits", flush=True)
            results["flood"] = flood_phase(url, keys, texts, args, duration)
            print(f"  {results['flood']}", flush=True)
            print("3. the same flood with the flooder's limits removed (hot reload)",
                  flush=True)
            keys = deploy(settings, dashboard, fairness_policy(None), None)
            results["flood_unlimited"] = flood_phase(url, keys, texts, args, duration)
            print(f"  {results['flood_unlimited']}", flush=True)
        finally:
            stop_ray()
    alone, flood = results["alone"]["p99_ms"], results["flood"]["victim"]["p99_ms"]
    results["summary"] = {
        "victim_p99_alone_ms": alone, "victim_p99_flood_ms": flood,
        "victim_p99_ratio": round(flood / alone, 2),
        "victim_p99_flood_unlimited_ms": results["flood_unlimited"]["victim"]["p99_ms"],
        "victim_p99_ratio_unlimited": round(
            results["flood_unlimited"]["victim"]["p99_ms"] / alone, 2),
        "flooder_429": results["flood"]["flooder"]["refused_429"],
        "flooder_2xx": results["flood"]["flooder"]["ok_2xx"],
        "victim_failures": {**results["alone"]["failures"],
                            **results["flood"]["victim"]["failures"]},
        "goal_victim_p99_ratio": 2.0,
    }
    results["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_results(args.out, results)
    print(json.dumps(results["summary"], indent=2))


if __name__ == "__main__":
    main()
