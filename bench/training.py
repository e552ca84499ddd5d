"""Retraining benchmarks: heads-only time at 10k and 100k labelled items (cold and warm
embedding cache), full fine-tuning throughput at 1 and 2 Ray Train workers, and the quality
gain of full fine-tuning over heads-only on the same held-out split of the Davidson tweets.

Every number comes from the real path (``training.retrain.retrain``: label store, snapshot,
Ray Train, MLflow registration, gate) in a fresh state directory.

Run: ``.venv/bin/python bench/training.py [--part heads|scaling|quality|all]
[--sizes 10000,100000]``. Results are merged into bench/results/training.json and summarised
in docs/benchmarks.md. The 100k cold run encodes 100k texts on the CPU: ~15 minutes here.

Items: Davidson tweets (``../shared/data``), soft labels from the annotators' vote counts.
Past the 24.8k tweets, an item is a two-tweet chat window (tweet i + tweet j) with the soft
union of their labels: real text, never seen by the cache, so a cold cache encodes every one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bastion.core.runtime import ray_env  # noqa: E402
from bench._traffic import machine, write_results  # noqa: E402

RESULTS = ROOT / "bench/results/training.json"


def davidson_items(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` labelled items as label-store import records (one per item, soft labels)."""
    import pandas as pd

    from bastion.training.datasets import davidson_path

    path = davidson_path()
    if path is None:
        raise SystemExit("the Davidson CSV is needed: ../shared/data or BASTION_DAVIDSON_CSV")
    df = pd.read_csv(path, index_col=0).sample(frac=1.0, random_state=seed)
    texts = df["tweet"].astype(str).tolist()
    hate = (df["hate_speech"] / df["count"]).to_numpy()
    off = ((df["hate_speech"] + df["offensive_language"]) / df["count"]).to_numpy()
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        if k < len(texts):
            text, h, o = texts[k], hate[k], off[k]
        else:
            i, j = rng.integers(0, len(texts), 2)
            text = f"{texts[i]} {texts[j]}"
            h, o = 1 - (1 - hate[i]) * (1 - hate[j]), 1 - (1 - off[i]) * (1 - off[j])
        out.append({"item_id": f"d{k}", "tenant": "demo", "text": text,
                    "session_id": f"s{k // 4}", "annotator": "davidson-votes",
                    "labels": {"hate": round(float(h), 4), "offensive": round(float(o), 4)}})
    return out


def fill_label_store(settings: Any, items: list[dict[str, Any]]) -> float:
    from sqlalchemy import delete

    from bastion.core.labels import LabelStore
    from bastion.core.store import open_engine
    from bastion.core.store.tables import label_history, label_items, labels
    from bastion.core.textkey import text_key

    engine = open_engine(settings.database_url)
    with engine.begin() as conn:  # a fresh label table for each measurement
        for table in (labels, label_history, label_items):
            conn.execute(delete(table))
    engine.dispose()
    f = settings.state_dir / "bench-labels.jsonl"
    f.write_text("\n".join(json.dumps(x) for x in items))
    t0 = time.perf_counter()
    store = LabelStore(settings.database_url, text_key(settings))
    try:
        report = store.import_file(f)
    finally:
        store.close()
    assert not report.errors, report.errors[:3]
    return time.perf_counter() - t0


@contextlib.contextmanager
def fresh_state(prefix: str) -> Iterator[tuple[Any, Any]]:
    """A fresh state directory with the default policy and a local Ray, stopped at exit."""
    from bastion.core.policy import ensure_policy_file, load_policy
    from bastion.core.runtime import start_ray, stop_ray
    from bastion.core.settings import load_settings

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        settings = load_settings(tmp)
        start_ray(settings)
        try:
            yield settings, load_policy(ensure_policy_file(settings))
        finally:
            stop_ray(shutdown_serve=False)


def part_heads(sizes: list[int]) -> dict[str, Any]:
    from bastion.training.retrain import RetrainOptions, retrain
    from bastion.training.starter import train_starter

    out: dict[str, Any] = {}
    with fresh_state("bastion-bench-heads-") as (settings, policy):
        t0 = time.perf_counter()
        train_starter(settings, limit_per_source=300, policy=policy)
        out["champion_seconds"] = round(time.perf_counter() - t0, 1)
        for n in sizes:
            import_s = fill_label_store(settings, davidson_items(n))
            shutil.rmtree(settings.state_dir / "embeddings", ignore_errors=True)
            runs = {}
            for cache in ("cold", "warm"):
                opts = RetrainOptions(mode="heads", seed_data=False, promote=False,
                                      run_name=f"bench-heads-{n}-{cache}")
                t0 = time.perf_counter()
                r = retrain(settings, policy, opts, say=print)
                runs[cache] = {"seconds": round(time.perf_counter() - t0, 1),
                               "timings_s": r.timings_s, "cache": r.cache,
                               "version": r.version}
                print(n, cache, runs[cache], flush=True)
            out[str(n)] = {"items": n, "label_import_seconds": round(import_s, 1), **runs}
    return out


