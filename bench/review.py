"""Review-loop benchmarks on the Davidson tweets: label aggregation, automatic decisions at a
calibrated precision, and (where present) active learning.

- ``aggregation``: Dawid-Skene vs majority vote over a simulated moderator team; accuracy of the
  aggregated labels, and the quality of heads trained on each.
- ``auto``: thresholds calibrated on a reviewed half of the held-out tweets
  (``review.calibration.calibrate``) and applied to the unseen half: how much is decided
  without a moderator, at what precision, and the moderator minutes that saves.
- ``active``: ``run_active(emb, rows, out)`` of ``bench/_review_active.py``, skipped if absent.

Run: ``.venv/bin/python bench/review.py [--part aggregation|auto|active|all]``. Each part's
results are merged into bench/results/review.json. Every tweet is embedded once with the MiniLM
encoder through the embedding cache in ``BASTION_BENCH_CACHE`` (default
/tmp/bastion-bench-cache): a cold cache encodes ~25k tweets (minutes on a CPU), later runs read it.

Labels: the Davidson crowd's vote counts. "offensive" = hate + offensive votes are at least half
of the votes, "hate" = hate votes are; 20% of the tweets are held out (``group_split``).
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
sys.path.insert(0, str(ROOT))

from bench._traffic import machine, write_results  # noqa: E402

RESULTS = ROOT / "bench/results/review.json"
CATEGORIES = ["offensive", "hate"]
TARGET_PRECISION = 0.9
CONFIDENCE = 0.95
REVIEW_RECALL = 0.9
SWEEP = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)  # other target precisions, for context
MINUTES_PER_ITEM = 0.5  # a moderator's time per reviewed tweet (a session takes minutes)

# Simulated moderators, (sensitivity, specificity), the same on both categories.
MODERATORS: dict[str, tuple[float, float]] = {
    "senior": (0.95, 0.97),
    "good-1": (0.92, 0.95),
    "good-2": (0.90, 0.92),
    "good-3": (0.88, 0.90),
    "cautious": (0.75, 0.97),  # misses some, rarely flags wrongly
    "trigger-happy": (0.97, 0.80),  # flags almost everything that might be
    "careless": (0.60, 0.60),  # barely better than a coin
    "adversarial": (0.35, 0.45),  # wrong more often than right, on both classes
}
VOTES_PER_ITEM = 3
GOLD_SHARE = 0.02


def load_rows() -> Any:
    """The Davidson tweets with their crowd labels, groups and held-out mask."""
    import pandas as pd

    from bastion.training.datasets import davidson_path
    from bastion.training.heads import group_split

    path = davidson_path()
    if path is None:
        raise SystemExit("the Davidson CSV is needed: ../shared/data or BASTION_DAVIDSON_CSV")
    df = pd.read_csv(path, index_col=0)
    df["tweet"] = df["tweet"].astype(str)
    df["group"] = [f"davidson:{i}" for i in df.index]
    df["test"] = group_split(df["group"].tolist(), 0.2)
    df["offensive_share"] = (df["hate_speech"] + df["offensive_language"]) / df["count"]
    df["hate_share"] = df["hate_speech"] / df["count"]
    for cat in CATEGORIES:
        df[cat] = (df[f"{cat}_share"] >= 0.5).astype(np.float32)
    return df.reset_index(drop=True)


def embed(texts: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """MiniLM embeddings through the shared embedding cache."""
    from bastion.core.embcache import EmbeddingCache
    from bastion.core.encoders import create_encoder
    from bastion.core.store import default_database_url

    directory = os.environ.get("BASTION_BENCH_CACHE", "/tmp/bastion-bench-cache")
    cache = EmbeddingCache(default_database_url(directory), create_encoder("minilm"))

    def progress(_: str, done: int, total: int) -> None:
        print(f"  encoding {done}/{total}", flush=True)

    t0 = time.perf_counter()
    emb, stats = cache.embed(texts, progress=progress)
    info = {"cache_dir": directory, "hits": stats.hits, "encoded": stats.encoded,
            "seconds": round(time.perf_counter() - t0, 1)}
    print(f"embeddings: {info}", flush=True)
    return emb, info


def fit_and_score(emb_train: np.ndarray, targets: np.ndarray, weights: np.ndarray | None,
                  emb_eval: np.ndarray) -> np.ndarray:
    """Heads for CATEGORIES fitted on (soft targets, weights); scores of ``emb_eval``."""
    from bastion.core.model import HeadSpec
    from bastion.training.heads import fit_heads

    mask = np.ones(targets.shape, dtype=bool)
    heads = fit_heads(emb_train, targets, mask, [HeadSpec(c) for c in CATEGORIES],
                      weights=weights)
    return heads.score(emb_eval)


def evaluate(scores: np.ndarray, truth: np.ndarray) -> dict[str, dict[str, Any]]:
    from sklearn.metrics import average_precision_score

    from bastion.registry.evaluation import evaluate_heads

    metrics, _ = evaluate_heads(scores, truth, np.ones(truth.shape, dtype=bool), CATEGORIES,
                                target_precision=TARGET_PRECISION)
    keep = ("auroc", "block_threshold_at_p90", "precision_at_block", "recall_at_block")
    out = {c: {k: m.get(k) for k in keep} for c, m in metrics.items()}
    for j, c in enumerate(CATEGORIES):
        # threshold-free, and still defined where precision 0.9 is out of reach (hate)
        ap = average_precision_score(truth[:, j] >= 0.5, scores[:, j])
        out[c]["average_precision"] = round(float(ap), 4)
    return out


# --- aggregation ---------------------------------------------------------------------------


def simulate_votes(truth: np.ndarray, seed: int) -> tuple[dict[tuple[str, str], list[Any]],
                                                          np.ndarray]:
    """Votes of VOTES_PER_ITEM distinct moderators per (row, category), drawn from their
    confusion given the truth; and the gold mask (GOLD_SHARE of the rows)."""
    from bastion.core.labels import Vote

    rng = np.random.default_rng(seed)
    names = list(MODERATORS)
    sens = np.array([MODERATORS[a][0] for a in names])
    spec = np.array([MODERATORS[a][1] for a in names])
    n = len(truth)
    who = np.argsort(rng.random((n, len(names))), axis=1)[:, :VOTES_PER_ITEM]
    votes: dict[tuple[str, str], list[Any]] = {}
    for j, cat in enumerate(CATEGORIES):
        p_one = np.where(truth[:, j:j + 1] >= 0.5, sens[who], 1.0 - spec[who])
        says = rng.random(p_one.shape) < p_one
        for i in range(n):
            votes[(str(i), cat)] = [Vote(names[a], float(s), 1.0)
                                    for a, s in zip(who[i], says[i], strict=True)]
    gold = rng.random(n) < GOLD_SHARE
    return votes, gold


def part_aggregation(df: Any, emb: np.ndarray, seeds: list[int]) -> dict[str, Any]:
    from bastion.core.aggregation import dawid_skene, majority_vote

    train = ~df["test"].to_numpy()
    truth_tr = df.loc[train, CATEGORIES].to_numpy(np.float32)
    truth_te = df.loc[~train, CATEGORIES].to_numpy(np.float32)
    emb_tr, emb_te = emb[train], emb[~train]
    n = len(truth_tr)

    crowd = evaluate(fit_and_score(emb_tr, truth_tr, None, emb_te), truth_te)
    print("crowd labels:", crowd, flush=True)
    runs = []
    for seed in seeds:
        votes, gold = simulate_votes(truth_tr, seed)
        gold_truth = {(str(i), c): float(truth_tr[i, j])
                      for i in np.flatnonzero(gold) for j, c in enumerate(CATEGORIES)}
        t0 = time.perf_counter()
        ds = dawid_skene(votes, gold=gold_truth)
        ds_s = time.perf_counter() - t0
        mv = majority_vote(votes)
        run: dict[str, Any] = {"seed": seed, "n_gold": int(gold.sum()),
                               "dawid_skene_seconds": round(ds_s, 2), "label_accuracy": {},
                               "heads": {}}
        labels = {"dawid_skene": ds.labels, "majority_vote": mv}
        arrays = {}
        for name, lab in labels.items():
            soft = np.array([[lab[(str(i), c)][0] for c in CATEGORIES] for i in range(n)],
                            dtype=np.float32)
            weight = np.array([[lab[(str(i), c)][1] for c in CATEGORIES] for i in range(n)],
                              dtype=np.float32)
            # gold items' truth is known to the platform, whichever aggregator it uses
            soft[gold], weight[gold] = truth_tr[gold], 1.0
            arrays[name] = (soft, weight)
            hard = soft >= 0.5
            run["label_accuracy"][name] = {
                c: round(float((hard[~gold, j] == (truth_tr[~gold, j] >= 0.5)).mean()), 4)
                for j, c in enumerate(CATEGORIES)
            }
        for name, (soft, weight) in arrays.items():
            run["heads"][name] = evaluate(fit_and_score(emb_tr, soft, weight, emb_te), truth_te)
        run["reliability_estimated"] = {
            f"{a}/{c}": [round(r.sensitivity, 3), round(r.specificity, 3)]
            for (a, c), r in sorted(ds.reliability.items())
        }
        print(json.dumps({k: run[k] for k in ("seed", "label_accuracy", "heads")}), flush=True)
        runs.append(run)

    def mean(path: tuple[str, ...]) -> float | None:
        vals = []
        for r in runs:
            v: Any = r
            for p in path:
                v = v.get(p) if isinstance(v, dict) else None
            if v is not None:
                vals.append(float(v))
        return round(float(np.mean(vals)), 4) if vals else None

    aggs = ("dawid_skene", "majority_vote")
    return {
        "method": (
            "Davidson tweets have vote counts but no annotator ids, so the moderator team is "
            "simulated: ground truth = the Davidson crowd majority per category (offensive: "
            "hate+offensive votes >= half; hate: hate votes >= half); "
            f"{len(MODERATORS)} simulated moderators with the (sensitivity, specificity) "
            f"below, the same on both categories; {VOTES_PER_ITEM} distinct moderators drawn "
            "uniformly label each train row, each category drawn independently from their "
            f"confusion given the truth; {GOLD_SHARE:.0%} of train rows are gold (truth known: "
            "clamped in Dawid-Skene, and used as the training target for both aggregators). "
            "Label accuracy: hard aggregated label (>= 0.5) vs truth on the non-gold train "
            "rows. Heads: training.heads.fit_heads on the MiniLM embeddings of the train rows "
            "with each aggregator's soft labels and weights (the crowd row: the truth, weight "
            "1, an upper bound); evaluated on the held-out 20% against the crowd labels "
            "(registry.evaluation.evaluate_heads, block threshold at held-out precision 0.9)."
        ),
        "moderators": {a: {"sensitivity": s, "specificity": t}
                       for a, (s, t) in MODERATORS.items()},
        "n_train": int(n), "n_test": int(len(truth_te)),
        "prevalence_train": {c: round(float(truth_tr[:, j].mean()), 4)
                             for j, c in enumerate(CATEGORIES)},
        "seeds": seeds,
        "summary": {
            "label_accuracy": {a: {c: mean(("label_accuracy", a, c)) for c in CATEGORIES}
                               for a in aggs},
            "heads": {
                "crowd_labels": crowd,
                **{a: {c: {k: mean(("heads", a, c, k))
                           for k in ("auroc", "average_precision", "precision_at_block",
                                     "recall_at_block")}
                       for c in CATEGORIES} for a in aggs},
            },
        },
        "runs": runs,
    }


# --- auto ----------------------------------------------------------------------------------


def outcome(scores: np.ndarray, truth: np.ndarray, block: float,
            review: float | None) -> dict[str, Any]:
    """What the thresholds do to unseen items: bands, precision, recall, minutes."""
    n, pos = len(scores), truth >= 0.5
    blocked = scores >= block
    in_review = (scores >= (block if review is None else review)) & ~blocked
    allowed = ~blocked & ~in_review
    n_pos = max(int(pos.sum()), 1)
    minutes_all = n * MINUTES_PER_ITEM
    minutes = int(in_review.sum()) * MINUTES_PER_ITEM
    return {
        "n": n, "n_positive": int(pos.sum()),
        "blocked_share": round(float(blocked.mean()), 4),
        "precision_blocked": (round(float(pos[blocked].mean()), 4) if blocked.any() else None),
        "recall_blocked": round(float((pos & blocked).sum() / n_pos), 4),
        "review_share": round(float(in_review.mean()), 4),
        "allowed_share": round(float(allowed.mean()), 4),
        "positives_allowed_share": round(float((pos & allowed).sum() / n_pos), 4),
        "decided_without_review_share": round(float((blocked | allowed).mean()), 4),
        "moderator_minutes_all": round(minutes_all, 1),
        "moderator_minutes": round(minutes, 1),
        "moderator_minutes_saved": round(minutes_all - minutes, 1),
        "moderator_minutes_saved_per_10k_items": round(
            (minutes_all - minutes) / max(n, 1) * 10_000, 1),
    }


def part_auto(df: Any, emb: np.ndarray, repeats: int) -> dict[str, Any]:
    from bastion.review.calibration import calibrate
    from bastion.training.heads import group_split

    train = ~df["test"].to_numpy()
    soft_tr = df.loc[train, [f"{c}_share" for c in CATEGORIES]].to_numpy(np.float32)
    test = df.loc[~train].reset_index(drop=True)
    scores = fit_and_score(emb[train], soft_tr, None, emb[~train])
    truth = test[CATEGORIES].to_numpy(np.float32)
    reviewed = group_split(test["group"].tolist(), 0.5, salt="bastion-review-calibration")
    out: dict[str, Any] = {
        "method": (
            "Heads fitted on the train rows (80%, crowd vote shares as soft targets). The "
            "held-out rows are split in half by group: 'reviewed' (their crowd labels stand in "
            "for moderators' aggregated labels) calibrates the thresholds with "
            f"review.calibration.calibrate (target precision {TARGET_PRECISION}, one-sided "
            f"Clopper-Pearson at {CONFIDENCE}, review recall {REVIEW_RECALL}); the 'unseen' "
            "half measures them. Blocked: score >= block; review band: review <= score < "
            "block; allowed: below review. Where no threshold reaches the target, nothing is "
            "decided automatically ('unseen' is null): the category keeps its current "
            "thresholds. 'sweep': the same at other target precisions. Minutes: "
            f"{MINUTES_PER_ITEM} min per reviewed item, against reviewing every item. "
            f"'repeats': {repeats} random reviewed/unseen halvings of the held-out rows, to "
            "see how often the precision achieved on unseen items meets the target."
        ),
        "target_precision": TARGET_PRECISION, "confidence": CONFIDENCE,
        "review_recall": REVIEW_RECALL, "minutes_per_item": MINUTES_PER_ITEM,
        "n_train": int(train.sum()), "n_reviewed": int(reviewed.sum()),
        "n_unseen": int((~reviewed).sum()), "categories": {},
    }
    rng = np.random.default_rng(0)
    for j, cat in enumerate(CATEGORIES):
        s, y = scores[:, j].astype(np.float64), truth[:, j]
        block, review, curve = calibrate(s[reviewed], y[reviewed],
                                         target_precision=TARGET_PRECISION,
                                         confidence=CONFIDENCE, review_recall=REVIEW_RECALL)
        at = next((e for e in curve if e.threshold == block), None)
        entry: dict[str, Any] = {
            "block_threshold": None if block is None else round(block, 6),
            "review_threshold": None if review is None else round(review, 6),
            "calibration": None if at is None else {
                "n_above": at.n_above, "precision": round(at.precision, 4),
                "precision_lower": round(at.precision_lower, 4), "recall": round(at.recall, 4),
            },
            "unseen": None if block is None else outcome(s[~reviewed], y[~reviewed], block,
                                                         review),
            "sweep": {},
        }
        for target in SWEEP:
            b, r, _ = calibrate(s[reviewed], y[reviewed], target_precision=target,
                                confidence=CONFIDENCE, review_recall=REVIEW_RECALL)
            entry["sweep"][f"{target:g}"] = {
                "block_threshold": None if b is None else round(b, 6),
                "review_threshold": None if r is None else round(r, 6),
                "unseen": None if b is None else outcome(s[~reviewed], y[~reviewed], b, r),
            }
        achieved, met, auto = [], 0, []
        for _ in range(repeats):
            half = rng.permutation(len(s)) < len(s) // 2
            b, r, _ = calibrate(s[half], y[half], target_precision=TARGET_PRECISION,
                                confidence=CONFIDENCE, review_recall=REVIEW_RECALL)
            if b is None:
                auto.append(0.0)
                continue
            o = outcome(s[~half], y[~half], b, r)
            auto.append(o["blocked_share"])
            if o["precision_blocked"] is not None:
                achieved.append(o["precision_blocked"])
                met += o["precision_blocked"] >= TARGET_PRECISION
        entry["repeats"] = {
            "n": repeats, "with_block_threshold": len(achieved),
            "precision_blocked_mean": round(float(np.mean(achieved)), 4) if achieved else None,
            "precision_blocked_min": round(float(np.min(achieved)), 4) if achieved else None,
            "share_meeting_target": round(met / len(achieved), 4) if achieved else None,
            "blocked_share_mean": round(float(np.mean(auto)), 4),
        }
        print(cat, json.dumps(entry), flush=True)
        out["categories"][cat] = entry
    return out


# --- active --------------------------------------------------------------------------------


def part_active(df: Any, emb: np.ndarray) -> dict[str, Any] | None:
    """``run_active(emb, rows, out)`` of bench/_review_active.py: ``emb`` the embeddings of
    every row, ``rows`` the DataFrame of load_rows (crowd labels, ``test`` mask), ``out`` a dict
    it fills (or it returns one)."""
    try:
        from bench._review_active import run_active
    except ModuleNotFoundError as e:
        if e.name not in ("bench._review_active", "_review_active"):
            raise
        print("note: bench/_review_active.py is not there yet; skipping --part active",
              flush=True)
        return None
    out: dict[str, Any] = {}
    returned = run_active(emb, df, out)
    return returned if isinstance(returned, dict) else out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["aggregation", "auto", "active", "all"], default="all")
    ap.add_argument("--seeds", type=int, default=3, help="simulated moderator teams (aggregation)")
    ap.add_argument("--repeats", type=int, default=50, help="random halvings (auto)")
    args = ap.parse_args()

    df = load_rows()
    emb, emb_info = embed(df["tweet"].tolist())
    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    parts = ["aggregation", "auto", "active"] if args.part == "all" else [args.part]
    for part in parts:
        t0 = time.perf_counter()
        if part == "aggregation":
            res: dict[str, Any] | None = part_aggregation(df, emb, list(range(args.seeds)))
        elif part == "auto":
            res = part_auto(df, emb, args.repeats)
        else:
            res = part_active(df, emb)
        if res is None:
            continue
        res["seconds"] = round(time.perf_counter() - t0, 1)
        res["embeddings"] = emb_info
        results[part] = res
        results["machine"] = machine()
        write_results(str(RESULTS), results)
        print(f"{part}: written to {RESULTS.relative_to(ROOT)}", flush=True)


if __name__ == "__main__":
    main()
