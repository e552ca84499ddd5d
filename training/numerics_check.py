"""The quality check of encoder numerics: the shipped starter heads' held-out AUROC per
category with the encoder run in each numerics, against fp32 (the heads were trained on fp32
embeddings). The test suite and bench/numerics.py both measure it here."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

from bastion.core.labelled import LabelledSet
from bastion.core.model import ModerationModel
from bastion.training.datasets import load_starter_data
from bastion.training.heads import group_split
from bastion.training.starter import SHIPPED_DIR

__all__ = ["HeldOut", "MAX_AUROC_DROP", "held_out", "auroc_by_category", "load_starter"]

MAX_AUROC_DROP = 0.005  # issue 14: within 0.005 of fp32's held-out AUROC, per category


@dataclass(frozen=True)
class HeldOut:
    """The starter's held-out split (``group_split``'s default salt), or a fixed sample of it."""

    data: LabelledSet
    n_split: int  # items in the whole held-out split


def held_out(limit: int | None = None, seed: int = 0) -> HeldOut:
    """The held-out split of every available source; ``limit`` keeps a fixed random sample
    (the same one on every run), for a check that must finish in minutes on two cores."""
    data = load_starter_data()
    idx = np.nonzero(group_split(data.groups))[0]
    n = len(idx)
    if limit is not None and limit < n:
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=limit, replace=False))
    return HeldOut(data.subset(idx), n)


def auroc_by_category(model: ModerationModel, held: HeldOut, batch_size: int = 32,
                      ) -> dict[str, float]:
    """Pooled held-out AUROC of each head over the items a human labelled for it."""
    d = held.data
    _, scores = model.score(d.texts, batch_size=batch_size)
    out = {}
    for j, key in enumerate(model.head_keys):
        c = d.categories.index(key)
        known = d.mask[:, c]
        y = d.targets[known, c] >= 0.5
        if 0 < y.sum() < len(y):
            out[key] = float(roc_auc_score(y, scores[known, j]))
    return out


def load_starter(precision: str) -> ModerationModel:
    """The shipped starter model with its encoder in ``precision``."""
    return ModerationModel.load(SHIPPED_DIR, precision=precision)
