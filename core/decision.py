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

from bastion.core.cascade import cascade_fits
from bastion.core.errors import PolicyError
from bastion.core.model import ModelMetadata
from bastion.core.policy import Action, CategoryPolicy, PolicySet, TenantPolicy

__all__ = [
    "ResolvedCategory",
    "ResolvedTenant",
    "KeywordMatcher",
    "normalize_text",
    "resolve_policy",
    "fit_problems",
    "FALLBACK_REVIEW",
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

    def spans(self, text: str) -> list[tuple[int, int, str]]:
        """Where the keyword rules match in ``text`` itself: ``(start, end, rule)``, for
        marking hits in a moderator's view. Matched on the case-folded text where folding
        keeps every offset (otherwise none are given: :meth:`match` still decides)."""
        folded = text.casefold()
        if len(folded) != len(text):
            return []
        out = [(m.start(), m.end(), rule.name) for rule in self.rules
               for m in rule.pattern.finditer(folded)]
        return sorted(out)

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
    block_threshold: float | None  # None: review only, the model never decides alone
    review_threshold: float | None
    action: Action
    severity: float
    source: str  # how the thresholds were set, shown in reasons
    fallback: str | None = None  # why it runs review-only although the policy asked for more

    @property
    def flag_threshold(self) -> float | None:
        """Where the category's strongest band starts: the block threshold, or the review
        threshold of a review-only category (what flag rates and uncertainty measure)."""
        return self.block_threshold if self.block_threshold is not None else \
            self.review_threshold


@dataclass
class ResolvedTenant:
    name: str
    version: str
    categories: list[ResolvedCategory]
    matcher: KeywordMatcher
    store_raw_text: bool
    # categories this model cannot score at all (no head), with why: left out, never a 503
    unavailable: dict[str, str] = field(default_factory=dict)
    # why this tenant gets the full model for every item (None: the cascade is on)
    cascade_off: str | None = "not resolved against a model's first stage"
    columns: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.columns = np.array([c.column for c in self.categories], dtype=np.int64)

    def category(self, name: str) -> ResolvedCategory | None:
        return next((c for c in self.categories if c.name == name), None)

    def problems(self) -> list[str]:
        """What of the tenant's policy this model cannot do as written, one line each."""
        out = [f"tenants.{self.name}.categories.{c.name}: {c.fallback}"
               for c in self.categories if c.fallback]
        out += [f"tenants.{self.name}.categories.{n}: {why}"
                for n, why in self.unavailable.items()]
        return out


FALLBACK_REVIEW = 0.5  # review threshold of a fallback category with no curve to derive one


def fit_problems(resolved: dict[str, ResolvedTenant]) -> list[str]:
    """Every tenant's :meth:`ResolvedTenant.problems`, in tenant order."""
    return [p for t in resolved.values() for p in t.problems()]


def _curve(meta: ModelMetadata, head_key: str) -> dict[str, list[float]] | None:
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
    policy: PolicySet, head_keys: Sequence[str], model_meta: ModelMetadata,
    strict: bool = False,
) -> dict[str, ResolvedTenant]:
    """Bind every tenant's categories to the model's heads and concrete thresholds.

    A category the model cannot serve as written never stops the others: one whose
    ``target_precision`` the model's held-out curve never reaches falls back to review-only
    (review from its ``review_threshold``, else the held-out ``review_recall`` point, else
    ``FALLBACK_REVIEW``), with the reason in ``fallback``; one with no head is left out and
    listed in ``unavailable``. ``ResolvedTenant.problems`` says what happened.

    Raises:
        PolicyError: with ``strict``, if any category falls back or is left out.
    """
    index = {k: i for i, k in enumerate(head_keys)}
    version = model_meta.get("version", "?")
    out: dict[str, ResolvedTenant] = {}
    for tname, tpol in policy.tenants.items():
        cats: list[ResolvedCategory] = []
        unavailable: dict[str, str] = {}
        for cname, cpol in tpol.categories.items():
            key = head_key_for(tname, cname, cpol, head_keys)
            if "/" in key and not key.startswith(f"{tname}/"):
                unavailable[cname] = f"head {key!r} belongs to another tenant; not scored"
                continue
            if key not in index:
                known = ", ".join(k for k in head_keys if "/" not in k or k.startswith(tname + "/"))
                unavailable[cname] = (f"model version {version} has no head {key!r} (known "
                                      f"heads: {known}); not scored")
                continue
            curve = _curve(model_meta, key)
            fallback = None
            block: float | None
            review = cpol.review_threshold
            if cpol.target_precision is not None:
                block = threshold_for_precision(curve, cpol.target_precision) if curve else None
                if review is None and curve:
                    review = threshold_for_recall(curve, cpol.review_recall)
                if block is None:
                    review = FALLBACK_REVIEW if review is None else review
                    fallback = (
                        f"target_precision {cpol.target_precision}: the held-out precision of "
                        f"model v{version} for {key!r} never reaches it, so this category is "
                        f"review-only (review from {round(review, 4)}); lower the target or "
                        "set block_threshold")
                    source = f"review-only fallback on model v{version}"
                else:
                    source = (f"target precision {cpol.target_precision} on model v{version} "
                              "held-out data")
                review = min(review, block) if review is not None and block is not None \
                    else review
            elif cpol.block_threshold is not None:
                block, source = cpol.block_threshold, "policy"
            else:
                block, source = None, "policy (review only)"
            cats.append(ResolvedCategory(
                name=cname, head_key=key, column=index[key],
                block_threshold=None if block is None else round(block, 6),
                review_threshold=None if review is None else round(review, 6),
                action=cpol.action, severity=cpol.severity, source=source, fallback=fallback,
            ))
        levels = {c.head_key: c.flag_threshold if c.review_threshold is None
                  else c.review_threshold for c in cats}
        out[tname] = ResolvedTenant(
            name=tname, version=policy.tenant_version(tname), categories=cats,
            matcher=KeywordMatcher(tpol), store_raw_text=tpol.store_raw_text,
            unavailable=unavailable,
            cascade_off="switched off in the policy (cascade: false)" if not tpol.cascade
            else cascade_fits(dict(model_meta.get("cascade") or {}),
                              {k: v for k, v in levels.items() if v is not None}),
        )
    problems = fit_problems(out)
    if strict and problems:
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
        if c.block_threshold is not None and s >= c.block_threshold:
            reasons.append({"kind": "model", "category": c.name, "score": s,
                            "threshold": c.block_threshold, "band": "block",
                            "action": c.action.value, "threshold_source": c.source})
        elif c.review_threshold is not None and s >= c.review_threshold:
            reason = {"kind": "model", "category": c.name, "score": s,
                      "threshold": c.review_threshold, "band": "review",
                      "action": Action.review.value, "threshold_source": c.source}
            if c.fallback:
                reason["fallback"] = c.fallback
            reasons.append(reason)
    reasons.sort(key=lambda r: (-Action(r["action"]).severity, -r.get("score", 2.0)))
    decision = reasons[0]["action"] if reasons else Action.allow.value
    return {"decision": decision, "scores": out_scores, "reasons": reasons,
            "keyword_hits": hits, "deprioritized": depri}


def flag_thresholds(resolved: dict[str, ResolvedTenant], tenant: str) -> dict[str, float]:
    """Per category of ``tenant``, the score where serving starts to act on an item
    (:attr:`ResolvedCategory.flag_threshold`) under a policy resolved for one model version:
    what review ranks uncertainty around. Empty for a tenant not in ``resolved``."""
    if tenant not in resolved:
        return {}
    return {c.name: c.flag_threshold for c in resolved[tenant].categories
            if c.flag_threshold is not None}


def written_flag_thresholds(policy: TenantPolicy) -> dict[str, float]:
    """The same from the policy file alone (no model to derive ``target_precision`` on): the
    block threshold where one is written, else the review threshold."""
    out = {}
    for name, cat in policy.categories.items():
        t = cat.block_threshold if cat.block_threshold is not None else cat.review_threshold
        if t is not None:
            out[name] = t
    return out
