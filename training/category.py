"""New categories in minutes: a tenant-owned head from a description and a few positives.

``add_category`` embeds the examples once (``core.embcache``), takes negatives from the
tenant's own logged traffic (the event log keeps each decision's embedding; only those of
model versions on the champion's encoder, and none close to a positive), fits one logistic
head on them (scikit-learn's logistic regression: well under a second on a few thousand rows,
so no Ray Train cluster is started for it), and registers a new version that is
``@champion`` plus that one column ``<tenant>/<name>`` (every other head byte for byte the
champion's). The tenant's policy
gets the category review-only (a review threshold from out-of-fold scores, the head by name,
the target precision as its gate's ``min_precision``), the version goes through the gate
(``registry.lifecycle``; a review-only category new in a version is admitted without held-out
evidence, see ``registry.checks.evidence_check``), and the examples are stored as labels.

From then on moderators' labels decide (``training.category_review``): the reviewed precision
against the target, threshold calibration's block threshold once its lower bound meets the
target, and active learning choosing the tenant's logged items the head is least sure of. The
policy file is edited line by line (``training._category_policy``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from bastion.core.embcache import EmbeddingCache
from bastion.core.errors import ModelError
from bastion.core.events import DecisionEvent, EventLog
from bastion.core.labelled import LabelledSet
from bastion.core.labels import LabelStore
from bastion.core.model import HeadSpec, LinearHeads, ModerationModel
from bastion.core.policy import SLUG, PolicySet
from bastion.core.settings import Settings
from bastion.core.textkey import text_key
from bastion.registry.lifecycle import GateRefused, Lifecycle
from bastion.registry.store import CHAMPION, ModelRegistry
from bastion.training._category_policy import (
    CategoryError,
    parse_text,
    policy_with_category,
    read_policy,
    write_policy,
)
from bastion.training.datasets import SOURCES, available_sources, load_starter_data

__all__ = [
    "ANNOTATOR", "CategoryError", "CategoryResult", "Negatives", "MIN_POSITIVES",
    "add_category", "fingerprints", "fit_category_head", "fit_head", "near_positives",
    "pick_review_threshold", "read_examples", "traffic_negatives", "with_head",
]

Say = Callable[[str], None]

MIN_POSITIVES = 10  # the "as few as 10": fewer and the out-of-fold threshold is noise
MAX_TRAFFIC = 3000  # traffic negatives sampled: the fit stays around a second on 2 cores
MIN_TRAFFIC = 200  # fewer logged items than this and the fallback sources are added
MIN_NEGATIVES = 50  # below this nothing is trained: the head would learn the positives' topic
# Traffic items this close (cosine) to a positive may be unlabelled positives: left out of
# the negatives. MiniLM puts paraphrases at 0.8 and above; unrelated chat at 0.0-0.3.
NEAR_POSITIVE = 0.8
MAX_REVIEW_SHARE = 0.02  # the review band may take at most this share of the tenant's traffic
REVIEW_RECALL = 0.9  # ... and reaches down to where out-of-fold recall of the examples is this
FOLDS = 5
# L2-regularised logistic regression (scikit-learn's lbfgs) with balanced class weights: the
# positives weigh as much as all negatives together (the stacked heads' sqrt(neg/pos) would
# leave ten positives almost silent against three thousand negatives). The same model as a
# column of the stacked heads, fitted in about 0.3 s on 2 cores (3,000 rows) where the torch
# trainer (``training.heads.fit_heads``, made for many heads at once) took 3 s per fit.
# C = 1 is scikit-learn's default; bench/category.py measures what it gives.
C = 1.0
ANNOTATOR = "category-add"


# -- the examples --------------------------------------------------------------------------

def read_examples(path: Path) -> list[str]:
    """The positive examples of ``path``: one per line (``.txt`` or any other suffix), JSON
    Lines with a ``text`` field (``.jsonl``), or CSV with a ``text`` column (``.csv``).
    Blank lines are skipped and repeated texts kept once, in file order.

    Raises:
        CategoryError: the file cannot be read, or a line or the header is malformed.
    """
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CategoryError(f"{path}: no such file; give the examples file, one example a "
                            "line (or .jsonl with a 'text' field, or .csv with a text column)"
                            ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise CategoryError(f"{path}: cannot read it as UTF-8 text ({err})") from None
    texts: list[str] = []
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise CategoryError(f"{path}: line {n} is not JSON ({err.msg})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                raise CategoryError(f"{path}: line {n} has no string 'text' field; write one "
                                    'object a line, e.g. {"text": "..."}')
            texts.append(rec["text"])
    elif suffix == ".csv":
        reader = csv.DictReader(io.StringIO(raw))
        if not reader.fieldnames or "text" not in reader.fieldnames:
            raise CategoryError(f"{path}: no 'text' column in the header "
                                f"({reader.fieldnames or 'empty file'}); name the examples' "
                                "column 'text'")
        texts = [row["text"] or "" for row in reader]
    else:
        texts = raw.splitlines()
    out = list(dict.fromkeys(t.strip() for t in texts if t and t.strip()))
    return out


# -- negatives -----------------------------------------------------------------------------

@dataclass
class Negatives:
    """The negatives a head is trained on and where each came from (stated in the output and
    on the model version: nothing is invented)."""

    emb: np.ndarray
    sources: dict[str, int] = field(default_factory=dict)  # where from -> how many
    notes: list[str] = field(default_factory=list)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def near_positives(emb: np.ndarray, pos_emb: np.ndarray, limit: float) -> np.ndarray:
    """Which rows of ``emb`` lie within cosine similarity ``limit`` of some positive."""
    if not len(emb):
        return np.zeros(0, bool)
    return np.asarray((_unit(emb) @ _unit(pos_emb).T).max(axis=1) >= limit)


def traffic_negatives(events: Iterable[DecisionEvent], fingerprint_of: Callable[[str], str | None],
                      fingerprint: str, pos_emb: np.ndarray, *, limit: int = MAX_TRAFFIC,
                      near: float = NEAR_POSITIVE, seed: int = 0
                      ) -> tuple[np.ndarray, list[DecisionEvent], dict[str, int]]:
    """The tenant's logged items usable as negatives: text (or transcript) embeddings of
    model versions on the encoder ``fingerprint`` (``fingerprint_of(version)``; other
    encoders' vectors live in another space), none within ``near`` of a positive, at most
    ``limit`` of them (a seeded sample). Returns their embeddings, the events, and counts of
    what was seen and left out."""
    seen = other = near_n = 0
    rows: list[DecisionEvent] = []
    for ev in events:
        if ev.embedding is None or ev.modality == "image":
            continue
        seen += 1
        if fingerprint_of(ev.model_version) != fingerprint:
            other += 1
            continue
        rows.append(ev)
    emb = (np.stack([r.embedding for r in rows if r.embedding is not None]).astype(np.float32)
           if rows else np.zeros((0, pos_emb.shape[1]), np.float32))
    close = near_positives(emb, pos_emb, near)
    near_n = int(close.sum())
    keep = np.flatnonzero(~close)
    if len(keep) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(keep, limit, replace=False))
    counts = {"logged": seen, "other_encoder": other, "near_positive": near_n,
              "used": len(keep)}
    return emb[keep], [rows[i] for i in keep], counts


def _benign_labelled(settings: Settings, tenant: str, exclude: set[str]) -> list[str]:
    """Texts of the tenant's labelled items that no label calls positive for any category."""
    store = LabelStore(settings.database_url)
    try:
        rows = store.aggregated(tenants=[tenant])
    finally:
        store.close()
    by_item: dict[str, tuple[str, bool]] = {}
    for r in rows:
        text, benign = by_item.get(r.item_id, (r.text, True))
        by_item[r.item_id] = (text, benign and r.soft < 0.5)
    return [t for t, benign in by_item.values() if benign and t and t not in exclude]


def _benign_seed(limit: int, exclude: set[str], seed: int = 0) -> list[str]:
    """Benign texts of the packaged seed data (public labelled sets every install has)."""
    names = [n for n in available_sources() if SOURCES[n].packaged]
    data: LabelledSet = load_starter_data(sources=names, limit_per_source=limit)
    benign = [t for t, y, m in zip(data.texts, data.targets, data.mask, strict=True)
              if m.any() and (y[m] < 0.5).all() and t not in exclude]
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(benign))[:limit]
    return [benign[i] for i in sorted(idx)]


