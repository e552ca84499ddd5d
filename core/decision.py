"""The decision step: scores + keyword rules + a tenant policy -> block, review or allow, and why.

``resolve_policy`` binds a :class:`~core.policy.PolicySet` to a model: each category gets the
column of the head that scores it and concrete thresholds (fixed, or derived from the model's
held-out precision/recall curve for a ``target_precision``). ``decide`` is then pure arithmetic.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.errors import PolicyError
from core.policy import Action, CategoryPolicy, PolicySet, TenantPolicy

__all__ = [
    "ResolvedCategory",
    "ResolvedTenant",
    "KeywordMatcher",
    "normalize_text",
    "resolve_policy",
    "head_key_for",
    "decide",
    "threshold_for_precision",
    "threshold_for_recall",
]


def normalize_text(text: str) -> str:
    """NFKC + casefold + collapsed whitespace: what keyword rules and the allow list see."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _phrase_pattern(phrases: Sequence[str]) -> re.Pattern[str] | None:
    cleaned = sorted({normalize_text(p) for p in phrases if p.strip()}, key=len, reverse=True)
    if not cleaned:
        return None
    body = "|".join(re.escape(p) for p in cleaned)
    return re.compile(rf"(?<!\w)(?:{body})(?!\w)")


@dataclass(frozen=True)
class _Rule:
    name: str
    action: Action
    category: str | None
    pattern: re.Pattern[str]


class KeywordMatcher:
    """Matches a tenant's keyword rules, allow list and de-prioritised phrases as whole words."""

    def __init__(self, policy: TenantPolicy) -> None:
        self.rules = []
        for i, rule in enumerate(policy.keywords):
            pattern = _phrase_pattern(rule.phrases)
            if pattern is not None:
                name = rule.name or f"keywords[{i}]"
                self.rules.append(_Rule(name, rule.action, rule.category, pattern))
        self.allow_exact = {normalize_text(p) for p in policy.allow_list}
        self.allow_pattern = _phrase_pattern(policy.allow_list)
        self.deprioritized = _phrase_pattern(policy.deprioritized_phrases)

    def match(self, text: str) -> tuple[bool, list[dict[str, Any]], list[str]]:
        """(exactly allow-listed, keyword hits, de-prioritised phrases found)."""
        norm = normalize_text(text)
        if norm in self.allow_exact:
            return True, [], []
        masked = self.allow_pattern.sub(" ", norm) if self.allow_pattern else norm
        hits = []
        for rule in self.rules:
            found = rule.pattern.findall(masked)
            if found:
                hits.append({
                    "kind": "keyword", "rule": rule.name, "phrases": sorted(set(found)),
                    "category": rule.category, "action": rule.action.value,
                })
        depri = sorted(set(self.deprioritized.findall(masked))) if self.deprioritized else []
        return False, hits, depri


@dataclass(frozen=True)
class ResolvedCategory:
    name: str
    head_key: str
    column: int
    block_threshold: float
    review_threshold: float | None
    action: Action
    severity: float
    source: str  # how the thresholds were set, shown in reasons


@dataclass
class ResolvedTenant:
    name: str
    version: str
    categories: list[ResolvedCategory]
    matcher: KeywordMatcher
    store_raw_text: bool
    columns: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.columns = np.array([c.column for c in self.categories], dtype=np.int64)

    def category(self, name: str) -> ResolvedCategory | None:
        return next((c for c in self.categories if c.name == name), None)


def _curve(meta: dict[str, Any], head_key: str) -> dict[str, list[float]] | None:
    return meta.get("curves", {}).get(head_key)


def threshold_for_precision(
    curve: dict[str, list[float]], target: float, min_support: int = 5
) -> float | None:
    """Lowest threshold whose held-out precision is at least ``target``, counting only points
    with at least ``min_support`` predicted positives (fewer are too noisy to trust). A point
    estimate: confidence bounds come with threshold calibration from reviewed items."""
    support = curve.get("n_pred") or [min_support] * len(curve["threshold"])
    for t, p, n in zip(curve["threshold"], curve["precision"], support, strict=True):
        if n >= min_support and p >= target:
            return float(t)
    return None


def threshold_for_recall(curve: dict[str, list[float]], target: float) -> float | None:
    """Highest threshold whose held-out recall is at least ``target``."""
    best = None
    for t, r in zip(curve["threshold"], curve["recall"], strict=True):
        if r >= target:
            best = float(t)
    return best


