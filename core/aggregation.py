"""Aggregating several moderators' labels of one (item, category) into one soft label and weight.

The model is Dawid & Skene (1979), "Maximum likelihood estimation of observer error-rates using
the EM algorithm", with one binary task per category (class 1 = the category applies):

- each (item, category) has a hidden truth ``z`` in {0, 1}, with ``P(z = 1) = prevalence[c]``;
- annotator ``a`` on category ``c`` has a 2x2 confusion matrix, i.e. a sensitivity
  ``s = P(says 1 | z = 1)`` and a specificity ``t = P(says 0 | z = 0)``; votes are independent
  given ``z``. Reliability is per category: someone good at spam may be bad at hate.

A vote is a value ``v`` in [0, 1] and a confidence ``w`` in (0, 1]. It enters as a soft, tempered
observation: ``v`` is a fractional "says 1" (``1 - v`` a fractional "says 0") and ``w`` a
fractional number of observations, a power on the likelihood::

    log p(vote | z = 1) = w * (v * log s       + (1 - v) * log(1 - s))
    log p(vote | z = 0) = w * (v * log(1 - t) + (1 - v) * log t)

So ``w -> 0`` removes a vote, and ``v = 0.5`` from an annotator with ``s = t`` says nothing. The
M-step counts the same weighted soft votes.

EM starts from the confidence-weighted mean of the values, then alternates the M-step
(reliabilities and prevalence from the posteriors) and the E-step (posteriors from them, in
log-odds), all categories at once as flat numpy arrays, until no posterior of a category moves by
``tol`` or more. Gold items have their posterior clamped to the known truth in every E-step: they
measure the moderators, and each annotator's accuracy on them is reported.

Estimates are posterior means under Beta priors (additive smoothing with ``prior_strength``
pseudo-votes), never 0 or 1, so nothing is ever ``log(0)`` or NaN:

- pass 1: every (annotator, category) starts from a generic prior, mean 0.75 ("moderators are
  better than chance"; it also keeps EM off the label-swapped solution);
- pass 2 (empirical Bayes): the prior mean of (annotator, category) is that annotator's pooled
  pass-1 estimate over their *other* categories (leave-one-out, so no vote counts twice); with
  few labels in a category their reliability there shrinks towards their pooled one. EM restarts
  from the pass-1 posteriors.
- prevalence: ``(sum of posteriors + k/2) / (items + k)``, with ``k = prior_strength``.

The confidence of an aggregated label, its training weight, is
``max(MIN_WEIGHT, |2p - 1| * evidence)``: how far the posterior ``p`` is from a coin flip, times
how much looking at the item stands behind it. A binary annotator with informedness
``J = s + t - 1`` (Youden's J) is a mixture: with probability ``|J|`` their vote follows the truth
(inverted when ``J < 0``, which the model undoes), otherwise it is noise independent of the truth.
So ``evidence = 1 - prod over votes of (1 - w * |2v - 1| * |J|)`` is the probability that at
least one vote actually looked at the truth; one vote never makes an item certain. ``J`` here is
estimated from cross-checked votes only (on items with another vote or gold): a lone annotator
always agrees with the posterior their own vote made, which proves nothing, so their ``J`` is the
prior's (0.5 with the generic prior). Gold items get ``max(MIN_WEIGHT, |2g - 1|)``.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from bastion.core.errors import LabelError

__all__ = ["AggregationResult", "AnnotatorReliability", "MIN_WEIGHT", "Vote", "dawid_skene",
           "dawid_skene_weights", "majority_vote"]

# A contested item (annotators split 0/1) still says something: keep it in training, a little.
MIN_WEIGHT = 0.05


class Vote(NamedTuple):
    """One annotator's current label of one (item, category)."""

    annotator: str
    value: float
    confidence: float

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

METHOD = "dawid-skene"
# Generic prior mean of sensitivity and specificity: a moderator is better than chance. Any value
# above 0.5 breaks the label-swap symmetry of EM; 0.75 is a weak "usually right" guess, whose
# informedness (J = 0.5) is what an annotator nobody can cross-check is worth.
_PRIOR_MEAN = 0.75
# Keeps probabilities off 0 and 1 whatever the floating-point rounding did to a count.
_EPS = 1e-9