# -- the head ------------------------------------------------------------------------------

def fit_head(pos: np.ndarray, neg: np.ndarray, key: str, c: float = C) -> LinearHeads:
    """One logistic head ``key``: ``pos`` against ``neg`` embeddings, classes balanced."""
    x = np.vstack([pos, neg]).astype(np.float64)
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=1000).fit(x, y)
    return LinearHeads([HeadSpec.parse(key)], clf.coef_.T.astype(np.float32),
                       clf.intercept_.astype(np.float32))


def fit_category_head(pos: np.ndarray, neg: np.ndarray, key: str, *, c: float = C,
                      folds: int = FOLDS, seed: int = 0
                      ) -> tuple[LinearHeads, np.ndarray, np.ndarray]:
    """One logistic head ``key`` on positives against negatives, and out-of-fold scores of
    both (each item scored by a head fitted without it: what the threshold is chosen on,
    since the final head has seen every positive)."""
    if len(pos) < 2 or len(neg) < 2:
        raise CategoryError(f"a head needs at least 2 positives and 2 negatives, got "
                            f"{len(pos)} and {len(neg)}")
    k = max(2, min(folds, len(pos)))
    rng = np.random.default_rng(seed)
    pos_fold = rng.permutation(len(pos)) % k
    neg_fold = rng.permutation(len(neg)) % k
    pos_oof = np.zeros(len(pos), np.float32)
    neg_oof = np.zeros(len(neg), np.float32)
    for f in range(k):
        head = fit_head(pos[pos_fold != f], neg[neg_fold != f], key, c)
        pos_oof[pos_fold == f] = head.score(pos[pos_fold == f])[:, 0]
        neg_oof[neg_fold == f] = head.score(neg[neg_fold == f])[:, 0]
    return fit_head(pos, neg, key, c), pos_oof, neg_oof


