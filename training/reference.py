"""The drift reference a version is registered with: a sample of the texts it was trained on.

The drift monitor compares a tenant's traffic with it (``bastion.drift.check``). It is logged
with the version's MLflow run (``bastion.registry.store.REFERENCE_ARTIFACT``), so a check finds
it wherever the registry is, not only in the state directory that trained the version.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bastion.core.settings import Settings
from bastion.registry.store import ModelRegistry
from bastion.training.datasets import load_starter_data
from bastion.training.snapshot import snapshot_path, snapshots_dir

__all__ = ["REFERENCE_SIZE", "sample", "seed_reference", "snapshot_reference", "ensure_reference"]

REFERENCE_SIZE = 2000  # texts kept; a check draws its reference from them


def sample(texts: list[str], n: int = REFERENCE_SIZE, seed: int = 0) -> list[str]:
    """``n`` of ``texts`` drawn without replacement, in their original order."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(texts), size=min(n, len(texts)), replace=False)
    return [texts[i] for i in sorted(idx)]


def seed_reference(n: int = REFERENCE_SIZE) -> list[str]:
    """The starter model's: its seed data as loaded on this machine."""
    return sample(load_starter_data(limit_per_source=max(n // 3, 50)).texts, n)


def snapshot_reference(path: Path, n: int = REFERENCE_SIZE) -> list[str]:
    """A retrained version's: the train split of its saved training snapshot."""
    frame = pd.read_parquet(path, columns=["text", "split"])
    return sample(frame.loc[frame["split"] == "train", "text"].astype(str).tolist(), n)


def ensure_reference(settings: Settings, registry: ModelRegistry, version: str) -> bool:
    """Give ``version`` a drift reference if it was registered without one (before references
    were logged): from its training snapshot in this state directory, else the seed data.
    Returns whether one was added."""
    if registry.reference_texts(version) is not None:
        return False
    info = registry.get(version)
    if not info.run_id:
        return False
    fingerprint = str(registry.metadata(version).get("data", {}).get("fingerprint", ""))
    snap = snapshot_path(snapshots_dir(settings.state_dir), fingerprint)
    texts = snapshot_reference(snap) if fingerprint and snap.exists() else seed_reference()
    registry.log_reference(info.run_id, texts)
    return True