@dataclass(frozen=True)
class AnnotatorReliability:
    """How far one annotator's labels of one category can be trusted, as EM estimated it."""

    annotator: str
    category: str
    sensitivity: float  # P(says 1 | truth 1)
    specificity: float  # P(says 0 | truth 0)
    n_labels: int
    n_gold: int  # labels on gold items
    gold_accuracy: float | None  # mean agreement with gold (soft: v*g + (1-v)*(1-g)); None: none


@dataclass(frozen=True)
class AggregationResult:
    """Aggregated labels and what EM learnt on the way.

    Attributes:
        labels: (item_id, category) -> (soft P(class 1), confidence in [MIN_WEIGHT, 1]); the
            confidence is the training weight.
        reliability: (annotator, category) -> that annotator's reliability on that category.
        prevalence: category -> estimated P(class 1).
        iterations: category -> EM iterations, both passes together.
        method: ``"dawid-skene"``.
    """

    labels: dict[tuple[str, str], tuple[float, float]]
    reliability: dict[tuple[str, str], AnnotatorReliability]
    prevalence: dict[str, float]
    iterations: dict[str, int]
    method: str = METHOD


@dataclass(frozen=True)
class _Flat:
    """Votes as flat arrays: pairs are (item, category) keys, raters (annotator, category)."""

    keys: list[tuple[str, str]]
    categories: list[str]
    annotators: list[str]
    pair_cat: IntArray  # (pairs,) category of each pair
    pair_votes: IntArray  # (pairs,) number of votes of each pair
    vote_pair: IntArray  # (votes,) pair of each vote
    vote_rater: IntArray  # (votes,) rater of each vote
    value: FloatArray  # (votes,)
    conf: FloatArray  # (votes,)
    rater_ann: IntArray  # (raters,) annotator of each rater
    rater_cat: IntArray  # (raters,) category of each rater

    @property
    def n_pairs(self) -> int:
        return len(self.keys)

    @property
    def n_raters(self) -> int:
        return len(self.rater_ann)