def pick_review_threshold(pos_scores: np.ndarray, neg_scores: np.ndarray, *,
                          recall: float = REVIEW_RECALL, max_share: float = MAX_REVIEW_SHARE
                          ) -> dict[str, float]:
    """Where review starts: the highest score that still catches ``recall`` of the positives,
    unless that would send more than ``max_share`` of the traffic negatives to review, in which
    case the score that sends exactly that share (the review load binds before the recall).
    Returns the threshold and, at it, the positives' recall and the negatives' share (both
    out of fold)."""
    pos = np.sort(np.asarray(pos_scores, np.float64))[::-1]
    neg = np.asarray(neg_scores, np.float64)
    at_recall = float(pos[max(int(np.ceil(recall * len(pos))) - 1, 0)])
    at_share = float(np.quantile(neg, 1.0 - max_share)) if len(neg) else 0.0
    thr = float(np.clip(max(at_recall, at_share), 0.01, 0.99))
    return {"threshold": round(thr, 4), "recall": float((pos >= thr).mean()),
            "traffic_share": float((neg >= thr).mean()) if len(neg) else 0.0,
            "threshold_for_recall": at_recall, "threshold_for_share": at_share}


def with_head(base: ModerationModel, head: LinearHeads) -> LinearHeads:
    """The base's stacked heads with ``head``'s one column appended (the others unchanged)."""
    return LinearHeads([*base.heads.specs, *head.specs],
                       np.hstack([base.heads.weight, head.weight]),
                       np.concatenate([base.heads.bias, head.bias]))


# -- adding one ----------------------------------------------------------------------------

@dataclass
class CategoryResult:
    tenant: str
    name: str
    head: str
    version: str
    previous: str
    n_positives: int
    negatives: dict[str, int]
    traffic: dict[str, int]
    notes: list[str]
    review: dict[str, float]
    oof_auroc: float | None
    target_precision: float
    policy_file: str
    policy_backup: str
    labels_stored: int
    gate_table: str
    timings_s: dict[str, float]


