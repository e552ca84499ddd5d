"""Shadow benchmark (issue 17): what a shadow run costs the champion's latency.

The whole HTTP path (proxy -> Ingress -> Scorer) on the shipped starter model, single-item
requests at concurrency 1 and 8, with no shadow run and with a challenger (the starter's heads,
perturbed: the same encoder and cost) shadowing 10% of live items; the two conditions
alternate, several rounds each, in one run on this machine. Reported per condition: p50 and
p99 of the champion's responses (the median over rounds), items/s, and the shadow verdicts
written (what the sample actually scored).

Run: ``.venv/bin/python bench/shadow.py`` (about 10 minutes; nothing else should run).
Writes bench/results/shadow.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bastion.core.runtime import ray_env  # noqa: E402

for _k, _v in ray_env().items():
    os.environ.setdefault(_k, _v)

from bastion.core.settings import Settings, load_settings  # noqa: E402
from bench._traffic import load, machine, real_texts, write_results  # noqa: E402
from bench.serving import deploy, register, texts_record  # noqa: E402


def challenger_of(base: Any) -> Any:
    """The starter's heads, perturbed: a candidate that costs what the champion costs."""
    from bastion.core.model import LinearHeads, ModerationModel

    rng = np.random.default_rng(7)
    w = base.heads.weight + rng.normal(0, 0.01, base.heads.weight.shape).astype(np.float32)
    meta = {k: v for k, v in base.metadata.items() if k != "version"}
    return ModerationModel(base.encoder, LinearHeads(base.heads.specs, w, base.heads.bias),
                           meta)


def wait_for_run(url: str, version: str | None, timeout_s: float = 90) -> None:
    """Until the Ingress reports the shadow run of ``version`` (None: no run)."""
    import httpx

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        body = httpx.get(url.replace("/v1/moderate", "/readyz"), timeout=30).json()
        run = (body.get("ingress") or {}).get("shadow", {}).get("run")
        if (run or {}).get("version") == version or (version is None and run is None):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the Ingress did not report shadow run {version} in {timeout_s}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="Multiply request counts.")
    ap.add_argument("--rounds", type=int, default=3, help="Rounds per condition.")
    ap.add_argument("--sample", type=float, default=0.1, help="The shadow's sample.")
    ap.add_argument("--out", default=str(ROOT / "bench/results/shadow.json"))
    args = ap.parse_args()
    from bastion.core.runtime import start_ray, stop_ray
    from bastion.core.shadow_events import ShadowLog
    from bastion.registry.shadow import start_shadow, stop_shadow
    from bastion.registry.store import ModelRegistry
    from bastion.training.starter import register_starter

    texts, source = real_texts(3000)
    results: dict[str, Any] = {"benchmark": "shadow", "machine": machine(),
                               "texts": texts_record(texts, source), "sample": args.sample,
                               "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as state:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        settings: Settings = load_settings(state, port=port)
        print("registering the shipped starter model and a challenger ...", flush=True)
        _, starter = register_starter(settings)
        challenger = register(settings, challenger_of(starter), "bench-challenger")
        registry = ModelRegistry(settings)
        dashboard = start_ray(settings)
        url = f"http://127.0.0.1:{port}/v1/moderate"
        shadow_log = ShadowLog(settings.database_url)
        try:
            policy = json.loads(json.dumps(__import__("yaml").safe_load(
                (ROOT / "core/default_policy.yaml").read_text())))
            keys = deploy(settings, dashboard, policy, None)
            tenants = [("demo", keys["demo"])]
            load(url, texts, tenants, 1, 8, 200)  # warm up batching and connections
            runs: dict[str, dict[int, list[dict[str, Any]]]] = {"off": {}, "on": {}}
            for rnd in range(args.rounds):
                for cond in ("off", "on"):
                    if cond == "on":
                        start_shadow(registry, challenger, sample=args.sample,
                                     reason="bench/shadow.py")
                        wait_for_run(url, challenger)
                    for conc, n in ((1, 300), (8, 1200)):
                        before = shadow_log.count(challenger)
                        r = load(url, texts, tenants, 1, conc, max(int(n * args.scale), conc))
                        time.sleep(1.0)  # the last shadow verdicts reach the log
                        r["shadowed"] = shadow_log.count(challenger) - before
                        runs[cond].setdefault(conc, []).append(r)
                        print(f"  round {rnd} shadow {cond:<3} concurrency {conc}: "
                              f"{r['items_per_s']} items/s p50 {r['p50_ms']} ms p99 "
                              f"{r['p99_ms']} ms, {r['shadowed']} shadowed", flush=True)
                    if cond == "on":
                        stop_shadow(registry, reason="bench/shadow.py")
                        wait_for_run(url, None)
            summary = {}
            for conc in (1, 8):
                row: dict[str, Any] = {}
                for cond in ("off", "on"):
                    rs = runs[cond][conc]
                    row[cond] = {k: float(np.median([r[k] for r in rs]))
                                 for k in ("items_per_s", "p50_ms", "p99_ms")}
                    row[cond]["shadowed_share"] = round(
                        sum(r["shadowed"] for r in rs) / sum(r["requests"] for r in rs), 4)
                row["p99_cost"] = round(row["on"]["p99_ms"] / row["off"]["p99_ms"] - 1, 4)
                row["p50_cost"] = round(row["on"]["p50_ms"] / row["off"]["p50_ms"] - 1, 4)
                summary[f"concurrency_{conc}"] = row
                print(f"concurrency {conc}: p99 {row['off']['p99_ms']} -> "
                      f"{row['on']['p99_ms']} ms ({100 * row['p99_cost']:+.1f}%), p50 "
                      f"{row['off']['p50_ms']} -> {row['on']['p50_ms']} ms", flush=True)
            results["runs"] = runs
            results["summary"] = summary
        finally:
            shadow_log.close()
            stop_ray()
    results["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_results(args.out, results)
    print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
