"""The training snapshot: the seed data plus the human labels, fingerprinted and split.

A retraining run reads one snapshot. Labels come from the label store (``core.labels``) as
the review loop produces them: one aggregated soft label and a weight (confidence) per
(item, category). A category the shared heads cover trains the shared head; any other
category trains a head of the tenant's own (``<tenant>/<category>``).

Splits keep connected items on one side: items that share a session, a user, a seed group
(PyRIT objective, tweet id) or the same text form one group, and the group is hashed into
train, validation (early stopping) or test (the promotion gate's held-out data). The seed
items keep exactly the starter model's test split.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bastion.core.errors import BastionError
from bastion.core.labelled import LabelledSet
from bastion.core.labels import LabelledItem, LabelStore
from bastion.core.settings import Settings
from bastion.training.datasets import CATEGORIES, load_starter_data
from bastion.training.heads import group_split

__all__ = [
    "Snapshot", "build_snapshot", "labels_to_set", "connected_groups", "snapshots_dir",
    "snapshot_path",
    "TEST_FRACTION", "VAL_FRACTION",
]

TEST_FRACTION = 0.2  # the starter model's split: the gate's held-out data
VAL_FRACTION = 0.125  # of the rest: ~10% of all groups, for early stopping


class SnapshotError(BastionError):
    """There is nothing (or not enough) to train on."""


def snapshots_dir(state_dir: str | Path) -> Path:
    return Path(state_dir) / "snapshots"


def snapshot_path(directory: Path, fingerprint: str) -> Path:
    """Where a snapshot with this data fingerprint is saved under ``directory``."""
    return directory / f"{fingerprint[:16]}.parquet"


def connected_groups(keys: list[list[str]]) -> list[str]:
    """Union-find over items' keys: items sharing any key are one group, named by its
    smallest key (stable as long as the group does not merge with another)."""
    parent: dict[str, str] = {}

    def find(k: str) -> str:
        parent.setdefault(k, k)
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for item_keys in keys:
        roots = sorted({find(k) for k in item_keys})
        for r in roots[1:]:
            parent[r] = roots[0]
    return [find(item_keys[0]) for item_keys in keys]


def label_column(tenant: str, category: str) -> str:
    """The head a label trains: the shared one where it exists, else the tenant's own."""
    return category if category in CATEGORIES else f"{tenant}/{category}"


def labels_to_set(rows: list[LabelledItem]) -> LabelledSet:
    """Aggregated labels as a LabelledSet (one row per item, weights = label confidence)."""
    by_item: dict[tuple[str, str], list[LabelledItem]] = defaultdict(list)
    for r in rows:
        by_item[(r.tenant, r.item_id)].append(r)
    columns = list(CATEGORIES)
    columns += sorted({label_column(r.tenant, r.category) for r in rows} - set(CATEGORIES))
    col = {c: i for i, c in enumerate(columns)}
    n = len(by_item)
    targets = np.zeros((n, len(columns)), np.float32)
    mask = np.zeros((n, len(columns)), bool)
    weights = np.zeros((n, len(columns)), np.float32)
    texts, groups, sources = [], [], []
    for i, ((_tenant, item_id), item_rows) in enumerate(by_item.items()):
        first = item_rows[0]
        texts.append(first.text)
        # the item's own id is its group key until connected_groups joins it to others
        groups.append(f"item:{first.tenant}:{item_id}")
        sources.append(f"labels:{first.tenant}")
        for r in item_rows:
            j = col[label_column(r.tenant, r.category)]
            targets[i, j], mask[i, j], weights[i, j] = r.soft, True, r.weight
    return LabelledSet(texts, groups, sources, targets, mask, columns, weights)


