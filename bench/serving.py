"""Serving benchmark (issue 2), all measured in one run on this machine, side by side:

1. the encoder alone, in process, batched, on the same texts: items/s (the ceiling here);
2. the whole HTTP path (proxy -> Ingress -> Scorer) at concurrency 1, 8 and 32, with
   single-item and 32-item requests: items/s, p50 and p99 latency; then the same traffic
   with the review intake on and off, alternating, for what the intake costs;
3. one tenant with 1 category against 50 tenants x 10 categories (500 tenant-owned heads,
   stacked) on the same traffic: the cost ratio;
4. the design this replaces, one separate model per policy, at 1, 5 and 10 policies, against
   the shared backbone serving the same policies: items/s, and the memory of a fresh process
   holding each (RSS and USS read in that process).

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


def encoder_ceiling(texts: list[str], batch: int, numerics_cache: Path) -> dict[str, Any]:
    """The encoder in this process with the numerics the Scorer will use: ``auto`` chooses
    once and caches its choice in the state directory, where the Scorer finds it."""
    enc = create_encoder("minilm", numerics_cache=numerics_cache)
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


_MEMORY_PROBE = """
import gc, json, sys
import numpy as np
from bastion.core.encoders import create_encoder
from bastion.core.model import HeadSpec, LinearHeads
n, shared = int(sys.argv[1]), sys.argv[2] == "shared"
encoders = [create_encoder("minilm", precision="fp32") for _ in range(1 if shared else n)]
for e in encoders:  # each policy's own fine-tuned copy holds its own weights: copy them out
    for p in e.model.parameters():  # of the shared read-only mapping of the weights file
        p.data = p.data.clone()
heads = LinearHeads([HeadSpec(f"p{j}") for j in range(n)], np.zeros((384, n), np.float32),
                    np.zeros(n, np.float32))
for e in encoders:  # one forward each: what serving holds after its first batch
    heads.score(e.encode(["warm up the model", "and its buffers"]))
gc.collect()
kb = {}
for line in open("/proc/self/smaps_rollup"):  # Linux: RSS, and USS = private pages
    k, _, v = line.partition(":")
    if v.strip().endswith("kB"):
        kb[k] = int(v.split()[0])
uss = kb["Private_Clean"] + kb["Private_Dirty"]
print(json.dumps({"rss_mb": round(kb["Rss"] / 1024, 1), "uss_mb": round(uss / 1024, 1)}))
"""


def process_memory(n: int, shared: bool) -> dict[str, float]:
    """RSS and USS of a fresh process holding ``n`` policies' models, measured in that
    process (not an RSS delta inside this one, which memory reuse understates)."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(n),
                          "shared" if shared else "separate"], check=True, capture_output=True,
                         text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def separate_models(texts: list[str], counts: list[int], batch: int) -> list[dict[str, Any]]:
    """N policies: N separate models (a backbone each) vs one shared backbone + N heads."""
    out = []
    shared = create_encoder("minilm")
    heads = LinearHeads([HeadSpec("x")], np.zeros((384, 1), np.float32), np.zeros(1, np.float32))
    for n in counts:
        gc.collect()
        models = [create_encoder("minilm") for _ in range(n)]
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
        del models
        sep_mem, sh_mem = process_memory(n, shared=False), process_memory(n, shared=True)
        row = {"policies": n, "separate_items_per_s": round(sep, 1),
               "shared_items_per_s": round(sh, 1),
               "separate_process_rss_mb": sep_mem["rss_mb"],
               "separate_process_uss_mb": sep_mem["uss_mb"],
               "shared_process_rss_mb": sh_mem["rss_mb"],
               "shared_process_uss_mb": sh_mem["uss_mb"]}
        print(f"  {n:>2} policies: separate {row['separate_items_per_s']} items/s "
              f"(process RSS {sep_mem['rss_mb']} MB), shared {row['shared_items_per_s']} "
              f"items/s (process RSS {sh_mem['rss_mb']} MB)", flush=True)
        out.append(row)
    return out


def texts_record(texts: list[str], source: str) -> dict[str, Any]:
    import hashlib

    return {"source": source, "n": len(texts),
            "sha256": hashlib.sha256("\n".join(texts).encode()).hexdigest(),
            "mean_chars": round(float(np.mean([len(t) for t in texts])), 1)}


def intake_cost(settings: Settings, dashboard: str, url: str, texts: list[str],
                policy: dict[str, Any], scale: float) -> dict[str, Any]:
    """The same traffic with the review intake on and off, alternating, in one run."""
    runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    for _rep in range(2):
        for mode in ("on", "off"):
            sv = settings.serving.model_copy(update={"review_intake": mode == "on"})
            keys = deploy(settings.model_copy(update={"serving": sv}), dashboard, policy, None)
            ten = [("demo", keys["demo"])]
            load(url, texts, ten, 32, 8, 16)
            runs[mode].append({
                "single_c32": load(url, texts, ten, 1, 32, max(int(1200 * scale), 32)),
                "batch32_c32": load(url, texts, ten, 32, 32, max(int(96 * scale), 32))})
    out: dict[str, Any] = {"runs": runs}
    for kind in ("single_c32", "batch32_c32"):
        on = sum(r[kind]["items_per_s"] for r in runs["on"])
        off = sum(r[kind]["items_per_s"] for r in runs["off"])
        out[f"cost_{kind}"] = round(1 - on / off, 3)
    print(f"  review intake cost: single {out['cost_single_c32']:.1%}, "
          f"32-item {out['cost_batch32_c32']:.1%}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="Multiply request counts.")
    ap.add_argument("--out", default=str(ROOT / "bench/results/serving.json"))
    args = ap.parse_args()
    from bastion.core.runtime import start_ray, stop_ray
    from bastion.training.starter import register_starter

    texts, source = real_texts(3000)
    results: dict[str, Any] = {"benchmark": "serving", "machine": machine(),
                               "texts": texts_record(texts, source),
                               "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as state:
        import socket

        print("1. encoder alone, in process", flush=True)
        results["encoder_in_process"] = [
            encoder_ceiling(texts, b, Path(state) / "numerics.json") for b in (32, 64)]
        ceiling = max(r["items_per_s"] for r in results["encoder_in_process"])
        print(f"  ceiling {ceiling} items/s", flush=True)

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
            import httpx

            results["readyz"] = httpx.get(url.replace("/v1/moderate", "/readyz"),
                                          timeout=30).json()
            print("2b. the review intake's cost: the same traffic with it on and off",
                  flush=True)
            results["review_intake"] = intake_cost(settings, dashboard, url, texts, default,
                                                   args.scale)
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
        "review_intake_cost_single_c32": results["review_intake"]["cost_single_c32"],
        "review_intake_cost_batch32_c32": results["review_intake"]["cost_batch32_c32"],
        "goal_review_intake_cost": 0.05,
        "scorer_numerics": (results["readyz"].get("scorer") or {}).get("numerics"),
    }
    results["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_results(args.out, results)
    print(json.dumps(results["summary"], indent=2))


if __name__ == "__main__":
    main()
