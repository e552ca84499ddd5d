from __future__ import annotations

import time

import numpy as np
import pytest

from bastion.review.selection import Pick, select


def spread(n: int) -> np.ndarray:
    """``n`` orthogonal embeddings: every pair equally far apart, so diversity is neutral."""
    return np.eye(n, dtype=np.float32)


def clusters(n_per: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    """Two tight clusters around orthogonal centres: rows [0, n_per) and [n_per, 2 n_per)."""
    rng = np.random.default_rng(seed)
    centres = np.eye(dim, dtype=np.float32)[:2]
    noise = rng.normal(scale=0.01, size=(2 * n_per, dim)).astype(np.float32)
    return np.repeat(centres, n_per, axis=0) + noise


def test_items_near_the_threshold_beat_confident_ones() -> None:
    scores = np.array([[0.99], [0.52], [0.01], [0.47], [0.9], [0.1]])
    picks = select(spread(6), scores, ["hate"], 2)
    assert {p.index for p in picks} == {1, 3}
    assert picks[0].index == 1  # 0.52 is nearer 0.5 than 0.47


def test_uncertainty_is_measured_against_each_heads_threshold() -> None:
    scores = np.array([[0.5], [0.2], [0.95]])
    picks = select(spread(3), scores, ["spam"], 1, thresholds={"spam": 0.2})
    assert picks[0].index == 1
    assert picks[0].reasons["uncertainty"] == pytest.approx(1.0)
    assert picks[0].reasons["threshold"] == pytest.approx(0.2)


def test_rare_head_is_picked_first_when_uncertainties_tie() -> None:
    # item 0 is unsure about "hate", item 1 about "spam", equally so
    scores = np.array([[0.5, 0.99], [0.01, 0.5], [0.99, 0.01]])
    keys = ["hate", "spam"]
    rare_spam = select(spread(3), scores, keys, 1, label_counts={"hate": 400, "spam": 3})
    assert rare_spam[0].index == 1 and rare_spam[0].reasons["category"] == "spam"
    rare_hate = select(spread(3), scores, keys, 1, label_counts={"hate": 3, "spam": 400})
    assert rare_hate[0].index == 0 and rare_hate[0].reasons["category"] == "hate"
    assert rare_hate[0].reasons["rarity"] == pytest.approx(0.5)  # 1 / sqrt(1 + 3)


def test_picks_spread_across_two_clusters() -> None:
    emb = clusters(10)
    scores = np.full((20, 1), 0.5)
    picks = select(emb, scores, ["hate"], 4)
    sides = [p.index < 10 for p in picks]
    assert sides.count(True) == 2 and sides.count(False) == 2
    assert sides[0] != sides[1]  # the second pick leaves the first pick's cluster at once


def test_without_diversity_one_cluster_can_take_the_whole_batch() -> None:
    emb = clusters(10)
    scores = np.full((20, 1), 0.5)
    scores[:10] = 0.51  # cluster A a touch less uncertain than cluster B
    greedy = select(emb, scores, ["hate"], 4, weights=(1.0, 1.0, 0.0))
    assert all(p.index >= 10 for p in greedy)
    diverse = select(emb, scores, ["hate"], 4)
    assert any(p.index < 10 for p in diverse)


def test_labelled_items_push_picks_away() -> None:
    emb = clusters(10)
    scores = np.full((20, 1), 0.5)
    labelled = emb[:3]  # cluster A is already labelled
    picks = select(emb, scores, ["hate"], 1, labelled=labelled)
    assert picks[0].index >= 10
    assert picks[0].reasons["distance"] > 0.5


def test_candidates_mask_and_a_budget_larger_than_the_pool() -> None:
    scores = np.linspace(0.05, 0.95, 10).reshape(-1, 1)
    mask = np.zeros(10, dtype=bool)
    mask[[1, 4, 7]] = True
    picks = select(spread(10), scores, ["hate"], 50, candidates=mask)
    assert sorted(p.index for p in picks) == [1, 4, 7]
    everything = select(spread(10), scores, ["hate"], 50)
    assert sorted(p.index for p in everything) == list(range(10))
    assert select(spread(10), scores, ["hate"], 0) == []
    assert select(spread(10), scores, ["hate"], 5, candidates=np.zeros(10, bool)) == []


def test_deterministic_with_a_seed_and_ties_follow_it() -> None:
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(200, 32)).astype(np.float32)
    scores = rng.random((200, 2))
    a = select(emb, scores, ["a", "b"], 20, seed=7)
    b = select(emb, scores, ["a", "b"], 20, seed=7)
    assert a == b
    tied = np.full((12, 1), 0.5)  # every item equally valuable and equally far apart
    firsts = {select(spread(12), tied, ["a"], 1, seed=s)[0].index for s in range(8)}
    assert len(firsts) > 1


def test_every_pick_says_why() -> None:
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(50, 8)).astype(np.float16)  # as stored in the event log
    scores = rng.random((50, 2))
    picks = select(emb, scores, ["hate", "spam"], 5, label_counts={"hate": 10},
                   labelled=rng.normal(size=(4, 8)))
    assert len(picks) == 5 and all(isinstance(p, Pick) for p in picks)
    for rank, p in enumerate(picks):
        assert set(p.reasons) == {"category", "model_score", "threshold", "uncertainty",
                                  "rarity", "value", "distance", "rank"}
        assert p.reasons["category"] in {"hate", "spam"}
        assert p.reasons["rank"] == rank
        assert 0.0 <= float(p.reasons["uncertainty"]) <= 1.0
        assert p.score > 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scores": np.zeros((4, 2))}, r"scores has shape \(4, 2\), expected \(5, 1\)"),
        ({"thresholds": {"spam": 0.5}}, r"thresholds for unknown head\(s\) \['spam'\]"),
        ({"thresholds": {"hate": 1.0}}, r"thresholds must lie in \(0, 1\)"),
        ({"label_counts": {"hate": -1}}, "label_counts must be >= 0"),
        ({"candidates": np.ones(4, bool)}, r"boolean mask of shape \(5,\)"),
        ({"labelled": np.zeros((2, 3))}, r"labelled must be \(m, 4\)"),
        ({"weights": (1.0, -1.0, 1.0)}, "three exponents >= 0"),
    ],
)
def test_bad_inputs_say_what_is_wrong(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"scores": np.full((5, 1), 0.5)} | kwargs
    with pytest.raises(ValueError, match=match):
        select(np.zeros((5, 4)), args.pop("scores"), ["hate"], 2, **args)  # type: ignore[arg-type]


def test_a_large_pool_is_fast() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(100_000, 384)).astype(np.float32)
    scores = rng.random((100_000, 3)).astype(np.float32)
    t0 = time.perf_counter()
    picks = select(emb, scores, ["a", "b", "c"], 500, labelled=emb[:1000])
    elapsed = time.perf_counter() - t0
    assert len({p.index for p in picks}) == 500
    assert elapsed < 30  # about 1 s on an idle 2-core machine; generous for a loaded CI box
