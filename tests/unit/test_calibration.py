"""Threshold calibration from reviewed items, on synthetic scores whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from bastion.core.errors import PolicyError
from bastion.core.policy import parse_policy
from bastion.review.calibration import CURVE_POINTS, apply, calibrate, propose, render


def ranked(labels: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Distinct scores falling from 1.0 in the order of ``labels``."""
    y = np.asarray(labels, dtype=np.float64)
    return 1.0 - np.arange(len(y)) / len(y), y


def tied(groups: list[tuple[float, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(score, items, positives) groups: every item of a group has the same score."""
    s = np.concatenate([np.full(n, sc) for sc, n, _ in groups])
    y = np.concatenate([np.r_[np.ones(p), np.zeros(n - p)] for _, n, p in groups])
    return s, y


def test_all_positive_band_needs_29_items_for_precision_0_9() -> None:
    # With tp == n the Clopper-Pearson lower bound is (1 - c)^(1/n): 0.05^(1/29) = 0.902 >= 0.9
    # but 0.05^(1/28) = 0.899; one negative more (29/30: bound 0.851) already fails.
    s, y = ranked([1] * 29 + [0] * 30)
    block, review, curve = calibrate(s, y, target_precision=0.9)
    assert block == pytest.approx(s[28])
    at = next(e for e in curve if e.threshold == block)
    assert (at.n_above, at.tp_above, at.precision, at.recall) == (29, 29, 1.0, 1.0)
    assert at.precision_lower == pytest.approx(0.05 ** (1 / 29))
    assert review == block  # blocking already catches every positive: no review band

    s, y = ranked([1] * 28 + [0] * 30)
    block, review, curve = calibrate(s, y, target_precision=0.9)
    assert block is None and review is None
    assert max(e.precision_lower for e in curve) == pytest.approx(0.05 ** (1 / 28))


def test_clean_separation_blocks_down_to_where_the_bound_stops_holding() -> None:
    # 100 positives above 100 negatives. The block threshold may admit negatives as long as the
    # bound holds; checked through the binomial tail, independently of the Beta quantile.
    s, y = ranked([1] * 100 + [0] * 100)
    block, _, curve = calibrate(s, y, target_precision=0.9)
    assert block is not None
    n = int((s >= block).sum())
    assert n > 100  # some negatives are inside the block band
    assert binom.sf(99, n, 0.9) <= 0.05  # P(>= 100 of n | precision 0.9) is small: bound holds
    assert binom.sf(99, n + 1, 0.9) > 0.05  # one negative more and it does not
    assert all(e.precision_lower < 0.9 for e in curve if e.threshold < block)


def test_point_precision_is_not_enough_at_small_n_but_is_at_large_n() -> None:
    # The top band is 95% positive in both; only with many items is the bound above 0.9.
    small = tied([(0.8, 40, 38), (0.3, 40, 8)])
    block, review, curve = calibrate(*small, target_precision=0.9)
    assert block is None and review is None
    top = next(e for e in curve if e.threshold == 0.8)
    assert top.precision == 0.95 and top.precision_lower < 0.9

    large = tied([(0.8, 2000, 1900), (0.3, 2000, 400)])
    block, review, curve = calibrate(*large, target_precision=0.9)
    assert block == 0.8
    top = next(e for e in curve if e.threshold == 0.8)
    assert 0.9 <= top.precision_lower < 0.95
    # blocking catches 1900/2300 = 83% < 90% of positives: review reaches down to 0.3
    assert top.recall == pytest.approx(1900 / 2300)
    assert review == 0.3


def test_higher_confidence_never_lowers_the_block_threshold() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(3000) < 0.3).astype(float)
    s = 1 / (1 + np.exp(-(2.5 * (2 * y - 1) + rng.normal(0, 1.5, len(y)))))
    blocks, lowers = [], []
    for c in (0.5, 0.8, 0.9, 0.95, 0.99, 0.999):
        block, _, curve = calibrate(s, y, target_precision=0.9, confidence=c)
        blocks.append(math.inf if block is None else block)
        lowers.append(np.array([e.precision_lower for e in curve]))
    assert blocks == sorted(blocks) and blocks[0] < blocks[-1]
    for a, b in zip(lowers, lowers[1:], strict=False):
        assert (b <= a + 1e-12).all()


def test_min_items_and_weight_zero_items() -> None:
    s, y = ranked([1] * 30)
    assert calibrate(s, y, target_precision=0.9)[0] == pytest.approx(s[-1])
    assert calibrate(s[:29], y[:29], target_precision=0.9)[0] is None
    assert calibrate(s[:29], y[:29], target_precision=0.9, min_items=29)[0] is not None
    w = np.ones(30)
    w[0] = 0.0  # a dropped item: 29 left
    block, _, curve = calibrate(s, y, target_precision=0.9, weights=w)
    assert block is None and curve[0].n_above == 29


def test_soft_labels_are_positive_at_one_half() -> None:
    s, _ = ranked([0] * 40)
    soft = np.r_[np.full(30, 0.5), np.full(10, 0.49)]
    _, _, curve = calibrate(s, soft, target_precision=0.9)
    assert curve[0].tp_above == 30


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"confidence": 1.0}, r"confidence must be in \(0, 1\)"),
    ({"target_precision": 0.0}, r"target_precision must be in \(0, 1\]"),
    ({"min_items": 0}, "min_items must be at least 1"),
    ({"weights": np.ones(3)}, "weights and scores differ in length: 3 vs 4"),
])
def test_bad_arguments_are_named(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"target_precision": 0.9, **kwargs}
    with pytest.raises(ValueError, match=match):
        calibrate(np.ones(4), np.ones(4), **args)  # type: ignore[arg-type]


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="differ in length: 4 vs 3"):
        calibrate(np.ones(4), np.ones(3), target_precision=0.9)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 1\]"):
        calibrate(np.ones(2), np.array([0.0, 2.0]), target_precision=0.9)
    with pytest.raises(ValueError, match="scores must be finite"):
        calibrate(np.array([np.nan, 1.0]), np.ones(2), target_precision=0.9)


POLICY = {
    "gate": {"min_precision": 0.85},
    "tenants": {
        "acme": {"categories": {
            "hate": {"block_threshold": 0.9, "review_threshold": 0.5, "severity": 3.0},
            "spam": {"target_precision": 0.9, "review_recall": 0.8},
        }},
        "other": {"categories": {"hate": {"block_threshold": 0.7}}},
    },
}


def reviewed() -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    return {
        ("acme", "hate"): tied([(0.8, 2000, 1900), (0.3, 2000, 400)]),
        ("acme", "spam"): ranked([1] * 5),
    }


def test_propose_one_per_category_with_evidence_and_reasons() -> None:
    props = propose(parse_policy(POLICY), reviewed())
    assert [(p.tenant, p.category) for p in props] == [
        ("acme", "hate"), ("acme", "spam"), ("other", "hate")]
    hate, spam, other = props
    assert (hate.current_block, hate.current_review) == (0.9, 0.5)
    assert (hate.proposed_block, hate.proposed_review) == (0.8, 0.3)
    assert hate.target_precision == 0.85  # no target_precision: the file's gate default
    assert (hate.n_reviewed, hate.n_positive) == (4000, 2300)
    assert hate.achieved is not None and hate.achieved.threshold == 0.8
    assert hate.achieved.precision_lower >= 0.85
    assert "review from 0.300 catches 100% of positives" in hate.reason
    assert len(hate.curve) <= CURVE_POINTS
    assert spam.current_block is None and spam.target_precision == 0.9
    assert spam.proposed_block is None and spam.achieved is None
    assert spam.reason == "5 reviewed item(s), fewer than 30: thresholds kept"
    assert other.n_reviewed == 0 and other.proposed_block is None


def test_propose_target_unreachable_says_so_and_unknown_keys_raise() -> None:
    data = {"tenants": {"acme": {"categories": {"hate": {"target_precision": 0.99}}}}}
    (p,) = propose(parse_policy(data), {("acme", "hate"): tied([(0.8, 50, 45), (0.2, 50, 5)])})
    assert p.proposed_block is None
    assert p.reason.startswith("no threshold reaches precision 0.99 at 95% confidence")
    with pytest.raises(PolicyError, match=r"\('acme', 'spam'\)\] have no category in the policy"):
        propose(parse_policy(data), {("acme", "spam"): (np.ones(3), np.ones(3))})


def test_proposal_curve_is_thinned_and_keeps_the_proposed_points() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(2000) < 0.4).astype(float)
    s = np.clip(0.5 + 0.2 * (2 * y - 1) + rng.normal(0, 0.2, len(y)), 0, 1)
    data = {"tenants": {"acme": {"categories": {"hate": {"target_precision": 0.9}}}}}
    (p,) = propose(parse_policy(data), {("acme", "hate"): (s, y)})
    assert p.proposed_block is not None and p.proposed_review is not None
    assert p.proposed_review < p.proposed_block
    assert len(p.curve) == CURVE_POINTS
    thresholds = [e.threshold for e in p.curve]
    assert thresholds == sorted(thresholds)
    assert p.proposed_block in thresholds and p.proposed_review in thresholds


def test_apply_fixes_thresholds_and_leaves_the_rest_alone() -> None:
    policy = parse_policy(POLICY)
    data = {**POLICY, "tenants": {**POLICY["tenants"]}}
    data["tenants"]["acme"] = {"categories": {
        "hate": dict(POLICY["tenants"]["acme"]["categories"]["hate"]),
        "spam": dict(POLICY["tenants"]["acme"]["categories"]["spam"]),
    }}
    items = reviewed()
    items[("acme", "spam")] = ranked([1] * 40 + [0] * 60)
    props = propose(policy, items)
    before = repr(data)
    out = apply(data, props)
    assert repr(data) == before  # a new dict; the input is not modified
    new = parse_policy(out)
    hate = new.tenants["acme"].categories["hate"]
    assert (hate.block_threshold, hate.review_threshold, hate.severity) == (0.8, 0.3, 3.0)
    spam = new.tenants["acme"].categories["spam"]
    assert spam.target_precision is None  # a fixed threshold replaces the derived one
    assert spam.block_threshold == pytest.approx(props[1].proposed_block, abs=1e-6)
    assert spam.block_threshold >= props[1].proposed_block  # rounded up, never below
    assert spam.review_threshold is None  # blocking alone reaches review_recall 0.8
    assert spam.review_recall == 0.8
    assert out["tenants"]["other"] == POLICY["tenants"]["other"]
    assert new.tenants["other"] == policy.tenants["other"]
    assert out["gate"] == POLICY["gate"]


def test_apply_refuses_a_proposal_for_another_policy() -> None:
    props = propose(parse_policy(POLICY), reviewed())
    data = {"tenants": {"other": {"categories": {"hate": {"block_threshold": 0.7}}}}}
    with pytest.raises(PolicyError, match=r"tenants\.acme\.categories\.hate: not in the policy"):
        apply(data, props)


def test_render_shows_every_proposal() -> None:
    text = render(propose(parse_policy(POLICY), reviewed()))
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["tenant", "category", "n"]
    hate = next(line for line in lines if line.startswith("acme") and " hate " in line)
    assert "4000 (2300)" in hate
    assert "0.900 / 0.500" in hate and "0.800 / 0.300" in hate
    assert "0.950 (0.9" in hate  # precision 1900/2000 and its lower bound
    spam = next(line for line in lines if " spam " in line)
    assert "target 0.9 / -" in spam and "- / -" in spam and "fewer than 30" in spam
    assert "Clopper-Pearson lower bound at 95% confidence" in text
