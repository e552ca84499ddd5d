"""The cascade: a fast first stage that allows what is plainly benign, the transformer the rest.

Most traffic is benign. The first stage (``FirstStage``: hashed word 1-2-gram TF-IDF and one
logistic head per category, pure numpy/scipy, thousands of items/s) scores every item; an
item whose every category scores below that category's *sure-benign* threshold is decided
``allow`` by it, and only the others go to the full model (encoder + heads). The first stage
never blocks or sends to review: it can only say "plainly benign".

Each threshold is calibrated on held-out data against the **full model's** decisions, not
the labels: among the items the full model flags for a category (its score at or above the
category's reference flag level, ``FirstStage.flag_levels``), at most ``tolerance`` (default
0.5%) may fall below the threshold. The agreement measured on the test split, per category,
is saved with the stage (``FirstStage.report``) and shown by the gate and ``/readyz``.

What a first-stage item carries: per category a score on the full model's scale (a monotone
quantile map of its first-stage probability, fitted on the calibration items it is sure of,
capped below the flag level) and no embedding. A random ``audit_share`` of every call's
items goes to the full model whatever the first stage says (stage ``audit``): the drift
monitor reads the embeddings of those (and of calls without the cascade) only, an unbiased
sample of the traffic rather than the hard items the first stage passed on
(:func:`drift_sample`).

A tenant's policy can switch it off (``TenantPolicy.cascade``); a tenant whose review level
for a category is below the first stage's flag level gets the full model too
(:func:`cascade_fits`), since the calibration says nothing about scores below that level.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np

from bastion.core.errors import ModelError

__all__ = [
    "AUDIT_SHARE",
    "DEFAULT_TOLERANCE",
    "FIRST_STAGE_FILE",
    "FirstStage",
    "HashedNgrams",
    "Routing",
    "Stage",
    "calibrate",
    "calibrate_thresholds",
    "cascade_fits",
    "cascade_refused",
    "cascade_status",
    "drift_sample",
    "stage_reason",
    "cascade_scores",
    "fit_first_stage",
    "measure_agreement",
    "merge_scores",
]

FIRST_STAGE_FILE = "first_stage.npz"
DEFAULT_TOLERANCE = 0.005  # of the items the full model flags for a category, stage 1 allows <=
AUDIT_SHARE = 0.05  # of every routed call's items: full model anyway, the drift sample
_MAP_POINTS = 51  # quantiles of the score map (first-stage probability -> full-model scale)
_CAP = 0.98  # a first-stage score stays below this fraction of the flag level


class Stage(IntEnum):
    """Which part of the cascade scored an item (``Routing.stage``; events record the name)."""

    full = 0  # the full model, the cascade off for this call (or no first stage)
    first = 1  # decided "allow" by the first stage: no transformer, no embedding
    second = 2  # the first stage was unsure: the full model
    audit = 3  # a random share of every call's items, full model whatever the first stage says


def stage_reason(stage: int) -> dict[str, Any]:
    """What the event log keeps of an item's stage (among its reasons; not in the response)."""
    return {"kind": "cascade", "stage": Stage(stage).name}


def drift_sample(reasons: Sequence[dict[str, Any]]) -> bool:
    """Whether an event's embedding belongs in the drift monitor's sample of the traffic: any
    item of a call without the cascade, and the random audit share of calls with it. Items the
    first stage was unsure of are the hard ones, not a sample of the traffic; items it
    decided have no embedding."""
    stage = next((r.get("stage") for r in reasons if r.get("kind") == "cascade"), None)
    return stage is None or stage in (Stage.full.name, Stage.audit.name)


@dataclass(frozen=True)
class HashedNgrams:
    """Sublinear TF-IDF over hashed word 1..``ngram_max``-grams, L2-normalised rows.

    Hashing (scikit-learn's ``HashingVectorizer``, murmurhash3 with a fixed seed) needs no
    vocabulary, so the configuration plus the IDF vector define it completely."""

    n_features: int = 1 << 18
    ngram_max: int = 2

    def counts(self, texts: Sequence[str]) -> Any:
        from sklearn.feature_extraction.text import HashingVectorizer

        vec = HashingVectorizer(n_features=self.n_features, ngram_range=(1, self.ngram_max),
                                alternate_sign=False, norm=None, dtype=np.float32)
        return vec.transform(list(texts))

    def transform(self, texts: Sequence[str], idf: np.ndarray) -> Any:
        from sklearn.preprocessing import normalize

        x = self.counts(texts).tocsr()
        x.data = 1.0 + np.log(x.data)  # sublinear tf: a repeated word is not 10x the evidence
        x = x.multiply(idf).tocsr()
        return normalize(x, copy=False)