def _flatten(votes: Mapping[tuple[str, str], Sequence[Vote]]) -> _Flat:
    """Index the votes; a value outside [0, 1] or a confidence outside (0, 1] is a LabelError."""
    keys = list(votes)
    cat_index: dict[str, int] = {}
    pair_cat = np.fromiter((cat_index.setdefault(k[1], len(cat_index)) for k in keys),
                           dtype=np.intp, count=len(keys))
    pair_votes = np.fromiter((len(votes[k]) for k in keys), dtype=np.intp, count=len(keys))
    flat = [vote for k in keys for vote in votes[k]]
    ann_index: dict[str, int] = {}
    if flat:
        anns, values, confs = zip(*flat, strict=True)
        try:
            value = np.asarray(values, dtype=np.float64)
            conf = np.asarray(confs, dtype=np.float64)
        except (TypeError, ValueError):
            raise LabelError("a vote's value and confidence must be numbers: value in [0, 1] "
                             "(1 = applies), confidence in (0, 1]") from None
        vote_ann = np.fromiter((ann_index.setdefault(a, len(ann_index)) for a in anns),
                               dtype=np.intp, count=len(flat))
    else:
        value = conf = np.zeros(0)
        vote_ann = np.zeros(0, dtype=np.intp)
    vote_pair = np.repeat(np.arange(len(keys), dtype=np.intp), pair_votes)
    # "not (x >= lo)" rather than "x < lo": NaN fails it too.
    bad = ~((value >= 0.0) & (value <= 1.0) & (conf > 0.0) & (conf <= 1.0))
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        key = keys[vote_pair[j]]
        raise LabelError(
            f"vote {flat[j]!r} on (item, category) {key!r} is invalid: its value must be in "
            "[0, 1] (1 = applies, fractional = unsure) and its confidence in (0, 1]"
        )
    n_cats = max(len(cat_index), 1)
    rater_id = vote_ann * n_cats + pair_cat[vote_pair]
    uniq, vote_rater = np.unique(rater_id, return_inverse=True)
    return _Flat(
        keys=keys, categories=list(cat_index), annotators=list(ann_index), pair_cat=pair_cat,
        pair_votes=pair_votes, vote_pair=vote_pair, vote_rater=vote_rater.astype(np.intp),
        value=value, conf=conf, rater_ann=(uniq // n_cats).astype(np.intp),
        rater_cat=(uniq % n_cats).astype(np.intp),
    )


def _sums(index: IntArray, weights: FloatArray | npt.NDArray[np.bool_] | None,
          n: int) -> FloatArray:
    """Sum of ``weights`` (or count) per value of ``index`` in range(n), as floats."""
    return np.bincount(index, weights, n).astype(np.float64, copy=False)


def _counts(f: _Flat, q: FloatArray,
            mask: npt.NDArray[np.bool_] | None = None) -> tuple[FloatArray, ...]:
    """Weighted soft counts per rater: (says 1 & truth 1, truth 1, says 0 & truth 0, truth 0)."""
    w = f.conf if mask is None else f.conf * mask
    qv = q[f.vote_pair]
    w1 = w * qv
    w0 = w - w1
    r, n = f.vote_rater, f.n_raters
    return (_sums(r, w1 * f.value, n), _sums(r, w1, n),
            _sums(r, w0 * (1.0 - f.value), n), _sums(r, w0, n))


def _smooth(num: FloatArray, den: FloatArray, mean: FloatArray, k: float) -> FloatArray:
    """Posterior mean of a Beta(k*mean, k*(1-mean)) prior after (num of den) soft successes."""
    return np.clip((num + k * mean) / (den + k), _EPS, 1.0 - _EPS)


def _m_step(f: _Flat, q: FloatArray, mean_s: FloatArray, mean_t: FloatArray,
            k: float) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Sensitivity and specificity per rater, prevalence per category."""
    n1, d1, n0, d0 = _counts(f, q)
    n_cats = len(f.categories)
    pos = _sums(f.pair_cat, q, n_cats)
    total = _sums(f.pair_cat, None, n_cats)
    prevalence = np.clip((pos + k / 2) / (total + k), _EPS, 1.0 - _EPS)
    return _smooth(n1, d1, mean_s, k), _smooth(n0, d0, mean_t, k), prevalence


def _e_step(f: _Flat, sens: FloatArray, spec: FloatArray, prevalence: FloatArray,
            gold_idx: IntArray, gold_val: FloatArray) -> FloatArray:
    """Posterior P(truth 1) of each pair, gold pairs clamped."""
    says1 = np.log(sens) - np.log1p(-spec)  # log-likelihood ratio of a "1", per rater
    says0 = np.log1p(-sens) - np.log(spec)  # ... and of a "0"
    r = f.vote_rater
    llr = f.conf * (f.value * says1[r] + (1.0 - f.value) * says0[r])
    prior = np.log(prevalence) - np.log1p(-prevalence)
    logit = _sums(f.vote_pair, llr, f.n_pairs) + prior[f.pair_cat]
    q = 0.5 + 0.5 * np.tanh(0.5 * logit)  # the logistic function, without overflow
    q[gold_idx] = gold_val
    return q


def _em(f: _Flat, q: FloatArray, mean_s: FloatArray, mean_t: FloatArray, k: float,
        gold_idx: IntArray, gold_val: FloatArray, max_iter: int,
        tol: float) -> tuple[FloatArray, IntArray]:
    """EM from posteriors ``q``; a category stops (its posteriors frozen) once it converged.

    Returns:
        The posteriors, and the iterations each category ran.
    """
    n_cats = len(f.categories)
    active = np.ones(n_cats, dtype=bool)
    iterations = np.zeros(n_cats, dtype=np.intp)
    for _ in range(max_iter):
        sens, spec, prevalence = _m_step(f, q, mean_s, mean_t, k)
        q_new = _e_step(f, sens, spec, prevalence, gold_idx, gold_val)
        q_new = np.where(active[f.pair_cat], q_new, q)
        moved = np.zeros(n_cats)
        np.maximum.at(moved, f.pair_cat, np.abs(q_new - q))
        iterations += active
        active &= moved >= tol
        q = q_new
        if not active.any():
            break
    return q, iterations


def _check_args(max_iter: int, tol: float, prior_strength: float) -> None:
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    if not tol > 0.0:
        raise ValueError(f"tol must be > 0 (a change in posterior probability), got {tol!r}")
    if not 0.0 < prior_strength < float("inf"):
        raise ValueError(f"prior_strength must be > 0 (pseudo-votes of the Beta priors; 2.0 is "
                         f"a weak prior), got {prior_strength!r}")


def _gold_arrays(f: _Flat, gold: Mapping[tuple[str, str], float] | None
                 ) -> tuple[IntArray, FloatArray]:
    """Pair indices and truths of the gold items that have votes (others measure nobody)."""
    if not gold:
        return np.zeros(0, dtype=np.intp), np.zeros(0)
    index = {key: i for i, key in enumerate(f.keys)}
    idx: list[int] = []
    val: list[float] = []
    for key, truth in gold.items():
        if isinstance(truth, bool) or not isinstance(truth, numbers.Real) or not 0 <= truth <= 1:
            raise LabelError(f"gold truth of (item, category) {key!r} must be a number in [0, 1] "
                             f"(1 = applies), got {truth!r}")
        if key in index:
            idx.append(index[key])
            val.append(float(truth))
    return np.asarray(idx, dtype=np.intp), np.asarray(val, dtype=np.float64)


def dawid_skene(
    votes: Mapping[tuple[str, str], Sequence[Vote]],
    gold: Mapping[tuple[str, str], float] | None = None,
    max_iter: int = 100,
    tol: float = 1e-6,
    prior_strength: float = 2.0,
) -> AggregationResult:
    """Soft label and confidence of each (item, category), with each annotator's reliability.

    See the module docstring for the model, the priors and the confidence.

    Args:
        votes: (item_id, category) -> its votes, each ``Vote(annotator, value, confidence)``;
            every vote comes in one call, since reliabilities are estimated over all items. A
            pair with no votes gets its category's prevalence and the minimum confidence.
        gold: (item_id, category) -> known truth (0 or 1, or soft in [0, 1]); those pairs'
            posteriors are clamped to it. Gold pairs without votes are ignored.
        max_iter: EM iterations at most, per pass (there are two).
        tol: a category has converged when no posterior of it moves by this much or more.
        prior_strength: pseudo-votes of the Beta priors on sensitivity, specificity and
            prevalence; larger shrinks harder towards the prior (see the module docstring).

    Returns:
        The labels of exactly the keys of ``votes``, reliabilities, prevalences, iterations.

    Raises:
        LabelError: a vote's value is outside [0, 1] or its confidence outside (0, 1], or a gold
            truth is outside [0, 1].
        ValueError: ``max_iter``, ``tol`` or ``prior_strength`` is out of range.
    """
    _check_args(max_iter, tol, prior_strength)
    f = _flatten(votes)
    gold_idx, gold_val = _gold_arrays(f, gold)
    if f.n_pairs == 0:
        return AggregationResult({}, {}, {}, {}, METHOD)
    k = float(prior_strength)

    # Start: the confidence-weighted mean value (0.5 for a pair without votes), gold clamped.
    wsum = _sums(f.vote_pair, f.conf, f.n_pairs)
    wval = _sums(f.vote_pair, f.conf * f.value, f.n_pairs)
    q = np.where(wsum > 0, wval / np.maximum(wsum, _EPS), 0.5)
    q[gold_idx] = gold_val

    generic = np.full(f.n_raters, _PRIOR_MEAN)
    q, iters1 = _em(f, q, generic, generic, k, gold_idx, gold_val, max_iter, tol)

    # Pass 2: each rater's prior mean is its annotator's pooled estimate over other categories.
    n_ann = len(f.annotators)

    def pooled_elsewhere(num: FloatArray, den: FloatArray) -> FloatArray:
        other_num = _sums(f.rater_ann, num, n_ann)[f.rater_ann] - num
        other_den = _sums(f.rater_ann, den, n_ann)[f.rater_ann] - den
        return _smooth(np.maximum(other_num, 0.0), np.maximum(other_den, 0.0), generic, k)

    n1, d1, n0, d0 = _counts(f, q)
    mean_s, mean_t = pooled_elsewhere(n1, d1), pooled_elsewhere(n0, d0)
    q, iters2 = _em(f, q, mean_s, mean_t, k, gold_idx, gold_val, max_iter, tol)
    sens, spec, prevalence = _m_step(f, q, mean_s, mean_t, k)

    # Confidence: |2p - 1| times the chance that at least one vote looked at the truth.
    is_gold = np.zeros(f.n_pairs, dtype=bool)
    is_gold[gold_idx] = True
    checked = (f.pair_votes[f.vote_pair] >= 2) | is_gold[f.vote_pair]
    n1, d1, n0, d0 = _counts(f, q, checked)
    informed = np.abs(_smooth(n1, d1, mean_s, k) + _smooth(n0, d0, mean_t, k) - 1.0)
    looked = f.conf * np.abs(2.0 * f.value - 1.0) * informed[f.vote_rater]
    missed = _sums(f.vote_pair, np.log1p(-np.minimum(looked, 1.0 - _EPS)), f.n_pairs)
    evidence = -np.expm1(missed)
    confidence = np.abs(2.0 * q - 1.0) * evidence
    confidence[gold_idx] = np.abs(2.0 * gold_val - 1.0)
    confidence = np.clip(confidence, MIN_WEIGHT, 1.0)

    # Reliability report, gold accuracy included.
    n_labels = _sums(f.vote_rater, None, f.n_raters)
    truth = q[f.vote_pair]
    agree = f.value * truth + (1.0 - f.value) * (1.0 - truth)
    gold_votes = is_gold[f.vote_pair]
    n_gold = _sums(f.vote_rater, gold_votes, f.n_raters).round().astype(np.intp)
    gold_hits = _sums(f.vote_rater, agree * gold_votes, f.n_raters)
    reliability: dict[tuple[str, str], AnnotatorReliability] = {}
    for r in range(f.n_raters):
        annotator, category = f.annotators[f.rater_ann[r]], f.categories[f.rater_cat[r]]
        reliability[(annotator, category)] = AnnotatorReliability(
            annotator=annotator, category=category, sensitivity=float(sens[r]),
            specificity=float(spec[r]), n_labels=int(n_labels[r]), n_gold=int(n_gold[r]),
            gold_accuracy=float(gold_hits[r] / n_gold[r]) if n_gold[r] else None,
        )
    return AggregationResult(
        labels=dict(zip(f.keys, zip(q.tolist(), confidence.tolist(), strict=True), strict=True)),
        reliability=reliability,
        prevalence={c: float(prevalence[i]) for i, c in enumerate(f.categories)},
        iterations={c: int(iters1[i] + iters2[i]) for i, c in enumerate(f.categories)},
        method=METHOD,
    )


def majority_vote(
    votes: Mapping[tuple[str, str], Sequence[Vote]],
) -> dict[tuple[str, str], tuple[float, float]]:
    """The baseline: confidence-weighted share of votes saying "applies" (value >= 0.5).

    Returns:
        (item_id, category) -> (soft, ``|2 * soft - 1|``); a pair with no votes is (0.5, 0.0).

    Raises:
        LabelError: a vote's value is outside [0, 1] or its confidence outside (0, 1].
    """
    f = _flatten(votes)
    wsum = _sums(f.vote_pair, f.conf, f.n_pairs)
    yes = _sums(f.vote_pair, f.conf * (f.value >= 0.5), f.n_pairs)
    soft = np.where(wsum > 0, yes / np.maximum(wsum, _EPS), 0.5)
    return dict(zip(f.keys, zip(soft.tolist(), np.abs(2.0 * soft - 1.0).tolist(), strict=True),
                    strict=True))


def dawid_skene_weights(votes: Mapping[tuple[str, str], Sequence[Vote]]
                        ) -> dict[tuple[str, str], tuple[float, float]]:
    """Soft label and training weight per (item, category): Dawid-Skene over all annotators
    (their reliability estimated from their agreement). What retraining and the label store's
    :meth:`~bastion.core.labels.LabelStore.aggregated` use."""
    return dict(dawid_skene(votes).labels)
