"""Threshold calibration from reviewed items: block where precision is proven, review below it.

Moderators' aggregated labels of reviewed items say how precise the model really is on a
tenant's traffic. Per (tenant, category), :func:`calibrate` finds the lowest block threshold at
which the precision of the items scored at or above it meets the tenant's target *with
confidence*: the one-sided Clopper-Pearson lower bound of that precision (exact binomial, so it
holds at small counts where a normal approximation does not) must reach the target. Below it, the
review band reaches down to the highest threshold at which block and review together catch
``review_recall`` of the positives (a point estimate).

:func:`propose` turns that into a policy change with its evidence, :func:`render` shows it to a
person, and :func:`apply` writes the accepted proposals into the policy data; nothing changes a
policy until someone applies it.

Limits: every distinct score is a candidate threshold and the lowest one whose bound holds wins,
so the 0.95 is per threshold, not for the scan as a whole (a simultaneous bound would need a
Bonferroni-style correction over the candidates). The reviewed items must be a fair sample of what
the threshold will decide: items reviewed *because* they scored in the review band over-represent
that band, which biases precision near the boundary.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import beta

from bastion.core.errors import PolicyError
from bastion.core.policy import PolicySet, parse_policy

__all__ = ["ThresholdEvidence", "Proposal", "calibrate", "propose", "apply", "render"]

# Points of a proposal's curve: enough to draw a precision/recall line, few enough to read.
CURVE_POINTS = 50
# Thresholds go into the policy with 6 decimals, as core.decision.resolve_policy rounds them.
_DECIMALS = 6


@dataclass(frozen=True)
class ThresholdEvidence:
    """What the reviewed items say about one threshold: the items scored at or above it.

    Attributes:
        threshold: the score; items scored ``>= threshold`` count as above.
        n_above: reviewed items above; ``tp_above`` of them positive (aggregated label >= 0.5).
        precision: ``tp_above / n_above``.
        precision_lower: one-sided Clopper-Pearson lower bound of the precision at the
            calibration's confidence.
        recall: share of all reviewed positives that are above.
    """

    threshold: float
    n_above: int
    tp_above: int
    precision: float
    precision_lower: float
    recall: float


@dataclass(frozen=True)
class Proposal:
    """A proposed threshold change for one (tenant, category), with the evidence behind it.

    ``proposed_block`` is None when there is no proposal (too few reviewed items, no positives,
    or no threshold whose precision bound reaches the target); ``reason`` says which.
    ``current_block`` is None when the policy derives it from a ``target_precision``.
    """

    tenant: str
    category: str
    n_reviewed: int
    n_positive: int
    current_block: float | None
    current_review: float | None
    proposed_block: float | None
    proposed_review: float | None
    target_precision: float
    confidence: float
    review_recall: float
    achieved: ThresholdEvidence | None  # at proposed_block
    reason: str
    curve: list[ThresholdEvidence]  # thinned to <= CURVE_POINTS, for display


def _check_unit(name: str, value: float, *, closed_low: bool = False,
                closed_high: bool = True) -> None:
    low_ok = value >= 0.0 if closed_low else value > 0.0
    high_ok = value <= 1.0 if closed_high else value < 1.0
    if not (low_ok and high_ok):  # also rejects NaN
        lo = "[0" if closed_low else "(0"
        hi = "1]" if closed_high else "1)"
        raise ValueError(f"{name} must be in {lo}, {hi}, got {value!r}")


def _lower_bounds(tp: npt.NDArray[np.int64], n: npt.NDArray[np.int64],
                  confidence: float) -> npt.NDArray[np.float64]:
    """One-sided Clopper-Pearson lower bounds of tp/n: the (1 - confidence) quantile of
    Beta(tp, n - tp + 1); 0 where tp is 0."""
    out = np.zeros(len(tp), dtype=np.float64)
    hit = tp > 0
    out[hit] = beta.ppf(1.0 - confidence, tp[hit], n[hit] - tp[hit] + 1)
    return out


def _evidence(scores: npt.NDArray[np.float64], positive: npt.NDArray[np.bool_],
              confidence: float) -> list[ThresholdEvidence]:
    """Evidence at every distinct score, ascending threshold."""
    if len(scores) == 0:
        return []
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], positive[order]
    tp = np.cumsum(y, dtype=np.int64)
    n = np.arange(1, len(s) + 1, dtype=np.int64)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # ties are decided together
    tp, n, thr = tp[last], n[last], s[last]
    lower = _lower_bounds(tp, n, confidence)
    total = int(y.sum())
    curve = [
        ThresholdEvidence(
            threshold=float(thr[i]), n_above=int(n[i]), tp_above=int(tp[i]),
            precision=float(tp[i] / n[i]), precision_lower=float(lower[i]),
            recall=float(tp[i] / total) if total else 0.0,
        )
        for i in range(len(thr))
    ]
    curve.reverse()
    return curve


def calibrate(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    target_precision: float,
    confidence: float = 0.95,
    review_recall: float = 0.9,
    weights: np.ndarray | None = None,
    min_items: int = 30,
) -> tuple[float | None, float | None, list[ThresholdEvidence]]:
    """Block and review thresholds from reviewed items' scores and aggregated labels.

    Args:
        scores: the model's score of each reviewed item.
        labels: the aggregated human label of each, soft in [0, 1]; positive at >= 0.5.
        target_precision: the precision the block band must have, at ``confidence``.
        confidence: of the one-sided Clopper-Pearson lower bound, in (0, 1).
        review_recall: block and review together must catch this share of the positives.
        weights: label weights (aggregated confidence); only items of weight 0 are dropped,
            the bound counts items, not weights.
        min_items: fewer (kept) items than this: no thresholds.

    Returns:
        ``(block, review, curve)``. ``block`` is the lowest score whose precision lower bound
        reaches the target, None when too few items, no positives or none does. ``review`` is
        the highest score at which recall reaches ``review_recall``, capped at ``block`` (equal
        to it: no review band is needed); None without a block. ``curve`` holds the evidence
        at every distinct score, ascending, also when no threshold is returned.

    Raises:
        ValueError: arrays of different lengths, a score or label out of range, or an
            argument out of range.
    """
    _check_unit("target_precision", target_precision)
    _check_unit("confidence", confidence, closed_high=False)
    _check_unit("review_recall", review_recall)
    if min_items < 1:
        raise ValueError(f"min_items must be at least 1, got {min_items!r}")
    s = np.asarray(scores, dtype=np.float64).ravel()
    lab = np.asarray(labels, dtype=np.float64).ravel()
    if len(s) != len(lab):
        raise ValueError(f"scores and labels differ in length: {len(s)} vs {len(lab)}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite; drop the items the model did not score")
    if not ((lab >= 0.0) & (lab <= 1.0)).all():
        raise ValueError("labels must be in [0, 1] (aggregated soft labels; positive at >= 0.5)")
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64).ravel()
        if len(w) != len(s):
            raise ValueError(f"weights and scores differ in length: {len(w)} vs {len(s)}")
        if not (w >= 0.0).all():
            raise ValueError("weights must be >= 0 (0 drops an item)")
        keep = w > 0.0
        s, lab = s[keep], lab[keep]
    curve = _evidence(s, lab >= 0.5, confidence)
    if len(s) < min_items or not curve or curve[0].tp_above == 0:
        return None, None, curve
    block_i = next(
        (i for i, e in enumerate(curve) if e.precision_lower >= target_precision), None
    )
    if block_i is None:
        return None, None, curve
    # recall falls as the threshold rises: the last point still reaching it is the highest.
    review_i = max(i for i, e in enumerate(curve) if e.recall >= review_recall)
    return curve[block_i].threshold, curve[min(review_i, block_i)].threshold, curve


def _thin(curve: list[ThresholdEvidence], keep: list[float | None],
          points: int = CURVE_POINTS) -> list[ThresholdEvidence]:
    """At most ``points`` evenly spaced points of ``curve``, always with the ``keep`` ones."""
    if len(curve) <= points:
        return list(curve)
    special = {i for i, e in enumerate(curve) if e.threshold in keep}
    n_base = points - len(special)
    while True:  # a special point may coincide with an even one: widen until there are enough
        base = np.linspace(0, len(curve) - 1, n_base).round().astype(int)
        chosen = sorted(special | {int(i) for i in base})
        if len(chosen) >= points:
            break
        n_base += 1
    while len(chosen) > points:  # overshot by rounding: drop even points, never special ones
        chosen.remove(next(i for i in chosen[1:-1] if i not in special))
    return [curve[i] for i in chosen]


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _reason(n: int, n_pos: int, curve: list[ThresholdEvidence], block: float | None,
            review: float | None, target: float, confidence: float, review_recall: float,
            min_items: int) -> str:
    pct = f"{confidence:.0%}"
    if n < min_items:
        return f"{n} reviewed item(s), fewer than {min_items}: thresholds kept"
    if n_pos == 0:
        return f"no positive among {n} reviewed items: precision cannot be measured"
    if block is None:
        best = max(curve, key=lambda e: e.precision_lower)
        return (
            f"no threshold reaches precision {target:g} at {pct} confidence (best lower bound "
            f"{best.precision_lower:.3f} at score {best.threshold:.3f}, {best.tp_above}/"
            f"{best.n_above} positive); more reviewed items or a lower target"
        )
    at = next(e for e in curve if e.threshold == block)
    text = (
        f"lowest score whose precision is >= {target:g} at {pct} confidence: "
        f"{at.tp_above}/{at.n_above} positive above it (lower bound {at.precision_lower:.3f})"
    )
    if review is not None and review < block:
        rev = next(e for e in curve if e.threshold == review)
        text += f"; review from {review:.3f} catches {rev.recall:.0%} of positives"
    else:
        text += f"; blocking alone catches {at.recall:.0%} >= {review_recall:g}, no review band"
    return text


def propose(
    policy: PolicySet,
    reviewed: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]],
    *,
    confidence: float = 0.95,
    min_items: int = 30,
) -> list[Proposal]:
    """One proposal per category of the policy, in policy order, from its reviewed items.

    The target precision of a category is its ``target_precision``, else its gate's
    ``min_precision``, else the file's gate default; the review recall is its
    ``review_recall``. Categories with fewer than ``min_items`` reviewed items (none included)
    get a proposal without thresholds that says so.

    Args:
        policy: the tenants' current policy.
        reviewed: (tenant, category) -> (scores, aggregated labels) of its reviewed items.
        confidence: of the precision lower bound.
        min_items: fewest reviewed items to propose from.

    Raises:
        PolicyError: ``reviewed`` names a (tenant, category) the policy does not have.
    """
    unknown = [k for k in reviewed
               if k[0] not in policy.tenants or k[1] not in policy.tenants[k[0]].categories]
    if unknown:
        raise PolicyError(
            f"reviewed items of {unknown} have no category in the policy; add the category to "
            "the tenant's policy or leave those items out"
        )
    out: list[Proposal] = []
    for tname, tpol in policy.tenants.items():
        for cname, cpol in tpol.categories.items():
            target = (cpol.target_precision or cpol.gate.min_precision
                      or policy.gate.min_precision)
            scores, labels = reviewed.get((tname, cname), (np.zeros(0), np.zeros(0)))
            block, review, curve = calibrate(
                scores, labels, target_precision=target, confidence=confidence,
                review_recall=cpol.review_recall, min_items=min_items,
            )
            n = len(np.asarray(scores).ravel())
            n_pos = curve[0].tp_above if curve else 0
            out.append(Proposal(
                tenant=tname, category=cname, n_reviewed=n, n_positive=n_pos,
                current_block=cpol.block_threshold, current_review=cpol.review_threshold,
                proposed_block=block, proposed_review=review, target_precision=target,
                confidence=confidence, review_recall=cpol.review_recall,
                achieved=next((e for e in curve if e.threshold == block), None),
                reason=_reason(n, n_pos, curve, block, review, target, confidence,
                               cpol.review_recall, min_items),
                curve=_thin(curve, [block, review]),
            ))
    return out


def apply(policy_data: dict[str, Any], proposals: list[Proposal]) -> dict[str, Any]:
    """The policy data with the proposals that have a block threshold applied; a new dict.

    Such a proposal fixes the category's ``block_threshold`` (rounded up to 6 decimals: never
    below the calibrated one) and drops its ``target_precision`` (a fixed threshold replaces a
    derived one). Its ``review_threshold`` becomes the proposed one (rounded down) when that
    lies below the block threshold, and is removed otherwise (no review band). Everything else
    is left as it was.

    Raises:
        PolicyError: a proposal names a (tenant, category) missing from the data, or the
            result does not validate.
    """
    data = copy.deepcopy(policy_data)
    scale = 10 ** _DECIMALS
    for p in proposals:
        if p.proposed_block is None:
            continue
        try:
            cat = data["tenants"][p.tenant]["categories"][p.category]
        except (KeyError, TypeError):
            raise PolicyError(
                f"tenants.{p.tenant}.categories.{p.category}: not in the policy data; the "
                "proposal was made against another policy, propose again"
            ) from None
        block = min(math.ceil(p.proposed_block * scale - 1e-9) / scale, 1.0)
        cat["block_threshold"] = block
        cat.pop("target_precision", None)
        review = p.proposed_review
        if review is not None and review < p.proposed_block:
            cat["review_threshold"] = min(math.floor(review * scale + 1e-9) / scale, block)
        else:
            cat.pop("review_threshold", None)
    parse_policy(data, "<policy with calibrated thresholds>")
    return data


def render(proposals: list[Proposal]) -> str:
    """A plain-text table of the proposals, one row each, for a person to accept or not."""
    head = ["tenant", "category", "n (pos)", "current block/review", "proposed block/review",
            "precision (lower)", "recall", "reason"]
    rows = [head]
    for p in proposals:
        current = ("target " + f"{p.target_precision:g}" if p.current_block is None
                   else _fmt(p.current_block)) + f" / {_fmt(p.current_review)}"
        proposed = f"{_fmt(p.proposed_block)} / {_fmt(p.proposed_review)}"
        a = p.achieved
        prec = "-" if a is None else f"{a.precision:.3f} ({a.precision_lower:.3f})"
        rows.append([p.tenant, p.category, f"{p.n_reviewed} ({p.n_positive})", current,
                     proposed, prec, "-" if a is None else f"{a.recall:.3f}", p.reason])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    lines = []
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r, widths, strict=False)]
        lines.append("  ".join([*cells, r[-1]]).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * len(head[-1]))
    conf = {f"{p.confidence:.0%}" for p in proposals}
    lines.append(f"precision (lower): measured on the reviewed items at or above the proposed "
                 f"block threshold, with its one-sided Clopper-Pearson lower bound at "
                 f"{'/'.join(sorted(conf)) or '-'} confidence")
    return "\n".join(lines)