@dataclass
class FirstStage:
    """The first stage of a model version: features, logistic heads, calibrated thresholds.

    ``keys`` are the model's head keys it scores, in the model's column order; ``thresholds``
    the sure-benign level per key (an item is sure when every key scores below its
    threshold); ``flag_levels`` the full-model score from which that key counts as flagged in
    the calibration; ``score_map`` per key the (first-stage, full-model) quantile pairs."""

    features: HashedNgrams
    keys: list[str]
    idf: np.ndarray  # (n_features,)
    weight: np.ndarray  # (n_features, n_keys)
    bias: np.ndarray  # (n_keys,)
    thresholds: np.ndarray  # (n_keys,)
    flag_levels: np.ndarray  # (n_keys,)
    score_map: np.ndarray  # (n_keys, 2, _MAP_POINTS)
    tolerance: float = DEFAULT_TOLERANCE
    audit_share: float = AUDIT_SHARE
    report: dict[str, Any] = field(default_factory=dict)  # held-out agreement, provenance

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """First-stage probabilities (n, n_keys)."""
        if not texts:
            return np.zeros((0, len(self.keys)), np.float32)
        logits = np.asarray(self.features.transform(texts, self.idf) @ self.weight) + self.bias
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)

    def sure(self, probs: np.ndarray) -> np.ndarray:
        """Items the first stage may allow: every key below its sure-benign threshold."""
        return np.all(probs < self.thresholds, axis=1)

    def mapped(self, probs: np.ndarray) -> np.ndarray:
        """First-stage probabilities on the full model's scale, capped below the flag level."""
        out = np.empty_like(probs)
        for j in range(probs.shape[1]):
            xs, ys = self.score_map[j]
            out[:, j] = np.interp(probs[:, j], xs, ys)
        return np.minimum(out, self.flag_levels * _CAP).astype(np.float32)

    def route(self, texts: Sequence[str], rng: np.random.Generator | None = None) -> Routing:
        """Which items the first stage decides, which the full model scores (and the audit)."""
        probs = self.probabilities(texts)
        sure = self.sure(probs)
        rng = rng or np.random.default_rng()
        stage = np.where(sure, Stage.first, Stage.second).astype(np.int8)
        stage[rng.random(len(sure)) < self.audit_share] = Stage.audit
        return Routing(stage=stage, scores=self.mapped(probs))

    # -- the artifact ---------------------------------------------------------------------
    def save(self, directory: Path) -> dict[str, Any]:
        """Write ``first_stage.npz`` into the model directory; returns its metadata entry."""
        np.savez_compressed(
            directory / FIRST_STAGE_FILE, idf=self.idf.astype(np.float32),
            weight=self.weight.astype(np.float16), bias=self.bias.astype(np.float32),
            thresholds=self.thresholds.astype(np.float32),
            flag_levels=self.flag_levels.astype(np.float32),
            score_map=self.score_map.astype(np.float32), keys=np.array(self.keys))
        return self.describe()

    def describe(self) -> dict[str, Any]:
        """What ``metadata.json`` keeps under ``cascade`` (thresholds and agreement)."""
        return {
            "file": FIRST_STAGE_FILE,
            "features": {"kind": "hashed word n-gram tf-idf", "n_features":
                         self.features.n_features, "ngram_max": self.features.ngram_max},
            "keys": list(self.keys),
            "thresholds": {k: round(float(t), 6) for k, t in zip(self.keys, self.thresholds,
                                                                 strict=True)},
            "flag_levels": {k: round(float(t), 6) for k, t in zip(self.keys, self.flag_levels,
                                                                  strict=True)},
            "tolerance": self.tolerance,
            "audit_share": self.audit_share,
            "report": self.report,
        }

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any]) -> FirstStage:
        path = directory / str(meta.get("file", FIRST_STAGE_FILE))
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as err:
            raise ModelError(f"{path}: cannot load the cascade's first stage ({err}); "
                             "rebuild it or remove 'cascade' from metadata.json") from None
        keys = [str(k) for k in arrays["keys"]]
        feats = meta.get("features", {})
        stage = cls(
            features=HashedNgrams(int(feats.get("n_features", 1 << 18)),
                                  int(feats.get("ngram_max", 2))),
            keys=keys, idf=arrays["idf"], weight=arrays["weight"].astype(np.float32),
            bias=arrays["bias"], thresholds=arrays["thresholds"],
            flag_levels=arrays["flag_levels"], score_map=arrays["score_map"],
            tolerance=float(meta.get("tolerance", DEFAULT_TOLERANCE)),
            audit_share=float(meta.get("audit_share", AUDIT_SHARE)),
            report=dict(meta.get("report", {})))
        if stage.weight.shape != (stage.features.n_features, len(keys)):
            raise ModelError(f"{path}: weights {stage.weight.shape} do not match "
                             f"{len(keys)} key(s) of {stage.features.n_features} features")
        return stage


