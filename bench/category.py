"""New-category benchmark (issue 17, "New category in minutes"), measured in one run here.

Categories held out of the starter: the starter's heads are not used at all; each category's
head is trained from scratch on the stock MiniLM embeddings (the frozen backbone never saw a
label) exactly as ``bastion category add`` trains it (``training.category.fit_head``: balanced
logistic regression). Three real labelled categories of two sources, each source's texts
standing in for a tenant's traffic:

- ``spam`` on the SMS Spam Collection (``sms_spam``, packaged: every install has it);
- ``violence`` (threats) and ``hate`` (identity attacks) on Civil Comments sentences labelled
  by their typed spans (``toxic_spans_sentences``, development data).

Per category, items are split by group (``training.heads.group_split``, 20% test). The test
split's labelled items measure AUROC. From the train split:

1. **Examples curve.** n = 10, 20, 50, 100, 500 positives drawn at random (``--draws`` seeded
   draws each; a size the train split cannot supply is reported as such), negatives sampled
   from the whole train split as unlabelled traffic (up to 3,000; positives among them are not
   removed, only items within cosine 0.8 of a drawn example, as the command does): AUROC mean,
   standard deviation, min and max over the draws.
2. **Full-data head.** Trained on every labelled train item (true negatives): the ceiling.
3. **Labels to within 0.02 of it.** From 10 examples, moderators label ``--batch`` items a
   round chosen by active learning (``training.category_review.rank_for_labelling``: uncertain
   around the review threshold the command set from the first 10, spread out), and, as the
   baseline, chosen at random (``--reach-draws`` runs each); the head is refitted each round
   on examples + labelled items + traffic negatives. Labels counted:
   the examples plus the items labelled, until test AUROC >= full - 0.02 (up to ``--budget``).

Needs ``../shared/data`` for the Civil Comments categories (skipped without it). Embeddings
come from an embedding cache (``--cache``), so re-runs encode nothing. Run:
``.venv/bin/python bench/category.py`` (about 10 minutes on 2 cores with a cold cache).
Writes bench/results/category.json.
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

from bastion.core.embcache import EmbeddingCache  # noqa: E402
from bastion.core.encoders import create_encoder  # noqa: E402
from bastion.core.store import default_database_url  # noqa: E402
from bastion.training.category import (  # noqa: E402
    MAX_TRAFFIC,
    MIN_POSITIVES,
    NEAR_POSITIVE,
    fit_category_head,
    fit_head,
    near_positives,
    pick_review_threshold,
)
from bastion.training.category_review import rank_for_labelling  # noqa: E402
from bastion.training.datasets import SOURCES, available_sources  # noqa: E402
from bastion.training.heads import group_split  # noqa: E402
from bench._traffic import machine, write_results  # noqa: E402

SIZES = (10, 20, 50, 100, 500)
TASKS = (("sms_spam", "spam", None), ("toxic_spans_sentences", "violence", 8000),
         ("toxic_spans_sentences", "hate", 8000))
TOLERANCE = 0.02


def _auroc(head: Any, emb: np.ndarray, y: np.ndarray) -> float:
    return float(roc_auc_score(y, head.score(emb)[:, 0]))


def _traffic(emb: np.ndarray, pool: np.ndarray, pos: np.ndarray, rng: np.random.Generator,
             exclude: np.ndarray | None = None) -> np.ndarray:
    """Rows of ``pool`` sampled as traffic negatives, none near the positives ``pos``."""
    cand = pool if exclude is None else np.setdiff1d(pool, exclude)
    cand = cand[~near_positives(emb[cand], emb[pos], NEAR_POSITIVE)]
    return cand if len(cand) <= MAX_TRAFFIC else rng.choice(cand, MAX_TRAFFIC, replace=False)


def examples_curve(emb: np.ndarray, y: np.ndarray, train: np.ndarray, labelled: np.ndarray,
                   test: np.ndarray, draws: int) -> dict[str, Any]:
    pos_pool = train[labelled[train] & (y[train] >= 0.5)]
    out: dict[str, Any] = {}
    for n in SIZES:
        if n > len(pos_pool):
            out[str(n)] = {"note": f"the train split has {len(pos_pool)} positives"}
            continue
        aurocs, fit_s = [], []
        for d in range(draws):
            rng = np.random.default_rng(1000 * n + d)
            pos = rng.choice(pos_pool, n, replace=False)
            neg = _traffic(emb, train, pos, rng, exclude=pos)
            t0 = time.perf_counter()
            head = fit_head(emb[pos], emb[neg], "bench/x")
            fit_s.append(time.perf_counter() - t0)
            aurocs.append(_auroc(head, emb[test], y[test] >= 0.5))
        a = np.array(aurocs)
        out[str(n)] = {"auroc_mean": round(float(a.mean()), 4),
                       "auroc_std": round(float(a.std()), 4),
                       "auroc_min": round(float(a.min()), 4),
                       "auroc_max": round(float(a.max()), 4), "draws": draws,
                       "fit_s_median": round(float(np.median(fit_s)), 3)}
    return out


def labels_to_reach(emb: np.ndarray, y: np.ndarray, train: np.ndarray, labelled: np.ndarray,
                    test: np.ndarray, goal: float, strategy: str, seed: int, batch: int,
                    budget: int) -> dict[str, Any]:
    """Labels (examples + items labelled) until test AUROC reaches ``goal``."""
    rng = np.random.default_rng(seed)
    pos_pool = train[labelled[train] & (y[train] >= 0.5)]
    examples = rng.choice(pos_pool, MIN_POSITIVES, replace=False)
    askable = train[labelled[train]]  # moderators can only answer for labelled items here
    asked: list[int] = []
    curve = []
    while True:
        lab = np.array(asked, dtype=np.int64)
        lab_pos = lab[y[lab] >= 0.5] if len(lab) else lab
        lab_neg = lab[y[lab] < 0.5] if len(lab) else lab
        pos = np.r_[examples, lab_pos].astype(np.int64)
        traffic = _traffic(emb, train, pos, rng, exclude=np.r_[pos, lab_neg])
        neg = np.r_[lab_neg, traffic].astype(np.int64)
        if not asked:  # the review threshold the command writes into the policy; it stays
            # there until calibration on reviewed labels replaces it
            head, pos_oof, neg_oof = fit_category_head(emb[pos], emb[neg], "bench/x",
                                                       seed=seed)
            threshold = pick_review_threshold(pos_oof, neg_oof)["threshold"]
        else:
            head = fit_head(emb[pos], emb[neg], "bench/x")
        auroc = _auroc(head, emb[test], y[test] >= 0.5)
        n_labels = MIN_POSITIVES + len(asked)
        curve.append([n_labels, round(auroc, 4)])
        if auroc >= goal:
            return {"labels": n_labels, "reached": True, "curve": curve}
        if n_labels + batch > budget:
            return {"labels": None, "reached": False, "curve": curve}
        left = np.setdiff1d(askable, np.r_[examples, lab])
        if strategy == "active":
            picks = rank_for_labelling(emb[left], head.score(emb[left])[:, 0], "x", threshold,
                                       batch, labelled=emb[np.r_[pos, lab]], seed=seed)
            asked += [int(left[p.index]) for p in picks]
        else:
            asked += [int(i) for i in rng.choice(left, batch, replace=False)]


def run_task(source: str, category: str, limit: int | None, emb_of: Any, draws: int,
             reach_draws: int, batch: int, budget: int, say: Any = print) -> dict[str, Any]:
    data = SOURCES[source].loader(limit=limit, seed=0)
    j = data.categories.index(category)
    y, labelled = data.targets[:, j], data.mask[:, j]
    t0 = time.perf_counter()
    emb = emb_of(data.texts)
    say(f"{source}/{category}: {len(data)} texts embedded in {time.perf_counter() - t0:.0f} s")
    is_test = group_split(data.groups)
    train = np.flatnonzero(~is_test)
    test = np.flatnonzero(is_test & labelled)
    full_pos = train[labelled[train] & (y[train] >= 0.5)]
    full_neg = train[labelled[train] & (y[train] < 0.5)]
    full = fit_head(emb[full_pos], emb[full_neg], "bench/full")
    full_auroc = _auroc(full, emb[test], y[test] >= 0.5)
    goal = full_auroc - TOLERANCE
    curve = examples_curve(emb, y, train, labelled, test, draws)
    say(f"  full-data AUROC {full_auroc:.4f}; examples curve "
        + ", ".join(f"{n}: {v.get('auroc_mean', '-')}" for n, v in curve.items()))
    reach: dict[str, Any] = {}
    for strategy in ("active", "random"):
        runs = [labels_to_reach(emb, y, train, labelled, test, goal, strategy, seed, batch,
                                budget) for seed in range(reach_draws)]
        got = [r["labels"] for r in runs if r["reached"]]
        reach[strategy] = {
            "labels_median": float(np.median(got)) if len(got) == len(runs) else None,
            "labels": [r["labels"] for r in runs], "reached": f"{len(got)}/{len(runs)}",
            "curves": [r["curve"] for r in runs]}
        say(f"  labels to AUROC >= {goal:.4f} ({strategy}): {reach[strategy]['labels']}")
    examples_reach = next((int(n) for n, v in curve.items()
                           if v.get("auroc_mean", 0) >= goal), None)
    return {
        "source": source, "category": category, "n_texts": len(data),
        "n_labelled": int(labelled.sum()), "n_test": len(test),
        "n_test_pos": int((y[test] >= 0.5).sum()), "n_train_pos": len(full_pos),
        "full_data": {"auroc": round(full_auroc, 4), "n_pos": len(full_pos),
                      "n_neg": len(full_neg)},
        "goal_auroc": round(goal, 4), "examples": curve,
        "examples_to_reach_goal": examples_reach, "labels_to_reach_goal": reach,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache/bastion-bench/emb",
                    help="Embedding cache folder (re-runs encode nothing).")
    ap.add_argument("--draws", type=int, default=5, help="Random draws per size.")
    ap.add_argument("--reach-draws", type=int, default=3,
                    help="Runs per strategy of the labels-to-reach part.")
    ap.add_argument("--batch", type=int, default=25, help="Items labelled per round.")
    ap.add_argument("--budget", type=int, default=1500, help="Most labels per run.")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "category.json"))
    args = ap.parse_args()
    encoder = create_encoder("minilm", precision="fp32")
    args.cache.mkdir(parents=True, exist_ok=True)
    cache = EmbeddingCache(default_database_url(args.cache), encoder)
    here = set(available_sources())
    results: dict[str, Any] = {
        "benchmark": "category", "machine": machine(), "encoder": encoder.identity["name"],
        "sizes": list(SIZES), "draws": args.draws, "reach_draws": args.reach_draws,
        "batch": args.batch, "budget": args.budget,
        "tolerance": TOLERANCE, "max_traffic": MAX_TRAFFIC, "near_positive": NEAR_POSITIVE,
        "tasks": [], "skipped": []}
    t_all = time.perf_counter()
    try:
        for source, category, limit in TASKS:
            if source not in here:
                results["skipped"].append(f"{source}/{category}: the development data is "
                                          "not here (../shared/data)")
                continue
            results["tasks"].append(run_task(
                source, category, limit, lambda t: cache.embed(t)[0], args.draws, args.reach_draws,
                args.batch, args.budget))
    finally:
        cache.close()
    results["seconds"] = round(time.perf_counter() - t_all, 1)
    write_results(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