@dataclass
class Snapshot:
    """One retraining run's data: items, their split, and the fingerprint naming them."""

    data: LabelledSet
    split: np.ndarray  # "train" | "val" | "test" per item
    fingerprint: str
    n_labelled_items: int
    labels_through: float | None  # newest label time included (unix seconds)
    created_at: str
    path: Path | None = None

    def part(self, name: str) -> LabelledSet:
        return self.data.subset(np.nonzero(self.split == name)[0])

    def summary(self) -> dict[str, Any]:
        counts = Counter(self.split.tolist())
        train = self.split == "train"
        pos = ((self.data.targets >= 0.5) & self.data.mask)[train].sum(0)
        known = self.data.mask[train].sum(0)
        return {
            "fingerprint": self.fingerprint,
            "n_items": len(self.data),
            "n_labelled_items": self.n_labelled_items,
            "labels_through": self.labels_through,
            "splits": {k: int(counts.get(k, 0)) for k in ("train", "val", "test")},
            "sources": dict(Counter(self.data.sources)),
            "train_positives": {c: int(p) for c, p in zip(self.data.categories, pos,
                                                           strict=True)},
            "train_known": {c: int(k) for c, k in zip(self.data.categories, known, strict=True)},
            "columns": list(self.data.categories),
        }

    def save(self, directory: Path) -> Path:
        """Parquet (items, labels, split) + JSON summary, named by the fingerprint."""
        directory.mkdir(parents=True, exist_ok=True)
        path = snapshot_path(directory, self.fingerprint)
        if not path.exists():
            d = self.data
            frame = pd.DataFrame({
                "text": d.texts, "group": d.groups, "source": d.sources, "split": self.split,
                "targets": list(d.targets), "mask": list(d.mask), "weights": list(d.loss_weights),
            })
            tmp = path.with_suffix(".partial")
            frame.to_parquet(tmp, index=False)
            tmp.rename(path)
            path.with_suffix(".json").write_text(json.dumps(self.summary(), indent=2))
        self.path = path
        return path


def _split(groups: list[str]) -> np.ndarray:
    test = group_split(groups, TEST_FRACTION)
    val = group_split(groups, VAL_FRACTION, salt="bastion-val") & ~test
    return np.where(test, "test", np.where(val, "val", "train"))


def build_snapshot(
    settings: Settings,
    *,
    seed_data: bool = True,
    limit_per_source: int | None = None,
    davidson_limit: int | None = None,
    tenants: list[str] | None = None,
    save: bool = True,
) -> Snapshot:
    """Seed data (the starter model's packaged sets) plus every aggregated label in the
    state directory's label store, grouped, split and fingerprinted.

    Raises:
        SnapshotError: neither seed data nor labels, or no training items left after the split.
    """
    store = LabelStore(settings.database_url)
    try:
        # newest label time first: a label landing between the two reads is then in the
        # snapshot without being claimed by labels_through, never the other way round
        labels_through = store.stats().get("last_label_ts")
        rows = store.aggregated(tenants)  # Dawid-Skene: core.aggregation
        sessions = {(r.tenant, r.item_id): (r.session_id, r.user_id) for r in rows}
    finally:
        store.close()
    parts = []
    if seed_data:
        parts.append(load_starter_data(limit_per_source=limit_per_source,
                                       davidson_limit=davidson_limit))
    labelled = labels_to_set(rows) if rows else None
    if labelled is not None:
        parts.append(labelled)
    if not parts:
        raise SnapshotError(
            "nothing to train on: the label store is empty and the seed data is off; import "
            "labels with 'bastion labels import FILE' or drop --no-seed-data")
    data = LabelledSet.concat(parts)
    keys: list[list[str]] = []
    for g, text in zip(data.groups, data.texts, strict=True):
        k = [g, "text:" + hashlib.sha256(" ".join(text.lower().split()).encode()).hexdigest()]
        if g.startswith("item:"):
            _kind, tenant, item_id = g.split(":", 2)
            session, user = sessions[(tenant, item_id)]
            if session:
                k.append(f"session:{tenant}:{session}")
            if user:
                k.append(f"user:{tenant}:{user}")
        keys.append(k)
    data.groups = connected_groups(keys)
    split = _split(data.groups)
    if not (split == "train").any():
        raise SnapshotError(f"all {len(data)} item(s) fell into held-out splits; label more")
    snap = Snapshot(
        data=data, split=split, fingerprint=data.fingerprint(),
        n_labelled_items=0 if labelled is None else len(labelled),
        labels_through=labels_through,
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    if save:
        snap.save(snapshots_dir(settings.state_dir))
    return snap