@dataclass(frozen=True)
class Routing:
    """One call's routing: ``stage`` per item (``Stage`` values) and the first stage's scores
    on the full model's scale (used only where ``stage == Stage.first``)."""

    stage: np.ndarray  # (n,) int8
    scores: np.ndarray  # (n, n_keys) float32

    @property
    def to_full(self) -> np.ndarray:
        """Indices of the items the full model must score."""
        return np.flatnonzero(self.stage != Stage.first)


def merge_scores(routing: Routing, full_scores: np.ndarray, columns: np.ndarray,
                 n_heads: int) -> np.ndarray:
    """Scores (n, n_heads): the full model's where it ran (``full_scores``, rows in
    ``routing.to_full`` order), the first stage's mapped scores elsewhere (``columns``: the
    model column of each first-stage key)."""
    n = len(routing.stage)
    out = np.zeros((n, n_heads), np.float32)
    first = routing.stage == Stage.first
    out[np.ix_(first, columns)] = routing.scores[first]
    out[routing.to_full] = full_scores
    return out


# -- fitting and calibration -------------------------------------------------------------
def fit_first_stage(texts: Sequence[str], targets: np.ndarray, weights: np.ndarray,
                    keys: list[str], features: HashedNgrams | None = None,
                    c: float = 4.0) -> FirstStage:
    """Fit the features' IDF and one logistic head per key on labelled texts.

    Args:
        texts: training texts (the starter's train split).
        targets: (n, n_keys) soft targets in [0, 1]; an item counts as positive from 0.5.
        weights: (n, n_keys) loss weights; 0 where nobody labelled the item for the key.
        keys: the head keys, in the model's column order.
        features: the feature configuration (default ``HashedNgrams()``).
        c: inverse L2 strength of the logistic heads.

    The thresholds come later (:func:`calibrate_thresholds`); until then every item is unsure.
    """
    from sklearn.linear_model import LogisticRegression

    features = features or HashedNgrams()
    counts = features.counts(texts).tocsr()
    df = np.bincount(counts.indices, minlength=features.n_features)
    idf = (np.log((1 + len(texts)) / (1 + df)) + 1.0).astype(np.float32)
    x = features.transform(texts, idf)
    weight = np.zeros((features.n_features, len(keys)), np.float32)
    bias = np.zeros(len(keys), np.float32)
    for j in range(len(keys)):
        sel = weights[:, j] > 0
        y = targets[sel, j] >= 0.5
        if y.all() or not y.any():
            raise ModelError(f"first stage: {keys[j]!r} needs both classes in its training data")
        clf = LogisticRegression(C=c, class_weight="balanced", max_iter=2000,
                                 solver="liblinear")
        clf.fit(x[sel], y, sample_weight=weights[sel, j])
        weight[:, j] = clf.coef_[0]
        bias[j] = clf.intercept_[0]
    n = len(keys)
    return FirstStage(features=features, keys=list(keys), idf=idf, weight=weight, bias=bias,
                      thresholds=np.zeros(n, np.float32), flag_levels=np.ones(n, np.float32),
                      score_map=np.zeros((n, 2, _MAP_POINTS), np.float32))


def calibrate_thresholds(probs: np.ndarray, full: np.ndarray, flag_levels: np.ndarray,
                         tolerance: float = DEFAULT_TOLERANCE) -> np.ndarray:
    """Per key, the highest sure-benign threshold under which at most ``tolerance`` of the
    items the full model flags (``full >= flag_levels``) fall.

    With ``k = floor(tolerance * n_flagged)`` misses allowed, the threshold is the
    (k+1)-th smallest first-stage probability among the flagged items: strictly below it
    lie at most k of them. A key the full model never flags here gets threshold 0 (nothing
    is sure): the calibration has nothing to bound the misses with."""
    out = np.zeros(probs.shape[1], np.float32)
    for j in range(probs.shape[1]):
        flagged = np.sort(probs[full[:, j] >= flag_levels[j], j])
        if len(flagged) == 0:
            continue
        k = int(np.floor(tolerance * len(flagged)))
        out[j] = flagged[min(k, len(flagged) - 1)]
    return out


