"""Labelled items as every stage passes them: texts with soft targets per label column, a
strict mask of what a human judged and a mask of weak (training-only) negatives. Training
builds them (``bastion.training.datasets``, ``bastion.training.snapshot``); the gate measures
versions on them (``bastion.registry``). See ``bastion.training.datasets`` for what strict and
weak mean."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

__all__ = ["LabelledSet", "WEAK_WEIGHT"]

WEAK_WEIGHT = 0.3  # loss weight of a weak negative relative to a human label


@dataclass
class LabelledSet:
    texts: list[str]
    groups: list[str]
    sources: list[str]
    targets: np.ndarray  # (n, n_categories) float32 soft targets
    mask: np.ndarray  # (n, n_categories) bool: a human labelled this (item, category)
    categories: list[str]  # column names: shared categories, then tenant heads "<tenant>/<cat>"
    weights: np.ndarray | None = None  # (n, n_categories) loss weight (label confidence)
    weak: np.ndarray | None = None  # (n, n_categories) bool: weak negative, training only

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def loss_weights(self) -> np.ndarray:
        """Per (item, column) training weight: the label weights where given, else 1 where
        labelled; ``WEAK_WEIGHT`` on weak negatives that nobody labelled."""
        w = self.mask.astype(np.float32)
        if self.weights is not None:
            w = w * self.weights.astype(np.float32)
        if self.weak is not None:
            # only for a category someone labelled in this data: negatives alone would just
            # push its head down everywhere
            weak = self.weak & ~self.mask & self.mask.any(0, keepdims=True)
            w = np.where(weak, np.float32(WEAK_WEIGHT), w)
        return w.astype(np.float32)

    @classmethod
    def concat(cls, parts: list[LabelledSet]) -> LabelledSet:
        parts = [p for p in parts if len(p)]
        categories = list(parts[0].categories)
        for p in parts[1:]:
            categories += [c for c in p.categories if c not in categories]
        aligned = [p.with_columns(categories) for p in parts]
        weighted = any(p.weights is not None for p in parts)
        has_weak = any(p.weak is not None for p in parts)
        return cls(
            texts=[t for p in aligned for t in p.texts],
            groups=[g for p in aligned for g in p.groups],
            sources=[s for p in aligned for s in p.sources],
            targets=np.concatenate([p.targets for p in aligned]),
            mask=np.concatenate([p.mask for p in aligned]),
            categories=categories,
            weights=np.concatenate([p.label_weights for p in aligned]) if weighted else None,
            weak=np.concatenate([p.weak_mask for p in aligned]) if has_weak else None,
        )

    @property
    def label_weights(self) -> np.ndarray:
        """The label weights (1 where none are given), without weak negatives."""
        return (np.ones(self.targets.shape, np.float32) if self.weights is None
                else self.weights.astype(np.float32))

    @property
    def weak_mask(self) -> np.ndarray:
        return np.zeros(self.mask.shape, bool) if self.weak is None else self.weak

    def with_columns(self, categories: list[str]) -> LabelledSet:
        """The same items with label columns ``categories`` (new ones unknown)."""
        if categories == self.categories:
            return self
        missing = [c for c in self.categories if c not in categories]
        if missing:
            raise ValueError(f"with_columns: would drop label columns {missing}")
        idx = [categories.index(c) for c in self.categories]
        n, k = len(self), len(categories)

        def widen(a: np.ndarray | None, dtype: type) -> np.ndarray | None:
            if a is None:
                return None
            out: np.ndarray = np.zeros((n, k), dtype)
            out[:, idx] = a
            return out

        return LabelledSet(self.texts, self.groups, self.sources,
                           widen(self.targets, np.float32),  # type: ignore[arg-type]
                           widen(self.mask, bool), categories,  # type: ignore[arg-type]
                           widen(self.weights, np.float32), widen(self.weak, bool))

    def subset(self, idx: np.ndarray) -> LabelledSet:
        return LabelledSet(
            texts=[self.texts[i] for i in idx], groups=[self.groups[i] for i in idx],
            sources=[self.sources[i] for i in idx], targets=self.targets[idx],
            mask=self.mask[idx], categories=self.categories,
            weights=None if self.weights is None else self.weights[idx],
            weak=None if self.weak is None else self.weak[idx],
        )

    def fingerprint(self) -> str:
        """SHA-256 over texts, groups, sources, label columns, targets, masks and weights:
        names the exact training data."""
        h = hashlib.sha256()
        for t in self.texts:
            h.update(hashlib.sha256(t.encode()).digest())
        h.update("\0".join(self.categories).encode())
        h.update("\0".join(self.groups).encode())
        h.update("\0".join(self.sources).encode())
        h.update(np.round(self.loss_weights, 4).tobytes())
        h.update(np.round(self.targets, 4).tobytes())
        h.update(self.mask.tobytes())
        return h.hexdigest()
