"""Checks of what callers hand the review queue: names, tenants, numbers, categories, labels.
Each failure is a :class:`ReviewError` that names the value and what it should be."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Collection, Iterable
from typing import Any

from bastion.core.policy import SLUG
from bastion.review.records import LabelIn, ReviewError

__all__ = ["category", "check_labels", "name", "number", "scope", "task_id", "tenant"]


def task_id(tenant: str, group_key: str) -> str:
    return hashlib.sha256(f"{tenant}\x00{group_key}".encode()).hexdigest()[:16]


def name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 256:
        raise ReviewError(f"{what} must be a non-empty string of at most 256 characters, "
                          f"got {value!r}")
    return value


def tenant(value: object) -> str:
    if not isinstance(value, str) or not re.match(SLUG, value):
        raise ReviewError(f"tenant {value!r} is not a lower-case slug (letters, digits, _ or -; "
                          "at most 63 characters), as in the policy file")
    return value


def number(value: object, what: str, lo: float, hi: float, lo_open: bool = False) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        x = float(value)
        if (lo < x if lo_open else lo <= x) and x <= hi:
            return x
    rng = f"({lo:g}, {hi:g}]" if lo_open else f"[{lo:g}, {hi:g}]"
    raise ReviewError(f"{what} must be a number in {rng}, got {value!r}")


def category(value: object, where: str) -> str:
    if not isinstance(value, str) or not re.match(SLUG, value):
        raise ReviewError(f"category {value!r} {where} is not a slug of the policy "
                          "(lower-case letters, digits, _ or -; at most 63 characters)")
    return value


def scope(tenants: Collection[str]) -> list[str]:
    if isinstance(tenants, str):  # a bare "acme" would otherwise mean {"a", "c", "m", "e"}
        raise ReviewError(f"tenants must be a collection of tenant names, got the string "
                          f"{tenants!r}; pass [{tenants!r}]")
    return sorted(set(tenants))


def check_labels(given: Iterable[LabelIn], allowed: set[str],
                  task_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for lab in given:
        if not isinstance(lab, LabelIn):
            raise ReviewError(f"labels must be LabelIn values, got {lab!r}")
        if lab.item_id not in allowed:
            raise ReviewError(f"item {lab.item_id!r} is not in task {task_id!r}; label only "
                              f"the task's items ({', '.join(sorted(allowed)) or 'none'})")
        where = f"on item {lab.item_id!r}"
        cat = category(lab.category, where)
        if (lab.item_id, cat) in seen:
            raise ReviewError(f"category {cat!r} {where} is labelled twice; give one label "
                              "per item and category")
        seen.add((lab.item_id, cat))
        rows.append({"item_id": lab.item_id, "category": cat,
                     "value": number(lab.value, f"value of {cat!r} {where} (1 = applies)",
                                      0.0, 1.0),
                     "confidence": number(lab.confidence, f"confidence of {cat!r} {where}",
                                           0.0, 1.0, lo_open=True)})
    if not rows:
        raise ReviewError("a submission needs at least one label (value 0 says a category "
                          "does not apply); release the claim to skip the task")
    return rows
