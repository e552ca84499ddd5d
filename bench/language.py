"""Language benchmark (issue 17, "Any language"), measured in one run on this machine:

1. language identification (``core.language``, py3langid): accuracy against each labelled set's
   known language (400 texts a set, fixed sample) and texts/s in this process;
2. the English encoder (MiniLM, ``minilm``) against a multilingual one (USE multilingual v3,
   ``use-multilingual``): the same stacked heads (``training.heads.fit_heads``) trained on the
   same items, English and non-English together (the English seed sets: Davidson tweets,
   MLMA English, ToxiGen; and ``training.datasets.MULTILINGUAL_SOURCES``: Korean BEEP!,
   Korean curse, APEACH, MLMA French and Arabic), measured per language, source and category
   on the held-out groups (20%, hashed), as AUROC with a 95% bootstrap interval; and each
   encoder's texts/s on the same sample. What a deployment should route to which encoder
   follows from it (``route``: per language, the encoder with the higher mean AUROC).

Needs the development data (``../shared/data``). Run: ``.venv/bin/python bench/language.py``
(about 10 minutes on 2 cores; nothing else should run). Writes bench/results/language.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bastion.core.encoders import create_encoder  # noqa: E402
from bastion.core.labelled import LabelledSet  # noqa: E402
from bastion.core.language import LANGUAGE_MODEL, detect_languages  # noqa: E402
from bastion.core.model import HeadSpec  # noqa: E402
from bastion.registry.evaluation import bootstrap_ci  # noqa: E402
from bastion.training.datasets import (  # noqa: E402
    MULTILINGUAL_SOURCES,
    SOURCES,
)
from bastion.training.heads import FitConfig, fit_heads, group_split  # noqa: E402
from bench._traffic import machine, write_results  # noqa: E402

ENGLISH = ("davidson", "mlma", "toxigen")
ENCODERS = ("minilm", "use-multilingual")


def _sets(limit: int) -> list[tuple[str, str, LabelledSet]]:
    """(language, source, data) of every set the benchmark reads."""
    out = [("en", name, SOURCES[name].loader(limit=limit, seed=0)) for name in ENGLISH]
    out += [(lang, name, src.loader(limit=limit, seed=0))
            for name, (lang, src) in MULTILINGUAL_SOURCES.items()]
    return out


def language_id(sets: list[tuple[str, str, LabelledSet]], n: int = 400) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    detect_languages(["warm up"])
    for lang, name, data in sets:
        rng = np.random.default_rng(0)
        idx = rng.choice(len(data), min(n, len(data)), replace=False)
        texts = [data.texts[i] for i in idx]
        t0 = time.perf_counter()
        got = detect_languages(texts)
        dt = time.perf_counter() - t0
        wrong: dict[str, int] = {}
        for g in got:
            if g != lang:
                wrong[str(g)] = wrong.get(str(g), 0) + 1
        rows[name] = {"language": lang, "n": len(texts),
                      "accuracy": round(sum(g == lang for g in got) / len(texts), 4),
                      "texts_per_s": round(len(texts) / dt, 1),
                      "mistaken_for": dict(sorted(wrong.items(), key=lambda kv: -kv[1])[:5])}
    return rows


def encoders(sets: list[tuple[str, str, LabelledSet]], say: Any = print) -> dict[str, Any]:
    data = LabelledSet.concat([d for _, _, d in sets])
    langs = np.concatenate([[lang] * len(d) for lang, _, d in sets])
    sources = np.asarray(data.sources)
    test = group_split(data.groups, 0.2, salt="bench-language")
    train = ~test
    keys = [c for j, c in enumerate(data.categories) if data.mask[:, j].any()]
    cols = [data.categories.index(k) for k in keys]
    out: dict[str, Any] = {"n_items": len(data), "n_test": int(test.sum()), "categories": keys,
                           "per_encoder": {}}
    for name in ENCODERS:
        enc = create_encoder(name, threads=0) if name == "use-multilingual" else \
            create_encoder(name, precision="fp32")
        say(f"encoding {len(data)} texts with {name}...")
        t0 = time.perf_counter()
        emb = enc.encode(data.texts, batch_size=32)
        speed = len(data) / (time.perf_counter() - t0)
        w = data.loss_weights[:, cols]  # labelled (by confidence) and weak negatives
        heads = fit_heads(emb[train], data.targets[train][:, cols], w[train] > 0,
                          [HeadSpec.parse(k) for k in keys], FitConfig(), weights=w[train])
        scores = heads.score(emb[test])
        per: dict[str, Any] = {}
        for lang, src, _ in sets:
            sel = (langs[test] == lang) & (sources[test] == src)
            for k, key in enumerate(keys):
                m = sel & data.mask[test][:, cols[k]]  # strict labels only
                y = (data.targets[test][m, cols[k]] >= 0.5).astype(float)
                if min(y.sum(), len(y) - y.sum()) < 10:
                    continue
                s = scores[m, k]
                per[f"{lang}/{src}/{key}"] = {
                    "n": int(len(y)), "n_pos": int(y.sum()),
                    "auroc": round(float(roc_auc_score(y, s)), 4),
                    "auroc_ci": bootstrap_ci(y, s, lambda a, b: float(roc_auc_score(a, b)))}
        out["per_encoder"][name] = {"identity": {k: v for k, v in enc.identity.items()
                                                 if k != "path"},
                                    "texts_per_s": round(speed, 1), "heldout": per}
    by_lang: dict[str, dict[str, list[float]]] = {}
    for name in ENCODERS:
        for key, row in out["per_encoder"][name]["heldout"].items():
            by_lang.setdefault(key.split("/")[0], {}).setdefault(name, []).append(row["auroc"])
    out["mean_auroc_by_language"] = {
        lang: {n: round(float(np.mean(v)), 4) for n, v in d.items()} for lang, d in by_lang.items()}
    out["route"] = {lang: max(d, key=lambda n: d[n])
                    for lang, d in out["mean_auroc_by_language"].items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=3000, help="texts per source (default 3000)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "language.json"))
    args = ap.parse_args()
    sets = _sets(args.limit)
    results = {"benchmark": "language", "machine": machine(), "limit_per_source": args.limit,
               "language_id": {"model": LANGUAGE_MODEL, "sets": language_id(sets)},
               "encoders": encoders(sets)}
    write_results(args.out, results)
    print(f"wrote {args.out}")
    print({k: v for k, v in results["encoders"].items() if k in ("mean_auroc_by_language",
                                                                 "route")})


if __name__ == "__main__":
    main()
