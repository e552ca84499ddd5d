"""Serving benchmark (issue 2), all measured in one run on this machine, side by side:

1. the encoder alone, in process, batched: items/s (the ceiling here);
2. the whole HTTP path (proxy -> Ingress -> Scorer) at concurrency 1, 8 and 32, with
   single-item and 32-item requests: items/s, p50 and p99 latency;
3. one tenant with 1 category against 50 tenants x 10 categories (500 tenant-owned heads,
   stacked) on the same traffic: the cost ratio;
4. the design this replaces, one separate model per policy, at 1, 5 and 10 policies, against
   the shared backbone serving the same policies.

Run: ``.venv/bin/python bench/serving.py`` (about 10 minutes; nothing else should run).
Writes bench/results/serving.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
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

from bastion.core.encoders import create_encoder  # noqa: E402
from bastion.core.keys import ensure_keys  # noqa: E402
from bastion.core.model import HeadSpec, LinearHeads, ModerationModel  # noqa: E402
from bastion.core.policy import parse_policy  # noqa: E402
from bastion.core.settings import Settings, load_settings  # noqa: E402
from bench._traffic import load, machine, real_texts, write_results  # noqa: E402


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def encoder_ceiling(texts: list[str], batch: int) -> dict[str, Any]:
    enc = create_encoder("minilm")
    enc.encode(texts[:batch])  # warm up
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch):
        enc.encode(texts[i:i + batch], batch_size=32)
    dt = time.perf_counter() - t0
    return {"items": len(texts), "batch": batch, "precision": enc.identity["precision"],
            "items_per_s": round(len(texts) / dt, 1)}


def register(settings: Settings, model: ModerationModel, name: str) -> str:
    from bastion.registry.store import ModelRegistry

    with tempfile.TemporaryDirectory() as tmp:
        path = model.save(Path(tmp) / "bastion")
        info = ModelRegistry(settings).log_version(
            path, run_name=name, params={"kind": name}, metrics={}, tags={"bastion.kind": name})
    return info.version


def many_heads_model(base: ModerationModel, tenants: int, categories: int) -> ModerationModel:
    """Tenant-owned heads: each tenant's category head is a perturbed copy of a starter head."""
    rng = np.random.default_rng(0)
    specs, cols, biases = [], [], []
    for t in range(tenants):
        for c in range(categories):
            src = c % len(base.heads.specs)
            specs.append(HeadSpec(f"cat{c}", tenant=f"t{t:02d}"))
            cols.append(base.heads.weight[:, src] + rng.normal(0, 0.01, base.heads.weight.shape[0]))
            biases.append(base.heads.bias[src])
    heads = LinearHeads(specs, np.stack(cols, 1).astype(np.float32), np.array(biases, np.float32))
    return ModerationModel(base.encoder, heads, {"kind": f"bench-{tenants}x{categories}"})


def one_head_model(base: ModerationModel) -> ModerationModel:
    heads = LinearHeads([HeadSpec("cat0", tenant="t00")], base.heads.weight[:, :1].copy(),
                        base.heads.bias[:1].copy())
    return ModerationModel(base.encoder, heads, {"kind": "bench-1x1"})


def tenants_policy(tenants: int, categories: int) -> dict[str, Any]:
    return {"version": f"bench-{tenants}x{categories}", "tenants": {
        f"t{t:02d}": {"categories": {
            f"cat{c}": {"block_threshold": 0.9, "review_threshold": 0.5,
                        "head": f"t{t:02d}/cat{c}"} for c in range(categories)},
            "keywords": [{"phrases": [f"forbidden phrase {t}"], "action": "block"}]}
        for t in range(tenants)}}


def deploy(settings: Settings, dashboard: str, policy: dict[str, Any], version: str | None,
           ) -> dict[str, str]:
    """Deploy ``policy`` on ``version`` (default @champion); returns its tenants' keys."""
    from bastion.platform import check_policy
    from bastion.platform import deploy as deploy_app
    from bastion.registry.store import ModelRegistry

    pol = parse_policy(policy)
    registry = ModelRegistry(settings)
    meta = registry.metadata(version or registry.by_alias("champion").version)
    check_policy(pol, meta)  # a policy that does not fit would measure only 503s
    keys, _ = ensure_keys(settings.keys_file, pol.tenants)
    deploy_app(settings, pol, keys, dashboard, model_version=version)
    return {t: keys[t] for t in pol.tenants}


def http_matrix(url: str, texts: list[str], tenants: list[tuple[str, str]],
                scale: float) -> list[dict[str, Any]]:
    out = []
    load(url, texts, tenants, 32, 8, 16)  # warm up batching and connections
    for items, conc, n in [(1, 1, 150), (1, 8, 600), (1, 32, 1200),
                           (32, 1, 20), (32, 8, 48), (32, 32, 96)]:
        r = load(url, texts, tenants, items, conc, max(int(n * scale), conc))
        print(f"  http items/request={items:<3} concurrency={conc:<3} {r['items_per_s']:>7} "
              f"items/s  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  failures {r['failures']}",
              flush=True)
        out.append(r)
    return out