def _check_input(policy: PolicySet, tenant: str, name: str, positives: list[str],
                 policy_path: Path, target: float) -> None:
    if tenant not in policy.tenants:
        raise CategoryError(f"unknown tenant {tenant!r}; {policy_path} has "
                            f"{', '.join(sorted(policy.tenants))}: add the tenant to the "
                            "policy file first")
    if not re.match(SLUG, name):
        raise CategoryError(f"category name {name!r} is not a lower-case slug (letters, digits, "
                            "_ or -, e.g. 'crypto_scam')")
    if name in policy.tenants[tenant].categories:
        raise CategoryError(f"tenant {tenant!r} already has a category {name!r} in "
                            f"{policy_path}; choose another name, or remove it from the "
                            "policy first")
    if not 0 < target <= 1:
        raise CategoryError(f"--target-precision must be in (0, 1], got {target}")
    if len(positives) < MIN_POSITIVES:
        raise CategoryError(f"{len(positives)} distinct positive example(s); a new category "
                            f"needs at least {MIN_POSITIVES}: add more lines to the examples "
                            "file")


def add_category(settings: Settings, policy_path: Path, tenant: str, name: str,
                 description: str, positives: list[str], *, target_precision: float = 0.9,
                 eval_data: LabelledSet | None = None, latency_items: int = 100,
                 actor: str | None = None, seed: int = 0,
                 say: Say = lambda _m: None) -> CategoryResult:
    """Train, register, gate and serve a new review-only category (see the module docstring).

    Args:
        eval_data: the gate's held-out data (default: ``training.retrain.heldout_data``, what
            ``bastion promote`` gates on).
        latency_items: items the gate times one by one (``registry.lifecycle.Lifecycle``).

    Raises:
        CategoryError: bad input, too few negatives, or the gate refused the version (then
            the version stays registered, unpromoted, and the policy file is untouched).
    """
    from bastion.training.retrain import heldout_data  # imports Ray: only when gating

    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    text = read_policy(policy_path)
    policy = parse_text(text, str(policy_path))
    _check_input(policy, tenant, name, positives, policy_path, target_precision)
    key = f"{tenant}/{name}"
    registry = ModelRegistry(settings)
    registry.ensure_reachable()
    champ = registry.by_alias(CHAMPION)
    base = ModerationModel.load(registry.download(champ.version),
                                precision=settings.serving.precision)
    if key in base.head_keys:
        raise CategoryError(f"model version {champ.version} already has a head {key!r}; "
                            "choose another name")
    fingerprint = str(base.encoder.identity["fingerprint"])

    t0 = time.perf_counter()
    cache = EmbeddingCache(settings.database_url, base.encoder)
    try:
        pos_emb, stats = cache.embed(positives)
        timings["embed_examples"] = time.perf_counter() - t0
        say(f"Embedded {len(positives)} example(s) ({stats.hits} cached, {stats.encoded} "
            f"encoded) in {timings['embed_examples']:.1f} s.")
        t0 = time.perf_counter()
        negatives, traffic = _negatives(settings, registry, tenant, fingerprint, pos_emb,
                                        set(positives), cache, seed, say)
    finally:
        cache.close()
    timings["negatives"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    head, pos_oof, neg_oof = fit_category_head(pos_emb, negatives.emb, key, seed=seed)
    timings["fit"] = time.perf_counter() - t0
    review = pick_review_threshold(pos_oof, neg_oof)
    y = np.r_[np.ones(len(pos_oof)), np.zeros(len(neg_oof))]
    oof = float(roc_auc_score(y, np.r_[pos_oof, neg_oof]))
    say(f"Trained head {key!r} on {len(pos_emb)} positives and {len(negatives.emb)} negatives "
        f"in {timings['fit']:.1f} s (out-of-fold AUROC {oof if oof is None else round(oof, 3)}"
        f"); review from {review['threshold']}: out of fold it catches "
        f"{review['recall']:.0%} of the examples and sends {review['traffic_share']:.1%} of "
        "the negatives to review.")

    new_text = policy_with_category(text, tenant, name, review["threshold"], key,
                                    target_precision, description)
    new_policy = parse_text(new_text, f"{policy_path} with category {name!r}")

    t0 = time.perf_counter()
    version = _register(registry, base, head, champ.version, key, description, positives,
                        negatives, traffic, review, oof, target_precision, new_policy, seed)
    timings["register"] = time.perf_counter() - t0
    say(f"Registered version {version} (@champion v{champ.version} + head {key!r}); gating it...")

    t0 = time.perf_counter()
    if eval_data is None:
        eval_data = heldout_data(settings, new_policy)
    lc = Lifecycle(settings, new_policy, eval_data=eval_data, registry=registry,
                   latency_items=latency_items)
    try:
        result = lc.promote(version, actor=actor, reason=f"bastion category add {key}: "
                            f"{description[:200]}")
    except GateRefused as err:
        raise CategoryError(f"{err}\nThe policy file is unchanged; version {version} stays "
                            "registered, not promoted.") from None
    timings["gate"] = time.perf_counter() - t0
    backup = write_policy(policy_path, new_text)
    stored = _store_examples(settings, tenant, name, positives)
    timings["total"] = time.perf_counter() - t_all
    return CategoryResult(
        tenant=tenant, name=name, head=key, version=version, previous=champ.version,
        n_positives=len(positives), negatives=negatives.sources, traffic=traffic,
        notes=negatives.notes, review=review, oof_auroc=oof, target_precision=target_precision,
        policy_file=str(policy_path), policy_backup=str(backup), labels_stored=stored,
        gate_table=result.report.to_table(),
        timings_s={k: round(v, 2) for k, v in timings.items()})


def fingerprints(registry: ModelRegistry) -> Callable[[str], str | None]:
    known: dict[str, str | None] = {}

    def of(version: str) -> str | None:
        if version not in known:
            try:
                known[version] = str(registry.metadata(version)["encoder"]["fingerprint"])
            except (ModelError, KeyError, OSError):
                known[version] = None  # a version no longer in the registry: left out
        return known[version]

    return of


def _negatives(settings: Settings, registry: ModelRegistry, tenant: str, fingerprint: str,
               pos_emb: np.ndarray, exclude: set[str], cache: EmbeddingCache, seed: int,
               say: Say) -> tuple[Negatives, dict[str, int]]:
    log = EventLog(settings.database_url)
    try:
        emb, _, traffic = traffic_negatives(log.read(tenant=tenant), fingerprints(registry),
                                            fingerprint, pos_emb, seed=seed)
    finally:
        log.close()
    neg = Negatives(emb, {"traffic": len(emb)} if len(emb) else {})
    say(f"Negatives from the traffic of {tenant!r}: {traffic['used']} of {traffic['logged']} "
        f"logged item(s) ({traffic['other_encoder']} on another encoder, "
        f"{traffic['near_positive']} within cosine {NEAR_POSITIVE} of an example, left out).")
    if len(emb) >= MIN_TRAFFIC:
        return neg, traffic
    # Too little traffic: say so, and add real labelled benign items, never invented ones.
    neg.notes.append(f"only {len(emb)} usable logged item(s) of {tenant!r} (fewer than "
                     f"{MIN_TRAFFIC}): negatives were added from other labelled data")
    want = MAX_TRAFFIC // 3
    packaged = ", ".join(n for n in available_sources() if SOURCES[n].packaged)
    fallbacks: list[tuple[str, Callable[[], list[str]], str]] = [
        ("labels", lambda: _benign_labelled(settings, tenant, exclude),
         "the tenant's labelled items that no label calls positive"),
        ("seed", lambda: _benign_seed(want, exclude, seed),
         f"benign items of the packaged public seed data ({packaged})"),
    ]
    for what, texts_of, why in fallbacks:
        if len(neg.emb) >= MIN_TRAFFIC:
            break
        texts = texts_of()[:want]
        if not texts:
            continue
        vecs, _ = cache.embed(texts)
        vecs = vecs[~near_positives(vecs, pos_emb, NEAR_POSITIVE)]
        neg.emb = np.vstack([neg.emb, vecs]).astype(np.float32)
        neg.sources[what] = len(vecs)
        neg.notes.append(f"{len(vecs)} negative(s) from {why}")
        say(f"Fallback: {len(vecs)} negative(s) from {why}.")
    if len(neg.emb) < MIN_NEGATIVES:
        raise CategoryError(
            f"only {len(neg.emb)} negative(s) for {tenant!r} (traffic, labelled benign items "
            f"and the packaged seed data together), fewer than {MIN_NEGATIVES}: send the "
            "tenant's traffic through 'bastion up' for a while (or import labelled benign "
            "items with 'bastion labels import') and try again")
    return neg, traffic


def _register(registry: ModelRegistry, base: ModerationModel, head: LinearHeads,
              base_version: str, key: str, description: str, positives: list[str],
              negatives: Negatives, traffic: dict[str, int], review: dict[str, float],
              oof: float | None, target: float, policy: PolicySet, seed: int) -> str:
    heads = with_head(base, head)
    meta: dict[str, Any] = {k: v for k, v in dict(base.metadata).items()
                            if k not in ("version", "cascade", "scoring_check")}
    digest = hashlib.sha256("\n".join([key, description, *positives]).encode()).hexdigest()
    run_name = f"category-{key.replace('/', '-')}-{digest[:10]}"
    provenance = {"head": key, "description": description, "n_positives": len(positives),
                  "negatives": negatives.sources, "traffic": traffic,
                  "notes": negatives.notes, "review": review, "oof_auroc": oof,
                  "target_precision": target, "examples_sha256": digest, "seed": seed,
                  "fit": {"model": "logistic regression (scikit-learn)", "C": C,
                          "class_weight": "balanced"}}
    meta.update(
        kind="category", base_version=base_version, train_run=run_name,
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        categories=[*meta.get("categories", []), key],
        category_descriptions={**meta.get("category_descriptions", {}), key: description},
        category=provenance)
    # the cascade's first stage was fitted for the champion's heads and must score every
    # head: this version serves every item with the full model (the next retrain refits it)
    model = ModerationModel(encoder=base.encoder, heads=heads, metadata=meta)  # type: ignore[arg-type]
    texts = list(base.metadata.get("scoring_check", {}).get("texts", []))[:16]
    if texts:
        model.metadata["scoring_check"] = {
            "texts": texts, "scores": np.round(model.score(texts)[1], 6).tolist()}
    with tempfile.TemporaryDirectory(prefix="bastion-category-") as tmp:
        model_dir = model.save(Path(tmp) / "bastion",
                               bundle_encoder=bool(base.metadata.get("encoder", {}).get("bundled")))
        info = registry.log_version(
            model_dir, run_name=run_name,
            params={"base_version": base_version, "head": key, "n_positives": len(positives),
                    **{f"negatives.{k}": v for k, v in negatives.sources.items()},
                    "review_threshold": review["threshold"], "target_precision": target},
            metrics={k: float(v) for k, v in {
                "category.n_positives": len(positives),
                "category.n_negatives": len(negatives.emb),
                "category.oof_auroc": oof, "category.review_recall": review["recall"],
                "category.review_traffic_share": review["traffic_share"]}.items()
                if v is not None},
            tags={"bastion.kind": "category", "bastion.category": key,
                  "bastion.category_description": description[:4000],
                  "bastion.negatives": ", ".join(f"{k}:{v}" for k, v in
                                                 negatives.sources.items()),
                  "bastion.base_version": base_version,
                  "bastion.encoder_fingerprint": str(base.encoder.identity["fingerprint"]),
                  "bastion.train_run": run_name},
            policy=policy.model_dump(mode="json", exclude_none=True))
    if info.run_id:
        registry.client.log_dict(info.run_id, provenance | {"examples": positives},
                                 "category/provenance.json")
    return info.version


def _store_examples(settings: Settings, tenant: str, name: str, positives: list[str]) -> int:
    """The examples as imported labels of the category: later retraining and calibration see
    them (an example stored before keeps its id: adding it again changes nothing)."""
    store = LabelStore(settings.database_url, text_key(settings))
    try:
        for text in positives:
            item = f"category-{name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
            store.add_item(tenant=tenant, item_id=item, text=text, source="import")
            store.add_labels(tenant, item, ANNOTATOR, {name: 1.0})
    finally:
        store.close()
    return len(positives)


