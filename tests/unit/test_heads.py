from __future__ import annotations

import numpy as np

from bastion.core.model import HeadSpec
from bastion.registry.evaluation import evaluate_heads
from bastion.training.heads import fit_heads, group_split


def synthetic(n: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    y = np.stack([(x[:, 0] > 1.0), (x[:, 1] + x[:, 2] > 0.5)], axis=1).astype(np.float32)
    return x, y


def test_heads_learn_every_category_at_once() -> None:
    x, y = synthetic()
    mask = np.ones_like(y, dtype=bool)
    heads = fit_heads(x, y, mask, [HeadSpec("a"), HeadSpec("b")])
    metrics, curves = evaluate_heads(heads.score(x), y, mask, heads.keys)
    assert metrics["a"]["auroc"] > 0.95 and metrics["b"]["auroc"] > 0.95
    assert set(curves) == {"a", "b"}


def test_masked_targets_do_not_teach() -> None:
    x, y = synthetic()
    mask = np.ones_like(y, dtype=bool)
    mask[:, 1] = False
    mask[:50, 1] = True
    poisoned = y.copy()
    poisoned[50:, 1] = 1 - poisoned[50:, 1]  # wrong labels, but masked out
    clean = fit_heads(x, y, mask, [HeadSpec("a"), HeadSpec("b")])
    dirty = fit_heads(x, poisoned, mask, [HeadSpec("a"), HeadSpec("b")])
    np.testing.assert_allclose(clean.weight, dirty.weight, atol=1e-6)


def test_group_split_keeps_groups_on_one_side() -> None:
    groups = [f"user{i % 50}" for i in range(1000)]
    test = group_split(groups)
    by_group: dict[str, set[bool]] = {}
    for g, t in zip(groups, test, strict=True):
        by_group.setdefault(g, set()).add(bool(t))
    assert all(len(v) == 1 for v in by_group.values())
    assert 0.05 < test.mean() < 0.4