def separate_models(texts: list[str], counts: list[int], batch: int) -> list[dict[str, Any]]:
    """N policies: N separate models (a backbone each) vs one shared backbone + N heads."""
    out = []
    base_rss = rss_mb()
    shared = create_encoder("minilm")
    heads = LinearHeads([HeadSpec("x")], np.zeros((384, 1), np.float32), np.zeros(1, np.float32))
    for n in counts:
        gc.collect()
        models = [create_encoder("minilm") for _ in range(n)]
        mem = rss_mb() - base_rss
        for m in models:
            m.encode(texts[:batch])
        t0 = time.perf_counter()
        for i in range(0, len(texts), batch):
            for m in models:  # every item is checked against every policy's model
                heads.score(m.encode(texts[i:i + batch]))
        sep = len(texts) / (time.perf_counter() - t0)
        stacked = LinearHeads([HeadSpec(f"p{j}") for j in range(n)],
                              np.zeros((384, n), np.float32), np.zeros(n, np.float32))
        t0 = time.perf_counter()
        for i in range(0, len(texts), batch):
            stacked.score(shared.encode(texts[i:i + batch]))
        sh = len(texts) / (time.perf_counter() - t0)
        row = {"policies": n, "separate_items_per_s": round(sep, 1),
               "shared_items_per_s": round(sh, 1),
               "separate_model_memory_mb": round(mem, 0)}
        print(f"  {n:>2} policies: separate {row['separate_items_per_s']} items/s "
              f"({row['separate_model_memory_mb']} MB of models), "
              f"shared {row['shared_items_per_s']} items/s", flush=True)
        out.append(row)
        del models
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="Multiply request counts.")
    ap.add_argument("--out", default=str(ROOT / "bench/results/serving.json"))
    args = ap.parse_args()
    from bastion.core.runtime import start_ray, stop_ray
    from bastion.training.starter import register_starter

    texts, source = real_texts(3000)
    results: dict[str, Any] = {"benchmark": "serving", "machine": machine(), "traffic": source,
                               "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print("1. encoder alone, in process", flush=True)
    results["encoder_in_process"] = [encoder_ceiling(texts[:1536], b) for b in (32, 64)]
    ceiling = max(r["items_per_s"] for r in results["encoder_in_process"])
    print(f"  ceiling {ceiling} items/s", flush=True)

    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as state:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        settings = load_settings(state, port=port)
        print("registering the shipped starter model (as 'bastion up' does) ...", flush=True)
        _, starter = register_starter(settings)
        v1 = register(settings, one_head_model(starter), "bench-1x1")
        v500 = register(settings, many_heads_model(starter, 50, 10), "bench-50x10")
        dashboard = start_ray(settings)
        url = f"http://127.0.0.1:{port}/v1/moderate"
        try:
            print("2. whole HTTP path, default policy (demo tenant) on the starter model",
                  flush=True)
            default = json.loads(json.dumps(__import__("yaml").safe_load(
                (ROOT / "core/default_policy.yaml").read_text())))
            keys = deploy(settings, dashboard, default, None)
            results["http"] = http_matrix(url, texts, [("demo", keys["demo"])], args.scale)
            print("3. 1 tenant x 1 category vs 50 tenants x 10 categories", flush=True)
            cost: dict[str, Any] = {}
            for label, pol, version in [("1x1", tenants_policy(1, 1), v1),
                                        ("50x10", tenants_policy(50, 10), v500)]:
                keys = deploy(settings, dashboard, pol, version)
                tenants = sorted(keys.items())
                load(url, texts, tenants, 32, 8, 16)
                cost[label] = {
                    "heads": 1 if label == "1x1" else 500,
                    "single_c32": load(url, texts, tenants, 1, 32, int(1200 * args.scale)),
                    "batch32_c32": load(url, texts, tenants, 32, 32, int(96 * args.scale)),
                }
                print(f"  {label}: single {cost[label]['single_c32']['items_per_s']} items/s, "
                      f"32-item {cost[label]['batch32_c32']['items_per_s']} items/s", flush=True)
            for kind in ("single_c32", "batch32_c32"):
                cost[f"cost_ratio_{kind}"] = round(
                    cost["1x1"][kind]["items_per_s"] / cost["50x10"][kind]["items_per_s"], 3)
            results["tenants_cost"] = cost
        finally:
            stop_ray()
    print("4. one separate model per policy vs the shared backbone (in process)", flush=True)
    results["separate_models"] = separate_models(texts[:512], [1, 5, 10], 64)

    single32 = next(r for r in results["http"] if r["items_per_request"] == 1
                    and r["concurrency"] == 32)
    batch32 = next(r for r in results["http"] if r["items_per_request"] == 32
                   and r["concurrency"] == 32)
    results["summary"] = {
        "encoder_ceiling_items_per_s": ceiling,
        "http_single_c32_share_of_ceiling": round(single32["items_per_s"] / ceiling, 3),
        "http_batch32_c32_share_of_ceiling": round(batch32["items_per_s"] / ceiling, 3),
        "goal_single_c32": 0.70, "goal_batch32_c32": 0.90,
        "cost_ratio_50x10_vs_1x1": results["tenants_cost"]["cost_ratio_batch32_c32"],
        "goal_cost_ratio": 1.1,
    }
    results["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_results(args.out, results)
    print(json.dumps(results["summary"], indent=2))


if __name__ == "__main__":
    main()