def part_scaling(rows: int = 2000, steps: int = 20) -> dict[str, Any]:
    from bastion.training.finetune import FinetuneConfig
    from bastion.training.retrain import RetrainOptions, retrain

    out: dict[str, Any] = {"rows": rows, "steps_per_worker": steps,
                           "batch_per_worker": 16, "max_length": 64}
    with fresh_state("bastion-bench-scale-") as (settings, policy):
        fill_label_store(settings, davidson_items(rows))
        for workers, cpus in ((1, 1), (2, 1), (1, 2)):
            cfg = FinetuneConfig(epochs=1, batch_size=16, max_length=64, max_steps_per_epoch=steps)
            opts = RetrainOptions(mode="full", workers=workers, cpus_per_worker=cpus,
                                  seed_data=False, promote=False, finetune=cfg,
                                  run_name=f"bench-scale-{workers}x{cpus}")
            r = retrain(settings, policy, opts, say=print)
            epoch = next(h for h in r.history if "epoch" in h)
            key = f"{workers}_workers_x_{cpus}_cpu"
            out[key] = {"examples_per_s": round(epoch["examples_per_s"], 2),
                        "examples": epoch["examples"], "fit_seconds": r.timings_s["fit"]}
            print(key, out[key], flush=True)
    one, two = out["1_workers_x_1_cpu"], out["2_workers_x_1_cpu"]
    out["scaling_efficiency_2_workers"] = round(
        two["examples_per_s"] / (2 * one["examples_per_s"]), 3)
    return out


def part_quality(rows: int = 6000, epochs: int = 1, workers: int = 2) -> dict[str, Any]:
    from bastion.registry.store import CHAMPION, ModelRegistry
    from bastion.training.finetune import FinetuneConfig
    from bastion.training.retrain import RetrainOptions, retrain

    out: dict[str, Any] = {"rows": rows}
    with fresh_state("bastion-bench-quality-") as (settings, policy):
        fill_label_store(settings, davidson_items(rows, seed=1))
        heads = retrain(settings, policy, RetrainOptions(
            mode="heads", seed_data=False, promote=False, run_name="bench-q-heads"), say=print)
        # full fine-tuning starts from the champion: make the heads-only version champion,
        # as a first promotion would, so the comparison measures what fine-tuning adds
        reg = ModelRegistry(settings)
        reg.client.set_registered_model_alias(reg.name, CHAMPION, heads.version or "")
        cfg = FinetuneConfig(epochs=epochs, batch_size=16, max_length=64, patience=1)
        t0 = time.perf_counter()
        full = retrain(settings, policy, RetrainOptions(
            mode="full", workers=workers, seed_data=False, promote=False, finetune=cfg,
            run_name="bench-q-full"), say=print)
        out["full_seconds"] = round(time.perf_counter() - t0, 1)
        out["snapshot"] = {k: heads.snapshot[k] for k in ("fingerprint", "splits")}
        assert full.snapshot["fingerprint"] == heads.snapshot["fingerprint"]  # same split
        out["finetune"] = {"epochs": epochs, "workers": workers, "batch_per_worker": 16,
                           "max_length": 64, "history": [h for h in full.history
                                                         if "epoch" in h]}
        for cat in ("hate", "offensive"):
            row = {}
            for name, r in (("heads_only", heads), ("full", full)):
                m = r.metrics[cat]
                row[name] = {"auroc": m.get("auroc"), "recall_at_p90": m.get("recall_at_block"),
                             "precision_at_p90": m.get("precision_at_block"), "n": m["n"],
                             "n_pos": m["n_pos"]}
            row["auroc_gain"] = round((row["full"]["auroc"] or 0)
                                      - (row["heads_only"]["auroc"] or 0), 4)
            out[cat] = row
            print(cat, row, flush=True)
    return out


def main() -> None:
    import os

    os.environ.update(ray_env())
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", default="all", choices=["heads", "scaling", "quality", "all"])
    ap.add_argument("--sizes", default="10000,100000")
    args = ap.parse_args()
    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.update(benchmark="training", machine=machine())
    parts = ["heads", "scaling", "quality"] if args.part == "all" else [args.part]
    for part in parts:
        t0 = time.perf_counter()
        if part == "heads":
            res = part_heads([int(s) for s in args.sizes.split(",")])
        elif part == "scaling":
            res = part_scaling()
        else:
            res = part_quality()
        res["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        res["part_seconds"] = round(time.perf_counter() - t0, 1)
        results[part] = res
        write_results(str(RESULTS), results)


if __name__ == "__main__":
    main()
