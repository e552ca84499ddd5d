"""Active learning: which logged items are worth a moderator's minute when labels are scarce.

Given the model's scores and embeddings of logged decisions (the event log keeps both), pick a
batch of ``budget`` items to label. Three ideas, each with its source, combine:

1. **Uncertainty sampling** (Lewis & Gale 1994, "A sequential algorithm for training text
   classifiers"): a label teaches most where the model is least sure, i.e. near the decision
   boundary. Per head, ``uncertainty = 1 - |s - t| / max(t, 1 - t)``: 1 at the threshold ``t``,
   0 at the far end of the score range (the margin criterion of Scheffer et al. 2001, measured
   against the policy's threshold rather than 0.5, since that is where decisions flip).
2. **Rare categories first**: a head with few labels gains more from one more; the weight per
   head is ``rarity = 1 / sqrt(1 + label_count)``, the square-root inverse frequency used to
   re-balance rare classes (Mikolov et al. 2013's subsampling, Mahajan et al. 2018). An item's
   value is the best over heads of ``uncertainty^wu * rarity^wr``; that head is its category.
3. **Diversity in embedding space**: a batch of the top-valued items is often one near-duplicate
   cluster (the same slur in a hundred tweets). Core-set selection (Sener & Savarese 2018,
   "Active learning for convolutional neural networks: a core-set approach") picks by greedy
   farthest-first traversal, the 2-approximation of k-center (Gonzalez 1985). Here each step
   takes the candidate maximising ``value * d^wd``, where ``d`` is its cosine distance to the
   nearest item already picked or already labelled: uncertainty and diversity balanced in one
   batch, as in Brinker 2003 ("Incorporating diversity in active learning with support vector
   machines") and Zhdanov 2019 ("Diverse mini-batch active learning").

``weights = (wu, wr, wd)`` are the three exponents; 0 switches a term off. For speed the greedy
pass runs over the ``PREFILTER * budget`` highest-valued candidates only, and keeps each
candidate's nearest-distance up to date with one matrix-vector product per pick (100k x 384-d
candidates, budget 500: about a second). Ties in value are broken by a ``seed``-ed shuffle, so
a selection is reproducible. Every :class:`Pick` carries the numbers that chose it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PREFILTER", "Pick", "select"]

# Candidates per budget slot kept for the greedy pass: the diverse batch is drawn from the top
# 20 x budget by value, so a pick is never worse than the 20 x budget-th most valuable item.
PREFILTER = 20
_EPS = 1e-6  # keeps a zero factor from hiding the other one (all-confident or duplicate items)
_CHUNK = 1024  # labelled rows per distance block: (pool x 1024) float32, 40 MB at a 10k pool
MAX_DISTANCE = 2.0  # cosine distance of opposite vectors: "nothing labelled or picked yet"


@dataclass(frozen=True)
class Pick:
    """One item to label and why.

    Attributes:
        index: Row of ``emb`` / ``scores``.
        score: The selection objective when it was picked, ``value * distance^wd``.
        reasons: ``category`` (the head it is most valuable for), ``model_score`` and
            ``threshold`` of that head, ``uncertainty``, ``rarity``, ``value``, ``distance``
            (cosine distance to the nearest item labelled or picked before it) and ``rank``.
    """

    index: int
    score: float
    reasons: dict[str, float | str]


def _per_head(
    head_keys: list[str], given: dict[str, float] | dict[str, int] | None, default: float,
    what: str,
) -> np.ndarray:
    given = given or {}
    unknown = sorted(set(given) - set(head_keys))
    if unknown:
        raise ValueError(f"select: {what} for unknown head(s) {unknown}; heads are {head_keys}")
    return np.array([float(given.get(k, default)) for k in head_keys], dtype=np.float64)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)  # a zero vector stays zero: distance 1 to everything


def select(
    emb: np.ndarray,
    scores: np.ndarray,
    head_keys: list[str],
    budget: int,
    *,
    thresholds: dict[str, float] | None = None,
    label_counts: dict[str, int] | None = None,
    labelled: np.ndarray | None = None,
    candidates: np.ndarray | None = None,
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    seed: int = 0,
) -> list[Pick]:
    """Pick up to ``budget`` items to label: uncertain, for rare heads, and unlike each other.

    Args:
        emb: (n, d) embeddings of the candidate items (float16 from the event log is fine).
        scores: (n, n_heads) model probabilities, columns in ``head_keys`` order.
        head_keys: The heads scored, e.g. ``["hate", "acme/cheating"]``.
        budget: How many items to pick; fewer come back when fewer are eligible.
        thresholds: Per head, the decision boundary to be unsure around (default 0.5).
        label_counts: Labels already held per head (default 0); rarer heads count more.
        labelled: (m, d) embeddings of items already labelled: picks keep away from them too.
        candidates: (n,) boolean mask of the eligible rows (default all).
        weights: Exponents ``(wu, wr, wd)`` of uncertainty, rarity and distance.
        seed: Breaks ties in value; the same inputs and seed give the same picks.

    Returns:
        The picks in the order chosen (the first is the most valuable on its own).

    Raises:
        ValueError: Shapes disagree, a threshold is outside (0, 1), a weight or label count is
            negative, or ``thresholds`` / ``label_counts`` name a head not in ``head_keys``.
    """
    emb = np.asarray(emb)
    scores = np.asarray(scores, dtype=np.float64)
    if emb.ndim != 2:
        raise ValueError(f"select: emb must be (n, d), got shape {emb.shape}")
    n, dim = emb.shape
    if scores.shape != (n, len(head_keys)):
        raise ValueError(
            f"select: scores has shape {scores.shape}, expected ({n}, {len(head_keys)}): one row "
            "per embedding, one column per head key"
        )
    thr = _per_head(head_keys, thresholds, 0.5, "thresholds")
    counts = _per_head(head_keys, label_counts, 0.0, "label_counts")
    if ((thr <= 0) | (thr >= 1)).any():
        raise ValueError(f"select: thresholds must lie in (0, 1), got {thresholds}")
    if (counts < 0).any():
        raise ValueError(f"select: label_counts must be >= 0, got {label_counts}")
    if len(weights) != 3 or min(weights) < 0:
        raise ValueError(f"select: weights are three exponents >= 0, got {weights}")
    if labelled is not None and (labelled.ndim != 2 or labelled.shape[1] != dim):
        raise ValueError(f"select: labelled must be (m, {dim}), got shape {labelled.shape}")
    eligible = np.arange(n)
    if candidates is not None:
        candidates = np.asarray(candidates)
        if candidates.shape != (n,) or candidates.dtype != bool:
            raise ValueError(
                f"select: candidates must be a boolean mask of shape ({n},), got "
                f"{candidates.dtype} {candidates.shape}"
            )
        eligible = np.flatnonzero(candidates)
    if budget <= 0 or not len(eligible) or not head_keys:
        return []
    wu, wr, wd = (float(w) for w in weights)

    # value per item: the best head's uncertainty x rarity
    s = scores[eligible]
    uncertainty = np.clip(1.0 - np.abs(s - thr) / np.maximum(thr, 1.0 - thr), 0.0, 1.0)
    rarity = 1.0 / np.sqrt(1.0 + counts)
    per_head = uncertainty**wu * rarity**wr
    head = per_head.argmax(axis=1)
    value = per_head[np.arange(len(eligible)), head]

    # prefilter: the top PREFILTER x budget by value, ties in a seeded random order
    tiebreak = np.random.default_rng(seed).random(len(eligible))
    order = np.lexsort((tiebreak, -value))[: min(len(eligible), PREFILTER * budget)]
    pool = eligible[order]
    p_value, p_head = value[order], head[order]
    unit = _unit(emb[pool])

    # cosine distance from each pooled candidate to its nearest labelled item
    nearest = np.full(len(pool), MAX_DISTANCE, dtype=np.float32)
    if labelled is not None and len(labelled):
        for start in range(0, len(labelled), _CHUNK):
            block = _unit(labelled[start:start + _CHUNK])
            np.minimum(nearest, 1.0 - (unit @ block.T).max(axis=1), out=nearest)
        np.clip(nearest, 0.0, MAX_DISTANCE, out=nearest)

    # greedy farthest-first, weighted by value; distances updated incrementally per pick
    gain = p_value + _EPS
    taken = np.zeros(len(pool), dtype=bool)
    picks: list[Pick] = []
    for rank in range(min(budget, len(pool))):
        objective = gain * (nearest + _EPS) ** wd if wd else gain.copy()
        objective[taken] = -1.0
        j = int(objective.argmax())
        k, h = order[j], int(p_head[j])
        picks.append(Pick(
            index=int(pool[j]),
            score=float(objective[j]),
            reasons={
                "category": head_keys[h],
                "model_score": float(s[k, h]),
                "threshold": float(thr[h]),
                "uncertainty": float(uncertainty[k, h]),
                "rarity": float(rarity[h]),
                "value": float(p_value[j]),
                "distance": float(nearest[j]),
                "rank": float(rank),
            },
        ))
        taken[j] = True
        np.minimum(nearest, np.maximum(1.0 - unit @ unit[j], 0.0), out=nearest)
    return picks
