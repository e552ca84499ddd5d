"""Dawid-Skene aggregation on simulated moderators whose confusion matrices we know."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import pytest

from bastion.core.aggregation import MIN_WEIGHT, AggregationResult, Vote, dawid_skene, majority_vote
from bastion.core.errors import LabelError

Votes = dict[tuple[str, str], list[Vote]]

# (sensitivity, specificity): expert, good, cautious, near-random, adversarial.
POOL = {"a0": (0.95, 0.95), "a1": (0.9, 0.8), "a2": (0.6, 0.9), "a3": (0.55, 0.55),
        "a4": (0.2, 0.2)}


def simulate(rng: np.random.Generator, n_items: int, pool: dict[str, tuple[float, float]],
             prevalence: float = 0.3, per_item: int = 3, category: str = "spam",
             prefix: str = "i") -> tuple[Votes, dict[str, bool]]:
    """Hard votes of ``per_item`` random annotators of ``pool`` per item; returns the truth."""
    names = list(pool)
    sens = np.array([pool[a][0] for a in names])
    spec = np.array([pool[a][1] for a in names])
    truth = rng.random(n_items) < prevalence
    who = np.argsort(rng.random((n_items, len(names))), axis=1)[:, :per_item]
    p_one = np.where(truth[:, None], sens[who], 1.0 - spec[who])
    says = rng.random((n_items, per_item)) < p_one
    votes = {(f"{prefix}{i}", category): [Vote(names[a], float(s), 1.0)
                                          for a, s in zip(who[i], says[i], strict=True)]
             for i in range(n_items)}
    return votes, {f"{prefix}{i}": bool(t) for i, t in enumerate(truth)}


def accuracy(labels: dict[tuple[str, str], tuple[float, float]], truth: dict[str, bool],
             category: str = "spam") -> float:
    return float(np.mean([(labels[(i, category)][0] > 0.5) == t for i, t in truth.items()]))


def assert_sane(result: AggregationResult) -> None:
    """No NaN anywhere; every number in its range."""
    for soft, conf in result.labels.values():
        assert 0.0 <= soft <= 1.0 and MIN_WEIGHT <= conf <= 1.0
    for rel in result.reliability.values():
        assert 0.0 < rel.sensitivity < 1.0 and 0.0 < rel.specificity < 1.0
        assert rel.gold_accuracy is None or 0.0 <= rel.gold_accuracy <= 1.0
    assert all(0.0 < p < 1.0 for p in result.prevalence.values())
    assert all(it >= 1 for it in result.iterations.values())


# -- recovering the simulated moderators ----------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_each_annotators_confusion_matrix(seed: int) -> None:
    # 6000 items, not 2000: with 2000 the sampling error alone of a sensitivity (~360 positives
    # per annotator) is ~0.03, so +-0.06 over ten numbers would fail on half of all seeds.
    votes, _ = simulate(np.random.default_rng(seed), 6000, POOL)
    result = dawid_skene(votes)
    assert_sane(result)
    for annotator, (sens, spec) in POOL.items():
        rel = result.reliability[(annotator, "spam")]
        assert rel.sensitivity == pytest.approx(sens, abs=0.06), annotator
        assert rel.specificity == pytest.approx(spec, abs=0.06), annotator
        assert rel.n_labels > 3000 and rel.n_gold == 0 and rel.gold_accuracy is None
    assert result.prevalence["spam"] == pytest.approx(0.3, abs=0.03)
    assert result.method == "dawid-skene"


def test_beats_majority_vote() -> None:
    votes, truth = simulate(np.random.default_rng(0), 2000, POOL)
    ds = accuracy(dawid_skene(votes).labels, truth)
    mv = accuracy(majority_vote(votes), truth)
    assert ds > mv
    assert ds > 0.88  # majority vote is ~0.77: the adversary is outvoted, DS reads them inverted


def test_reliability_is_per_category() -> None:
    rng = np.random.default_rng(3)
    others = {"a1": (0.9, 0.85), "a2": (0.85, 0.9), "a3": (0.9, 0.9)}
    spam, _ = simulate(rng, 3000, {"x": (0.95, 0.95), **others}, category="spam")
    hate, _ = simulate(rng, 3000, {"x": (0.6, 0.55), **others}, category="hate")
    result = dawid_skene({**spam, **hate})
    good, bad = result.reliability[("x", "spam")], result.reliability[("x", "hate")]
    assert good.sensitivity == pytest.approx(0.95, abs=0.06)
    assert bad.sensitivity == pytest.approx(0.6, abs=0.06)
    assert bad.specificity == pytest.approx(0.55, abs=0.06)
    assert set(result.iterations) == set(result.prevalence) == {"spam", "hate"}


def test_few_labels_in_a_category_shrink_towards_the_annotators_other_categories() -> None:
    rng = np.random.default_rng(4)
    others = {"a1": (0.9, 0.9), "a2": (0.9, 0.9), "a3": (0.85, 0.9)}
    spam, _ = simulate(rng, 2000, {"newbie": (0.2, 0.2), **others}, category="spam")
    hate, truth = simulate(rng, 2000, others, category="hate")
    # Three correct hate labels: alone they say "reliable", spam says "adversarial".
    for i in range(3):
        hate[(f"i{i}", "hate")].append(Vote("newbie", float(truth[f"i{i}"]), 1.0))
    alone = dawid_skene(hate).reliability[("newbie", "hate")]
    pooled = dawid_skene({**spam, **hate}).reliability[("newbie", "hate")]
    assert pooled.sensitivity + pooled.specificity < alone.sensitivity + alone.specificity - 0.2
    # With plenty of labels the category's own evidence wins: pooling barely moves a1.
    a1_alone = dawid_skene(hate).reliability[("a1", "hate")]
    a1_pooled = dawid_skene({**spam, **hate}).reliability[("a1", "hate")]
    assert a1_pooled.sensitivity == pytest.approx(a1_alone.sensitivity, abs=0.01)


# -- gold items -----------------------------------------------------------------------------

def test_gold_items_are_clamped_and_measure_the_moderators() -> None:
    rng = np.random.default_rng(5)
    votes, truth = simulate(rng, 3000, POOL)
    gold = {(i, "spam"): float(truth[i]) for i in list(truth)[:1000]}
    # One gold item every vote contradicts: still its known truth, with full confidence.
    votes[("i0", "spam")] = [Vote(a, 1.0 - gold[("i0", "spam")], 1.0) for a in ("a0", "a1")]
    result = dawid_skene(votes, gold=gold)
    assert_sane(result)
    assert result.labels[("i0", "spam")] == (gold[("i0", "spam")], 1.0)
    assert all(result.labels[key][0] == g for key, g in gold.items())
    for annotator, (sens, spec) in POOL.items():
        rel = result.reliability[(annotator, "spam")]
        on_gold = [(v.value, gold[key]) for key, vs in votes.items() if key in gold
                   for v in vs if v.annotator == annotator]
        assert rel.n_gold == len(on_gold) > 400
        assert rel.gold_accuracy == pytest.approx(np.mean([v == g for v, g in on_gold]))
        assert rel.gold_accuracy == pytest.approx(0.3 * sens + 0.7 * spec, abs=0.06)


def test_gold_without_votes_is_ignored_and_bad_gold_is_refused() -> None:
    votes: Votes = {("i1", "spam"): [Vote("a", 1.0, 1.0)]}
    result = dawid_skene(votes, gold={("nowhere", "spam"): 1.0})
    assert set(result.labels) == {("i1", "spam")}
    with pytest.raises(LabelError, match=r"gold truth of .*'i1'.* must be a number in \[0, 1\]"):
        dawid_skene(votes, gold={("i1", "spam"): 2.0})


# -- confidence and soft inputs -------------------------------------------------------------

@pytest.fixture(scope="module")
def background() -> Votes:
    """Enough simulated items that one probe item does not move the reliabilities."""
    votes, _ = simulate(np.random.default_rng(6), 2000, POOL)
    return votes


def probe(background: Votes, probe_votes: Sequence[Vote]) -> tuple[float, float]:
    return dawid_skene({**background, ("probe", "spam"): list(probe_votes)}).labels[
        ("probe", "spam")]


def test_one_vote_is_less_certain_than_three_agreeing_ones(background: Votes) -> None:
    one_soft, one_conf = probe(background, [Vote("a0", 1.0, 1.0)])
    three_soft, three_conf = probe(background, [Vote(a, 1.0, 1.0) for a in ("a0", "a1", "a2")])
    assert 0.5 < one_soft < three_soft
    assert one_conf < three_conf
    assert one_conf < 0.9  # the expert alone: likely, not certain
    assert three_conf > 0.95


def test_a_softer_value_moves_the_label_towards_unsure(background: Votes) -> None:
    sure, fairly, unsure = (probe(background, [Vote("a0", v, 1.0), Vote("a1", v, 1.0)])
                            for v in (1.0, 0.7, 0.5))
    assert sure[0] > fairly[0] > unsure[0]
    assert sure[1] > fairly[1] > unsure[1]


def test_a_less_confident_vote_counts_less(background: Votes) -> None:
    # a0 says yes and a1 says no; the less sure a0 is, the lower the label.
    softs = [probe(background, [Vote("a0", 1.0, c), Vote("a1", 0.0, 1.0)])[0]
             for c in (1.0, 0.5, 0.1)]
    assert softs[0] > softs[1] > softs[2]
    # One vote: less confidence, less weight.
    assert (probe(background, [Vote("a0", 1.0, 0.3)])[1]
            < probe(background, [Vote("a0", 1.0, 1.0)])[1])


def test_the_adversary_is_read_inverted(background: Votes) -> None:
    assert probe(background, [Vote("a4", 1.0, 1.0)])[0] < 0.5


def test_annotator_names_and_vote_order_do_not_matter(background: Votes) -> None:
    renamed = {key: [Vote("m_" + v.annotator, v.value, v.confidence) for v in reversed(vs)]
               for key, vs in background.items()}
    a, b = dawid_skene(background), dawid_skene(renamed)
    assert a.labels.keys() == b.labels.keys()
    for key, (soft, conf) in a.labels.items():
        assert b.labels[key] == pytest.approx((soft, conf), abs=1e-9)


# -- degenerate input -----------------------------------------------------------------------

def test_empty_input_gives_an_empty_result() -> None:
    assert dawid_skene({}) == AggregationResult({}, {}, {}, {}, "dawid-skene")
    assert majority_vote({}) == {}


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_a_category_where_every_vote_agrees(value: float) -> None:
    votes = {(f"i{i}", "spam"): [Vote(a, value, 1.0) for a in ("a", "b", "c")]
             for i in range(50)}
    result = dawid_skene(votes)
    assert_sane(result)
    for soft, conf in result.labels.values():
        assert soft == pytest.approx(value, abs=0.01) and conf > 0.9


def test_one_annotator_alone_is_followed_but_not_trusted_blindly() -> None:
    rng = np.random.default_rng(7)
    values = rng.random(200) < 0.3
    votes = {(f"i{i}", "spam"): [Vote("solo", float(v), 1.0)] for i, v in enumerate(values)}
    result = dawid_skene(votes)
    assert_sane(result)
    for i, v in enumerate(values):
        soft, conf = result.labels[(f"i{i}", "spam")]
        assert (soft > 0.5) == v
        # Nobody cross-checks solo: their informedness is the prior's 0.5, not their own ~1.
        assert conf <= 0.5
    assert result.reliability[("solo", "spam")].n_labels == 200


def test_an_item_without_votes_gets_the_prevalence_and_the_minimum_weight() -> None:
    votes: Votes = {("i1", "spam"): [Vote("a", 1.0, 1.0), Vote("b", 1.0, 1.0)],
                    ("i2", "spam"): [], ("i3", "hate"): []}
    result = dawid_skene(votes)
    assert_sane(result)
    assert result.labels[("i2", "spam")] == pytest.approx((result.prevalence["spam"], MIN_WEIGHT))
    assert result.labels[("i3", "hate")] == pytest.approx((0.5, MIN_WEIGHT))


@pytest.mark.parametrize("seed", range(20))
def test_no_nan_on_random_awkward_input(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    annotators = [f"a{j}" for j in range(int(rng.integers(1, 4)))]
    categories = ["spam", "hate", "self-harm"][: int(rng.integers(1, 4))]
    awkward_values = [0.0, 1.0, 0.5, 1e-12, 1.0 - 1e-12]
    awkward_confs = [1.0, 1e-12, 0.5, 1e-300]
    votes: Votes = {}
    for i in range(int(rng.integers(1, 30))):
        for c in categories:
            if rng.random() < 0.3:
                continue
            votes[(f"i{i}", c)] = [
                Vote(str(rng.choice(annotators)),
                     float(rng.choice(awkward_values)) if rng.random() < 0.5 else rng.random(),
                     float(rng.choice(awkward_confs)) if rng.random() < 0.5 else
                     float(1.0 - rng.random()))
                for _ in range(int(rng.integers(0, 4)))
            ]
    gold = {key: float(rng.random() < 0.5) for key in votes if rng.random() < 0.2}
    result = dawid_skene(votes, gold=gold, prior_strength=float(rng.choice([1e-6, 2.0, 50.0])))
    assert_sane(result)
    assert set(result.labels) == set(votes)
    assert all(math.isfinite(x) for pair in result.labels.values() for x in pair)


# -- input checks ---------------------------------------------------------------------------

@pytest.mark.parametrize("vote", [Vote("a", 1.5, 1.0), Vote("a", float("nan"), 1.0),
                                  Vote("a", 1.0, 0.0), Vote("a", 1.0, 1.1)])
def test_an_invalid_vote_is_refused(vote: Vote) -> None:
    votes: Votes = {("i1", "spam"): [Vote("b", 1.0, 1.0), vote]}
    with pytest.raises(LabelError, match=r"on \(item, category\) \('i1', 'spam'\) is invalid"):
        dawid_skene(votes)
    with pytest.raises(LabelError, match="is invalid"):
        majority_vote(votes)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"max_iter": 0}, "max_iter must be an integer >= 1"),
    ({"tol": 0.0}, "tol must be > 0"),
    ({"prior_strength": 0.0}, "prior_strength must be > 0"),
])
def test_invalid_settings_are_refused(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dawid_skene({("i1", "spam"): [Vote("a", 1.0, 1.0)]}, **kwargs)  # type: ignore[arg-type]


# -- the baseline ---------------------------------------------------------------------------

def test_majority_vote_is_the_confidence_weighted_share_saying_applies() -> None:
    votes: Votes = {("i1", "spam"): [Vote("a", 1.0, 1.0), Vote("b", 0.0, 0.5),
                                     Vote("c", 0.6, 0.5)],
                    ("i2", "spam"): [Vote("a", 0.4, 1.0)]}
    assert majority_vote(votes) == {("i1", "spam"): (0.75, 0.5), ("i2", "spam"): (0.0, 1.0)}


# -- scale ----------------------------------------------------------------------------------

def test_runtime_at_scale(capsys: pytest.CaptureFixture[str]) -> None:
    """100k (item, category) pairs x 5 votes; prints the time, asserts no timing."""
    rng = np.random.default_rng(8)
    n, per_item, n_annotators = 100_000, 5, 40
    categories = ["spam", "hate", "self-harm", "violence"]
    sens = rng.uniform(0.6, 0.98, (n_annotators, len(categories)))
    spec = rng.uniform(0.6, 0.98, (n_annotators, len(categories)))
    cat = rng.integers(0, len(categories), n)
    truth = rng.random(n) < np.array([0.3, 0.1, 0.05, 0.2])[cat]
    who = np.argsort(rng.random((n, n_annotators)), axis=1)[:, :per_item]
    p_one = np.where(truth[:, None], sens[who, cat[:, None]], 1.0 - spec[who, cat[:, None]])
    says = (rng.random((n, per_item)) < p_one).astype(float).tolist()
    confs = rng.choice([1.0, 0.8, 0.6], (n, per_item)).tolist()
    names = [f"mod{a}" for a in range(n_annotators)]
    votes = {(f"i{i}", categories[cat[i]]): [Vote(names[a], v, c) for a, v, c in
                                             zip(who[i].tolist(), says[i], confs[i], strict=True)]
             for i in range(n)}
    start = time.perf_counter()
    result = dawid_skene(votes)
    ds_s = time.perf_counter() - start
    start = time.perf_counter()
    baseline = majority_vote(votes)
    mv_s = time.perf_counter() - start
    assert len(result.labels) == len(baseline) == n
    assert all(math.isfinite(s) and math.isfinite(c) for s, c in result.labels.values())
    keys = list(votes)
    ds_acc = np.mean([(result.labels[k][0] > 0.5) == t for k, t in zip(keys, truth, strict=True)])
    mv_acc = np.mean([(baseline[k][0] > 0.5) == t for k, t in zip(keys, truth, strict=True)])
    with capsys.disabled():
        print(f"\n[aggregation] {n} pairs x {per_item} votes: dawid_skene {ds_s:.2f} s "
              f"(iterations {result.iterations}, accuracy {ds_acc:.4f}); "
              f"majority_vote {mv_s:.2f} s (accuracy {mv_acc:.4f})")
