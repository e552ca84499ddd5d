"""Active learning vs random labelling on the Davidson tweets: how many labels each needs.

The experiment behind ``review.selection.select``. Categories ``hate`` and ``offensive``
(positive when the hate, or hate + offensive, votes are at least half of the annotators; soft
targets are the vote shares). A fifth of the tweets, split by ``training.heads.group_split``, is
held out; the rest is the pool a moderator could label. Both strategies start from the same 100
random labels and buy 100 more per round up to 3000; after each round the heads are refitted on
everything labelled (``fit_heads``, 300 epochs) and measured on the held-out fifth
(``evaluate_heads``: AUROC and recall at 90 % precision). Random buys a uniform sample of the
unlabelled pool; active buys ``select()``'s batch, scored by the heads of the round before.
Everything is repeated for 3 seeds and the curves averaged.

Headline, per category and metric: the labels random needs to reach its own final (3000-label)
value on the mean curve, the labels active needs to reach that same value, and their ratio (the
goal: active needs at most half as many). Hate never reaches 90 % precision with these heads, so
its recall@p90 is 0 throughout; average precision is reported beside it. Ablations rerun the
active curves with one of select()'s three terms switched off (``VARIANTS``).

``bench/review.py`` calls :func:`run_active` with its cached embeddings and fills the
``"active"`` key of bench/results/review.json. Run on its own for development (embeds the
tweets through the bench embedding cache, prints the result):
``nice -n 19 .venv/bin/python bench/_review_active.py [--seeds 0,1,2] [--max-labels 3000]
[--no-variants]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bastion.core.model import HeadSpec  # noqa: E402
from bastion.registry.evaluation import evaluate_heads  # noqa: E402
from bastion.review.selection import PREFILTER, select  # noqa: E402
from bastion.training.heads import FitConfig, fit_heads, group_split  # noqa: E402

KEYS = ["hate", "offensive"]
START, STEP, MAX_LABELS = 100, 100, 3000
SEEDS = (0, 1, 2)
EPOCHS = 300
TEST_FRACTION = 0.2
WEIGHTS = (1.0, 1.0, 1.0)  # select()'s defaults: the headline strategy
# Ablations of select()'s (uncertainty, rarity, distance) exponents, active curves only (the
# random curves are shared): which of the three terms earns its place on this data.
VARIANTS: dict[str, tuple[float, float, float]] = {
    "no_diversity": (1.0, 1.0, 0.0),
    "no_rarity": (1.0, 0.0, 1.0),
    "uncertainty_only": (1.0, 0.0, 0.0),
}
# ours -> evaluate_heads' key; average precision is ours (hate never reaches 90 % precision)
METRICS = {"auroc": "auroc", "recall_at_p90": "recall_at_block",
           "average_precision": "average_precision"}

METHOD = (
    "Pool-based active learning, batch mode. Each round the heads fitted on the labels so far "
    "score the unlabelled pool; review.selection.select picks the next 100: per head, "
    "uncertainty = 1 - |s - 0.5| / 0.5 (uncertainty sampling, Lewis & Gale 1994), times "
    "rarity = 1 / sqrt(1 + labels of that head's minority class held), the item's value being "
    "the best head's; then greedy farthest-first (k-center, Sener & Savarese 2018) over cosine "
    "distance in MiniLM space, each step taking the candidate maximising value x distance to the "
    "nearest labelled-or-picked item, over the top 20 x budget candidates by value. Random "
    "draws the same number uniformly from the unlabelled pool. Both start from the same 100 "
    "random labels per seed. Variants change select()'s exponents (uncertainty, rarity, "
    "distance) only."
)


def _targets(rows: Any) -> np.ndarray:
    """Soft targets (n, 2): hate and hate+offensive vote shares."""
    count = rows["count"].to_numpy(dtype=np.float64)
    hate = rows["hate_speech"].to_numpy(dtype=np.float64) / count
    off = (rows["hate_speech"] + rows["offensive_language"]).to_numpy(dtype=np.float64) / count
    return np.stack([hate, off], axis=1).astype(np.float32)


def _minority_counts(binary: np.ndarray) -> dict[str, int]:
    """Labels held per head, counted as its minority class (hate: positives; offensive:
    negatives). Every tweet labels both heads, so plain label counts would tie; the minority
    class is what a head is short of."""
    pos = binary.sum(axis=0)
    return {k: int(min(p, len(binary) - p)) for k, p in zip(KEYS, pos, strict=True)}


def _test_mask(rows: Any) -> np.ndarray:
    """The held-out rows: ``rows["test"]`` where the caller already split (bench/review.py
    does, and resets the index), else group_split over ``rows["group"]`` or the Davidson row id
    (the index), which is the same split."""
    if "test" in rows.columns:
        return rows["test"].to_numpy(dtype=bool)
    groups = (rows["group"].astype(str).tolist() if "group" in rows.columns
              else [f"davidson:{i}" for i in rows.index])
    return group_split(groups, TEST_FRACTION)


def _first_reaching(labels: list[int], curve: list[float], target: float) -> int | None:
    for n, v in zip(labels, curve, strict=True):
        if v >= target - 1e-9:
            return n
    return None


def _run_one(
    strategy: str, seed: int, emb: np.ndarray, soft: np.ndarray, binary: np.ndarray,
    pool: np.ndarray, test: np.ndarray, start: int, step: int, max_labels: int,
    weights: tuple[float, float, float] = WEIGHTS,
) -> dict[str, Any]:
    """One learning curve: fit, measure, buy ``step`` labels, repeat."""
    from sklearn.metrics import average_precision_score

    specs = [HeadSpec(k) for k in KEYS]
    known = np.ones((len(test), len(KEYS)), dtype=bool)
    rng = np.random.default_rng(seed)
    labelled = rng.choice(pool, size=min(start, len(pool)), replace=False)
    # the seed's random stream for later rounds must not depend on the strategy
    buy_rng = np.random.default_rng([seed, 1])
    unlabelled = np.ones(len(pool), dtype=bool)
    unlabelled[np.searchsorted(pool, labelled)] = False
    pool_emb = emb[pool]
    curve: dict[str, Any] = {"labels": [], "picked_positive_rate": [],
                             **{f"{k}/{m}": [] for k in KEYS for m in METRICS}}
    seconds = {"fit": 0.0, "evaluate": 0.0, "select": 0.0}
    categories: dict[str, int] = {}
    bought = labelled
    while True:
        t0 = time.perf_counter()
        heads = fit_heads(emb[labelled], soft[labelled], np.ones((len(labelled), len(KEYS)), bool),
                          specs, FitConfig(epochs=EPOCHS, seed=seed))
        t1 = time.perf_counter()
        test_scores = heads.score(emb[test])
        metrics, _ = evaluate_heads(test_scores, soft[test], known, KEYS)
        for j, k in enumerate(KEYS):
            metrics[k]["average_precision"] = average_precision_score(
                binary[test, j], test_scores[:, j])
        seconds["fit"] += t1 - t0
        seconds["evaluate"] += time.perf_counter() - t1
        curve["labels"].append(int(len(labelled)))
        curve["picked_positive_rate"].append(
            [round(float(v), 4) for v in binary[bought].mean(axis=0)])
        for k in KEYS:
            for ours, theirs in METRICS.items():
                curve[f"{k}/{ours}"].append(float(metrics[k].get(theirs) or 0.0))
        n_new = min(step, max_labels - len(labelled), int(unlabelled.sum()))
        if n_new <= 0:
            break
        t0 = time.perf_counter()
        if strategy == "random":
            rows = buy_rng.choice(np.flatnonzero(unlabelled), size=n_new, replace=False)
        else:
            picks = select(
                pool_emb, heads.score(pool_emb), KEYS, n_new,
                label_counts=_minority_counts(binary[labelled]), labelled=emb[labelled],
                candidates=unlabelled, weights=weights, seed=seed * 1000 + len(labelled),
            )
            rows = np.array([p.index for p in picks])
            for p in picks:
                cat = str(p.reasons["category"])
                categories[cat] = categories.get(cat, 0) + 1
        seconds["select"] += time.perf_counter() - t0
        unlabelled[rows] = False
        bought = pool[rows]
        labelled = np.concatenate([labelled, bought])
    curve["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    if categories:
        curve["picks_by_category"] = categories
    return curve


def _mean_curves(per: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        k: {m: [round(float(v), 4) for v in np.mean([r[f"{k}/{m}"] for r in per], axis=0)]
            for m in METRICS}
        for k in KEYS
    }
    out["picked_positive_rate"] = {
        k: [round(float(v), 4) for v in
            np.mean([np.array(r["picked_positive_rate"])[:, j] for r in per], axis=0)]
        for j, k in enumerate(KEYS)
    }
    return out


def _headline(labels: list[int], rand: list[float], act: list[float]) -> dict[str, Any]:
    """Labels random needs to reach its final value, labels active needs for the same."""
    target = rand[-1]
    n_rand = _first_reaching(labels, rand, target)
    n_act = _first_reaching(labels, act, target)
    ratio = None if n_act is None or n_rand is None else round(n_rand / n_act, 2)
    return {"target": round(target, 4), "random_labels": n_rand,
            "active_labels": n_act if n_act is not None else "not reached",
            "ratio": ratio, "goal_2x_met": ratio is not None and ratio >= 2.0,
            "active_final": round(act[-1], 4)}


def _compare(
    labels: list[int], random: list[dict[str, Any]], active: list[dict[str, Any]],
) -> dict[str, Any]:
    """Headline on the mean curves, and the ratio seed by seed (how much it varies)."""
    rand_mean, act_mean = _mean_curves(random), _mean_curves(active)
    return {
        "headline": {k: {m: _headline(labels, rand_mean[k][m], act_mean[k][m]) for m in METRICS}
                     for k in KEYS},
        "headline_per_seed": {
            k: {m: [_headline(labels, r[f"{k}/{m}"], a[f"{k}/{m}"])["ratio"]
                    for r, a in zip(random, active, strict=True)]
                for m in METRICS}
            for k in KEYS
        },
    }


def _select_speed(n: int = 100_000, dim: int = 384, budget: int = 500) -> dict[str, Any]:
    """select() on a synthetic pool of the size the brief names (random vectors and scores)."""
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    scores = rng.random((n, 2)).astype(np.float32)
    t0 = time.perf_counter()
    select(emb, scores, KEYS, budget, labelled=emb[:3000])
    return {"candidates": n, "dim": dim, "budget": budget, "labelled": 3000,
            "seconds": round(time.perf_counter() - t0, 2)}


def run_active(
    emb: np.ndarray, rows: Any, out: dict[str, Any], *, seeds: tuple[int, ...] = SEEDS,
    start: int = START, step: int = STEP, max_labels: int = MAX_LABELS,
    variants: dict[str, tuple[float, float, float]] | None = None,
) -> None:
    """Run the experiment on the Davidson tweets and fill ``out``.

    Args:
        emb: (n, d) embeddings, row i of the tweet in row i of ``rows``.
        rows: The Davidson DataFrame (hate_speech, offensive_language, neither, count, tweet),
            indexed by the Davidson row id; a ``test`` (bool) or ``group`` column, where
            present, defines the held-out split instead (see :func:`_test_mask`).
        out: Filled with ``method``, ``setup``, ``curves`` (means over seeds), ``per_seed``,
            ``headline``, ``headline_per_seed``, ``variants`` and ``timings``.
        variants: Ablations of select()'s exponents (default :data:`VARIANTS`; ``{}`` skips).
    """
    import torch

    started = time.perf_counter()
    if len(emb) != len(rows):
        raise ValueError(f"run_active: {len(emb)} embeddings for {len(rows)} rows")
    variants = VARIANTS if variants is None else variants
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    soft = _targets(rows)
    binary = soft >= 0.5
    test_mask = _test_mask(rows)
    test, pool = np.flatnonzero(test_mask), np.flatnonzero(~test_mask)
    max_labels = min(max_labels, len(pool))

    def curves_of(strategy: str, weights: tuple[float, float, float]) -> list[dict[str, Any]]:
        return [_run_one(strategy, seed, emb, soft, binary, pool, test, start, step, max_labels,
                         weights) for seed in seeds]

    # One thread: a (3000 x 384) full-batch fit gains nothing from more, and on a shared 2-core
    # box two spinning threads made each fit 20x slower (21 s vs 1.1 s, measured).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = {"random": curves_of("random", WEIGHTS), "active": curves_of("active", WEIGHTS)}
        t_main = time.perf_counter() - started
        ablations = {name: curves_of("active", w) for name, w in variants.items()}
    finally:
        torch.set_num_threads(threads)
    labels = runs["random"][0]["labels"]

    out["method"] = METHOD
    out["setup"] = {
        "items": len(rows), "test": len(test), "pool": len(pool),
        "test_split": f"group_split(['davidson:<row id>'], {TEST_FRACTION})",
        "categories": {"hate": "hate votes >= count / 2",
                       "offensive": "(hate + offensive) votes >= count / 2"},
        "soft_targets": "vote shares", "start_labels": start, "labels_per_round": step,
        "max_labels": max_labels, "seeds": list(seeds),
        "fit": f"fit_heads(FitConfig(epochs={EPOCHS}, seed=seed)), no validation split",
        "select": {"thresholds": 0.5, "weights": list(WEIGHTS), "prefilter": PREFILTER,
                   "label_counts": "minority-class labels held per head",
                   "labelled": "embeddings of everything labelled so far"},
        "test_prevalence": {k: round(float(binary[test, j].mean()), 4)
                            for j, k in enumerate(KEYS)},
        "metrics": {
            "auroc": "held-out AUROC (evaluate_heads)",
            "recall_at_p90": "recall at the lowest threshold with precision >= 0.9 on the "
                             "held-out set (evaluate_heads; 0 where no threshold reaches it)",
            "average_precision": "area under the held-out PR curve (sklearn), supplementary",
        },
    }
    out["curves"] = {"labels": labels, "random": _mean_curves(runs["random"]),
                     "active": _mean_curves(runs["active"])}
    out["per_seed"] = {
        strategy: [{k: v for k, v in r.items() if k != "labels"} for r in per]
        for strategy, per in runs.items()
    }
    out.update(_compare(labels, runs["random"], runs["active"]))
    out["variants"] = {
        name: {"weights": list(variants[name]), "curves": _mean_curves(per),
               "picks_by_category": [r.get("picks_by_category") for r in per],
               **_compare(labels, runs["random"], per)}
        for name, per in ablations.items()
    }
    out["timings"] = {
        "experiment_seconds": round(time.perf_counter() - started, 1),
        "random_and_active_seconds": round(t_main, 1),
        "per_strategy_seconds": {
            s: {part: round(sum(r["seconds"][part] for r in per), 1)
                for part in ("fit", "evaluate", "select")}
            for s, per in runs.items()
        },
        "select_speed": _select_speed(),
    }


def _embed(texts: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    from bastion.core.embcache import EmbeddingCache
    from bastion.core.encoders import create_encoder
    from bastion.core.store import default_database_url

    directory = os.environ.get("BASTION_BENCH_CACHE", "/tmp/bastion-bench-cache")
    cache = EmbeddingCache(default_database_url(directory), create_encoder("minilm"))
    try:
        t0 = time.perf_counter()
        emb, stats = cache.embed(texts)
    finally:
        cache.close()
    return emb, {"cache": directory, "hits": stats.hits, "encoded": stats.encoded,
                 "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    import pandas as pd

    from bastion.training.datasets import davidson_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--max-labels", type=int, default=MAX_LABELS)
    parser.add_argument("--no-variants", action="store_true", help="skip the ablations")
    args = parser.parse_args()
    path = davidson_path()
    if path is None:
        raise SystemExit("the Davidson CSV is needed: ../shared/data or BASTION_DAVIDSON_CSV")
    rows = pd.read_csv(path, index_col=0)
    emb, embed_info = _embed(rows["tweet"].astype(str).tolist())
    out: dict[str, Any] = {}
    run_active(emb, rows, out, seeds=tuple(int(s) for s in args.seeds.split(",")),
               max_labels=args.max_labels, variants={} if args.no_variants else None)
    out["timings"]["embed"] = embed_info
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
