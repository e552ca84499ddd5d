"""Synthetic traffic for the drift tests: embeddings like a sentence encoder's, and scores."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bastion.drift.result import DriftResult

DIM = 384
N_CLUSTERS = 6


def embeddings(
    n: int,
    seed: int,
    *,
    weights: np.ndarray | None = None,
    shift: float = 0.0,
) -> np.ndarray:
    """Sentence-encoder-like rows: a Gaussian mixture around fixed unit centres (topics), on the
    unit sphere, as float16 like the event log stores them. ``weights`` sets the topic mix;
    ``shift`` moves every row along one fixed direction before normalising."""
    centres = np.random.default_rng(1234).normal(size=(N_CLUSTERS, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    direction = np.random.default_rng(99).normal(size=DIM)
    direction /= np.linalg.norm(direction)
    rng = np.random.default_rng(seed)
    if weights is None:
        weights = np.r_[np.full(N_CLUSTERS - 1, 1.0 / (N_CLUSTERS - 1)), 0.0]  # last topic unseen
    topic = rng.choice(N_CLUSTERS, size=n, p=weights)
    # noise of norm ~1 against a unit centre: rows of one topic have cosine ~0.5, like MiniLM's
    x = centres[topic] + rng.normal(scale=1.0 / math.sqrt(DIM), size=(n, DIM)) + shift * direction
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float16)


def scores(n: int, seed: int, a: float = 2.0, b: float = 8.0) -> np.ndarray:
    return np.random.default_rng(seed).beta(a, b, size=n)


def assert_clean(result: DriftResult) -> None:
    """Finite numbers everywhere: nothing a dashboard would render as NaN."""

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v)
        elif isinstance(value, float | np.floating):
            assert math.isfinite(value), result

    assert math.isfinite(result.statistic)
    assert math.isfinite(result.threshold)
    if result.p_value is not None:
        assert 0.0 < result.p_value <= 1.0
    walk(result.detail)