def _score_map(probs: np.ndarray, full: np.ndarray, sure: np.ndarray) -> np.ndarray:
    """Monotone quantile map per key from the first stage's probabilities to the full
    model's scores, over the calibration items the first stage is sure of."""
    qs = np.linspace(0.0, 1.0, _MAP_POINTS)
    out = np.zeros((probs.shape[1], 2, _MAP_POINTS), np.float32)
    for j in range(probs.shape[1]):
        p, f = (probs[sure, j], full[sure, j]) if sure.any() else (probs[:, j], full[:, j])
        out[j, 0] = np.maximum.accumulate(np.quantile(p, qs))
        out[j, 1] = np.maximum.accumulate(np.quantile(f, qs))
    return out


def calibrate(stage: FirstStage, probs: np.ndarray, full: np.ndarray,
              flag_levels: np.ndarray, tolerance: float = DEFAULT_TOLERANCE) -> FirstStage:
    """Set ``stage``'s thresholds, flag levels and score map from calibration items: its
    probabilities ``probs`` and the full model's scores ``full`` (n, n_keys) of the same items."""
    stage.flag_levels = np.asarray(flag_levels, np.float32)
    stage.tolerance = tolerance
    stage.thresholds = calibrate_thresholds(probs, full, stage.flag_levels, tolerance)
    stage.score_map = _score_map(probs, full, stage.sure(probs))
    return stage


def cascade_scores(stage: FirstStage, probs: np.ndarray, full: np.ndarray) -> np.ndarray:
    """What the cascade returns for items whose full-model scores are ``full`` (no audit):
    the full model's scores where the first stage is unsure, its mapped scores elsewhere."""
    sure = stage.sure(probs)
    return np.where(sure[:, None], stage.mapped(probs), full)


def measure_agreement(stage: FirstStage, probs: np.ndarray, full: np.ndarray
                      ) -> dict[str, Any]:
    """On held-out items: the share the first stage decides, and per key how many of the
    items the full model flags it allows (``missed``; the calibration bounds it by
    ``tolerance``)."""
    sure = stage.sure(probs)
    per_key: dict[str, dict[str, Any]] = {}
    for j, key in enumerate(stage.keys):
        flagged = full[:, j] >= stage.flag_levels[j]
        n_flag = int(flagged.sum())
        missed = int((flagged & sure).sum())
        per_key[key] = {"n_flagged": n_flag, "missed": missed,
                        "missed_share": round(missed / n_flag, 5) if n_flag else None,
                        "within_tolerance": (missed <= max(1.0, 2 * stage.tolerance * n_flag))
                        if n_flag else None}
    any_flag = np.any(full >= stage.flag_levels, axis=1)
    return {"n_items": len(sure), "first_stage_share": round(float(sure.mean()), 4)
            if len(sure) else 0.0,
            "decision_agreement": round(float(1.0 - (sure & any_flag).mean()), 5)
            if len(sure) else 1.0,
            "per_key": per_key}


def cascade_fits(meta: dict[str, Any] | None, review_levels: dict[str, float]) -> str | None:
    """Why a tenant cannot use the cascade on this model, or None if it can.

    Args:
        meta: the model's ``cascade`` metadata (None: the version has no first stage).
        review_levels: per head key, the lowest score at which the tenant acts (its review
            threshold, else its block threshold).
    """
    if not meta:
        return "the model version has no first stage"
    flags = meta.get("flag_levels", {})
    # 1e-6: both sides are rounded to 6 decimals in the metadata and the resolved policy
    low = {k: v for k, v in review_levels.items() if k in flags and v < flags[k] - 1e-6}
    missing = sorted(k for k in review_levels if k not in flags)
    if missing:
        return f"the first stage does not score {missing}"
    if low:
        return ("the tenant reviews below the first stage's calibrated flag level ("
                + ", ".join(f"{k} {v} < {flags[k]}" for k, v in sorted(low.items())) + ")")
    return None


def cascade_refused(stages: np.ndarray | None, cascade_off: str | None) -> bool:
    """A call routed through the first stage for a tenant that may not use it (found once
    the policy is resolved on the call's model version): it must be scored again in full."""
    return stages is not None and cascade_off is not None and bool(
        (stages == Stage.first).any())


def cascade_status(meta: dict[str, Any] | None) -> dict[str, Any] | None:
    """The first stage's held-out measurements in brief, for ``/readyz`` (None: no stage)."""
    if not meta:
        return None
    report = meta.get("report", {})
    missed = [v["missed_share"] for v in report.get("per_key", {}).values()
              if v.get("missed_share") is not None]
    deltas = [v["delta"] for v in report.get("auroc", {}).values() if v.get("delta") is not None]
    return {"tolerance": meta.get("tolerance"), "audit_share": meta.get("audit_share"),
            "first_stage_share": report.get("first_stage_share"),
            "decision_agreement": report.get("decision_agreement"),
            "max_missed_share": max(missed) if missed else None,
            "worst_auroc_delta": min(deltas) if deltas else None}
