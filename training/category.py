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

From then on moderators' labels decide: ``category_status`` measures the reviewed precision and
asks threshold calibration (``review.calibration``) for a block threshold, which is proposed
only once the precision's lower bound meets the target. ``queue_for_labelling`` has active
learning (``review.selection``) choose the tenant's logged items the head is least sure of.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from bastion.core.embcache import EmbeddingCache
from bastion.core.errors import BastionError, ModelError
from bastion.core.events import DecisionEvent, EventLog
from bastion.core.labelled import LabelledSet
from bastion.core.labels import LabelStore
from bastion.core.model import HeadSpec, LinearHeads, ModerationModel
from bastion.core.policy import SLUG, PolicySet, parse_policy
from bastion.core.settings import Settings
from bastion.core.textkey import text_key
from bastion.registry.lifecycle import GateRefused, Lifecycle
from bastion.registry.store import CHAMPION, ModelRegistry
from bastion.review.calibration import Proposal, propose
from bastion.review.calibration import apply as apply_proposals
from bastion.review.queue import ReviewQueue
from bastion.review.records import ReviewItem
from bastion.review.selection import Pick, select
from bastion.review.service import ReviewService
from bastion.training.datasets import SOURCES, available_sources, load_starter_data

__all__ = [
    "CategoryError", "CategoryResult", "CategoryStatus", "Negatives", "MIN_POSITIVES",
    "add_category", "category_status", "fit_category_head", "pick_review_threshold",
    "fit_head", "near_positives", "queue_for_labelling", "rank_for_labelling",
    "read_examples", "status_of", "policy_with_category", "policy_with_block_threshold",
    "traffic_negatives", "apply_block_threshold", "with_head",
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


class CategoryError(BastionError):
    """A category cannot be added (bad input, or the gate refused); nothing was changed."""


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


# -- the policy file -----------------------------------------------------------------------

def _read_policy(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CategoryError(f"{path}: no such policy file; run 'bastion up' once to write "
                            "the default one, or pass --policy FILE") from None


def _categories(text: str, tenant: str) -> dict[str, tuple[int, int]]:
    """Where each of the tenant's category keys is in the file, ``name -> (line, column)``
    (0-based), from PyYAML's node tree: the file is edited line by line, never dumped back (a
    dump would reflow the hand-formatted lists and aligned columns of a policy a person
    keeps, and drop its comments)."""
    def child(node: Any, key: str, where: str) -> Any:
        if not isinstance(node, yaml.MappingNode):
            raise CategoryError(f"{where} is not a mapping")
        for k, v in node.value:
            if k.value == key:
                return v
        raise CategoryError(f"{where} has no key {key!r}")

    cats = child(child(child(yaml.compose(text), "tenants", "the policy"), tenant, "tenants"),
                 "categories", f"tenants.{tenant}")
    if not isinstance(cats, yaml.MappingNode) or cats.flow_style:
        raise CategoryError(f"tenants.{tenant}.categories is not written one category a line "
                            "(block style); write it so to let 'bastion category' edit it")
    return {k.value: (k.start_mark.line, k.start_mark.column) for k, _ in cats.value}


def _entry_lines(lines: list[str], line: int, col: int) -> tuple[int, int]:
    """Lines ``[line, end)`` of the mapping entry whose key is at ``(line, col)``: it goes on
    while lines are blank or indented past the key (YAML's rule for what belongs to it)."""
    end = line + 1
    while end < len(lines) and (not lines[end].strip()
                                or len(lines[end]) - len(lines[end].lstrip()) > col):
        end += 1
    while end > line + 1 and not lines[end - 1].strip():
        end -= 1
    return line, end


def _flow_entry(name: str, value: dict[str, Any], col: int) -> str:
    body = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000)
    return f"{' ' * col}{name}: {body.strip()}\n"


def policy_with_category(text: str, tenant: str, name: str, review: float, head: str,
                         target: float, description: str) -> str:
    """The policy file's text with ``name`` added after the tenant's last category, review-only
    (``review_threshold``, the ``head``, the target as its gate's ``min_precision``), under a
    comment saying where it came from; every other line is left as it was."""
    cats = _categories(text, tenant)
    line, col = list(cats.values())[-1]
    lines = text.splitlines(keepends=True)
    _, end = _entry_lines(lines, line, col)
    if not lines[end - 1].endswith("\n"):
        lines[end - 1] += "\n"
    note = (f"added by 'bastion category add' ({time.strftime('%Y-%m-%d')}): "
            f"{' '.join(description.split())}; review-only until 'bastion category status "
            f"{tenant} {name}' proposes a block threshold")
    comment = [f"{' ' * col}# {part}\n" for part in textwrap.wrap(note, 96 - col)]
    entry = _flow_entry(name, {"review_threshold": review, "head": head, "severity": 1,
                               "gate": {"min_precision": target}}, col)
    return "".join(lines[:end] + comment + [entry] + lines[end:])


def policy_with_block_threshold(text: str, proposal: Proposal) -> str:
    """The policy file's text with calibration's ``proposal`` applied
    (``review.calibration.apply``) to its one category, rewritten as one line; every other
    line is left as it was.

    Raises:
        CategoryError: the proposal has no block threshold.
    """
    if proposal.proposed_block is None:
        raise CategoryError(f"no block threshold to apply for {proposal.tenant}/"
                            f"{proposal.category}: {proposal.reason}")
    plain = apply_proposals(yaml.safe_load(text), [proposal])
    value = plain["tenants"][proposal.tenant]["categories"][proposal.category]
    first = ("block_threshold", "review_threshold")  # the thresholds lead, as people write it
    value = {k: value[k] for k in first if k in value} | {
        k: v for k, v in value.items() if k not in first}
    line, col = _categories(text, proposal.tenant)[proposal.category]
    lines = text.splitlines(keepends=True)
    _, end = _entry_lines(lines, line, col)
    return "".join(lines[:line] + [_flow_entry(proposal.category, value, col)] + lines[end:])


def _parse(text: str, source: str) -> PolicySet:
    return parse_policy(yaml.safe_load(text), source)


def _write(path: Path, text: str) -> Path:
    """Replace the policy file atomically, keeping the old one beside it; returns the backup."""
    backup = path.with_name(f"{path.name}.bak-{time.strftime('%Y%m%dT%H%M%S')}")
    backup.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return backup


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
    text = _read_policy(policy_path)
    policy = _parse(text, str(policy_path))
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
    new_policy = _parse(new_text, f"{policy_path} with category {name!r}")

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
    backup = _write(policy_path, new_text)
    stored = _store_examples(settings, tenant, name, positives)
    timings["total"] = time.perf_counter() - t_all
    return CategoryResult(
        tenant=tenant, name=name, head=key, version=version, previous=champ.version,
        n_positives=len(positives), negatives=negatives.sources, traffic=traffic,
        notes=negatives.notes, review=review, oof_auroc=oof, target_precision=target_precision,
        policy_file=str(policy_path), policy_backup=str(backup), labels_stored=stored,
        gate_table=result.report.to_table(),
        timings_s={k: round(v, 2) for k, v in timings.items()})


def _fingerprints(registry: ModelRegistry) -> Callable[[str], str | None]:
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
        emb, _, traffic = traffic_negatives(log.read(tenant=tenant), _fingerprints(registry),
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


# -- after it is served: reviewed precision, calibration, active learning ----------------

@dataclass
class CategoryStatus:
    tenant: str
    name: str
    head: str
    blocks: bool  # the policy gives it a block threshold already
    review_threshold: float | None
    block_threshold: float | None
    target_precision: float
    n_reviewed: int
    n_positive: int
    n_in_band: int  # reviewed items at or above the review threshold
    precision_in_band: float | None  # their share of positives
    n_example_labels: int
    proposal: Proposal


def _category(policy: PolicySet, tenant: str, name: str) -> Any:
    if tenant not in policy.tenants:
        raise CategoryError(f"unknown tenant {tenant!r}; the policy has "
                            f"{', '.join(sorted(policy.tenants))}")
    cats = policy.tenants[tenant].categories
    if name not in cats:
        raise CategoryError(f"tenant {tenant!r} has no category {name!r}; its categories: "
                            f"{', '.join(cats)} (add one with 'bastion category add')")
    return cats[name]


def category_status(settings: Settings, policy: PolicySet, tenant: str, name: str, *,
                    confidence: float = 0.95, min_items: int = 30) -> CategoryStatus:
    """What moderators' reviewed labels say about a category: its precision in the review
    band against the target, and calibration's block threshold proposal (one with
    ``proposed_block`` only once the precision's lower bound at ``confidence`` meets the
    target on at least ``min_items`` reviewed items)."""
    _category(policy, tenant, name)  # unknown tenant or category: say so before reading
    store = LabelStore(settings.database_url)
    try:
        reviewed = store.reviewed()
        examples = sum(1 for r in store.aggregated(tenants=[tenant]) if r.category == name
                       and ANNOTATOR in r.annotators)
    finally:
        store.close()
    scores, labels = reviewed.get((tenant, name), (np.zeros(0), np.zeros(0)))
    return status_of(policy, tenant, name, scores, labels, examples, confidence=confidence,
                     min_items=min_items)


def status_of(policy: PolicySet, tenant: str, name: str, scores: np.ndarray,
              labels: np.ndarray, n_example_labels: int = 0, *, confidence: float = 0.95,
              min_items: int = 30) -> CategoryStatus:
    """:func:`category_status` from the reviewed items' scores and aggregated labels."""
    cpol = _category(policy, tenant, name)
    pair = (tenant, name)
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, np.float64)
    (proposal,) = [p for p in propose(policy, {pair: (scores, labels)} if len(scores) else {},
                                      confidence=confidence, min_items=min_items)
                   if (p.tenant, p.category) == pair]
    thr = cpol.review_threshold if cpol.review_threshold is not None else cpol.block_threshold
    band = scores >= thr if thr is not None else np.ones(len(scores), bool)
    pos = labels >= 0.5
    return CategoryStatus(
        tenant=tenant, name=name, head=cpol.head or f"{tenant}/{name}",
        blocks=cpol.block_threshold is not None or cpol.target_precision is not None,
        review_threshold=cpol.review_threshold, block_threshold=cpol.block_threshold,
        target_precision=proposal.target_precision, n_reviewed=len(scores),
        n_positive=int(pos.sum()), n_in_band=int(band.sum()),
        precision_in_band=float(pos[band].mean()) if band.any() else None,
        n_example_labels=n_example_labels, proposal=proposal)


def apply_block_threshold(policy_path: Path, proposal: Proposal) -> Path:
    """Write a calibrated block threshold into the policy file
    (:func:`policy_with_block_threshold`); returns the backup of the old file.

    Raises:
        CategoryError: the proposal has no block threshold.
    """
    text = policy_with_block_threshold(_read_policy(policy_path), proposal)
    _parse(text, f"{policy_path} with a calibrated block threshold")
    return _write(policy_path, text)


def rank_for_labelling(emb: np.ndarray, scores: np.ndarray, name: str, threshold: float,
                       budget: int, *, labelled: np.ndarray | None = None, n_labels: int = 0,
                       seed: int = 0) -> list[Pick]:
    """``review.selection.select`` for one category's head: ``scores`` (n,) of the items
    ``emb`` (n, d), most unsure around ``threshold`` first, spread out and away from the
    ``labelled`` embeddings (the examples and what moderators labelled for it)."""
    thr = float(np.clip(threshold, 1e-3, 1 - 1e-3))
    return select(emb, np.asarray(scores, np.float64)[:, None], [name], budget,
                  thresholds={name: thr}, label_counts={name: n_labels}, labelled=labelled,
                  seed=seed)


def queue_for_labelling(settings: Settings, policy: PolicySet, tenant: str, name: str,
                        budget: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """Active learning for one category: the tenant's logged items (with text, on the
    champion's encoder, not yet queued) that ``review.selection.select`` finds most worth a
    label for it (scored by the champion's head, unsure around the category's threshold, far
    from what is labelled already and from each other), queued as ``sample`` tasks. Items
    logged before the category existed are scored from their logged embedding."""
    cpol = _category(policy, tenant, name)
    if not policy.tenants[tenant].store_raw_text:
        raise CategoryError(f"tenant {tenant!r} keeps no raw text in the event log "
                            "(store_raw_text: false), so logged items cannot be shown to a "
                            "moderator; its review-band items reach the queue by themselves. "
                            "Set store_raw_text: true to sample for labelling")
    registry = ModelRegistry(settings)
    champ = registry.by_alias(CHAMPION)
    model = ModerationModel.load(registry.download(champ.version),
                                 precision=settings.serving.precision)
    key = cpol.head or f"{tenant}/{name}"
    if key not in model.heads.index:
        raise CategoryError(f"@champion v{champ.version} has no head {key!r}")
    fingerprint = str(model.encoder.identity["fingerprint"])
    log = EventLog(settings.database_url)
    try:
        events = [e for e in log.read(tenant=tenant) if e.text]
    finally:
        log.close()
    of = _fingerprints(registry)
    events = [e for e in events if e.embedding is not None and e.modality != "image"
              and of(e.model_version) == fingerprint]
    queue = ReviewQueue(settings.database_url)
    store = LabelStore(settings.database_url)
    try:
        queued = queue.known_items(tenant, [e.item_id for e in events])
        events = [e for e in events if e.item_id not in queued]
        if not events:
            return []
        emb = np.stack([e.embedding for e in events if e.embedding is not None])
        scores = model.heads.score(emb)[:, model.heads.index[key]]
        done = [r.text for r in store.aggregated(tenants=[tenant]) if r.category == name]
        cache = EmbeddingCache(settings.database_url, model.encoder)
        try:
            labelled = cache.embed(done)[0] if done else None
        finally:
            cache.close()
        thr = cpol.review_threshold if cpol.review_threshold is not None else \
            cpol.block_threshold
        picks = rank_for_labelling(emb, scores, name, 0.5 if thr is None else thr, budget,
                                   labelled=labelled, n_labels=len(done), seed=seed)
        items, out = [], []
        for p in picks:
            e = events[p.index]
            items.append(ReviewItem(
                tenant=tenant, item_id=e.item_id, text=e.text, text_sha256=e.text_sha256,
                session_id=e.session_id, user_id=e.user_id, source="sample",
                scores={**e.scores, name: round(float(scores[p.index]), 6)}, keyword_hits=[],
                decision=e.decision, model_version=e.model_version,
                policy_version=e.policy_version, ts=e.ts, language=e.language))
            out.append({"tenant": tenant, "item_id": e.item_id, "value": round(p.score, 4),
                        "why": p.reasons})
        ReviewService(queue, lambda: policy, text_key=text_key(settings)).intake_decisions(
            items)
        return out
    finally:
        queue.close()
        store.close()