def head_key_for(tenant: str, category: str, cpol: CategoryPolicy,
                 head_keys: Sequence[str]) -> str:
    """The head that scores a tenant's category: the policy's ``head`` if set, else the shared
    head of that name, else the tenant's own head (``<tenant>/<category>``: retraining trains
    one from the tenant's labels of a category no shared head covers)."""
    if cpol.head:
        return cpol.head
    owned = f"{tenant}/{category}"
    return owned if category not in head_keys and owned in head_keys else category


def resolve_policy(
    policy: PolicySet, head_keys: Sequence[str], model_meta: dict[str, Any]
) -> dict[str, ResolvedTenant]:
    """Bind every tenant's categories to the model's heads and concrete thresholds.

    Raises:
        PolicyError: a category has no head in this model, or a target precision the model's
            held-out curve never reaches.
    """
    index = {k: i for i, k in enumerate(head_keys)}
    version = model_meta.get("version", "?")
    out: dict[str, ResolvedTenant] = {}
    problems: list[str] = []
    for tname, tpol in policy.tenants.items():
        cats: list[ResolvedCategory] = []
        for cname, cpol in tpol.categories.items():
            key = head_key_for(tname, cname, cpol, head_keys)
            if "/" in key and not key.startswith(f"{tname}/"):
                problems.append(
                    f"tenants.{tname}.categories.{cname}.head: {key!r} belongs to another tenant"
                )
                continue
            if key not in index:
                known = ", ".join(k for k in head_keys if "/" not in k or k.startswith(tname + "/"))
                problems.append(
                    f"tenants.{tname}.categories.{cname}: model version {version} has no head "
                    f"{key!r}; known heads: {known}"
                )
                continue
            if cpol.target_precision is not None:
                curve = _curve(model_meta, key)
                block = threshold_for_precision(curve, cpol.target_precision) if curve else None
                if block is None:
                    problems.append(
                        f"tenants.{tname}.categories.{cname}.target_precision: the model's "
                        f"held-out precision for {key!r} never reaches {cpol.target_precision}; "
                        "lower it or set block_threshold"
                    )
                    continue
                review = cpol.review_threshold
                if review is None and curve:
                    review = threshold_for_recall(curve, cpol.review_recall)
                review = min(review, block) if review is not None else None
                source = (
                    f"target precision {cpol.target_precision} on model v{version} held-out data"
                )
            else:
                assert cpol.block_threshold is not None
                block, review, source = cpol.block_threshold, cpol.review_threshold, "policy"
            cats.append(ResolvedCategory(
                name=cname, head_key=key, column=index[key], block_threshold=round(block, 6),
                review_threshold=None if review is None else round(review, 6),
                action=cpol.action, severity=cpol.severity, source=source,
            ))
        out[tname] = ResolvedTenant(
            name=tname, version=policy.tenant_version(tname), categories=cats,
            matcher=KeywordMatcher(tpol), store_raw_text=tpol.store_raw_text,
        )
    if problems:
        raise PolicyError("policy does not fit the model:\n  " + "\n  ".join(problems))
    return out


def decide(
    tenant: ResolvedTenant,
    text: str,
    scores: np.ndarray,
    only: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Decision for one item from its head probabilities (all heads, model order).

    Returns a dict with ``decision``, ``scores`` (the tenant's categories only), ``reasons``
    (what fired, most severe first), ``keyword_hits`` and ``deprioritized``.
    """
    allowed, hits, depri = tenant.matcher.match(text)
    cats = tenant.categories if only is None else [c for c in tenant.categories if c.name in only]
    out_scores = {c.name: round(float(scores[c.column]), 6) for c in cats}
    reasons: list[dict[str, Any]] = []
    if allowed:
        reasons.append({"kind": "allow_list", "action": "allow"})
        return {"decision": "allow", "scores": out_scores, "reasons": reasons,
                "keyword_hits": [], "deprioritized": []}
    reasons.extend(hits)
    for c in cats:
        s = out_scores[c.name]
        if s >= c.block_threshold:
            reasons.append({"kind": "model", "category": c.name, "score": s,
                            "threshold": c.block_threshold, "band": "block",
                            "action": c.action.value, "threshold_source": c.source})
        elif c.review_threshold is not None and s >= c.review_threshold:
            reasons.append({"kind": "model", "category": c.name, "score": s,
                            "threshold": c.review_threshold, "band": "review",
                            "action": Action.review.value, "threshold_source": c.source})
    reasons.sort(key=lambda r: (-Action(r["action"]).severity, -r.get("score", 2.0)))
    decision = reasons[0]["action"] if reasons else Action.allow.value
    return {"decision": decision, "scores": out_scores, "reasons": reasons,
            "keyword_hits": hits, "deprioritized": depri}
