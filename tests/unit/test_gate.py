"""The promotion gate on small synthetic held-out data: who passes, who fails, and why."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from bastion.core.decision import resolve_policy
from bastion.core.policy import PolicySet, parse_policy
from bastion.registry.evaluation import (
    CategoryEvaluation,
    VersionEvaluation,
    evaluate_version,
    pr_curve,
)
from bastion.registry.gate import run_gate
from bastion.registry.report import Check, GateReport

HEADS = ["hate", "spam", "acme/spam"]
CATEGORIES = ["hate", "spam", "violence"]
POLICY_DATA: dict = {
    "gate": {"min_precision": 0.8, "recall_tolerance": 0.05, "max_ece": 0.1,
             "min_positives": 10, "max_p99_ms": 50},
    "tenants": {
        "acme": {"categories": {
            "hate": {"block_threshold": 0.5},
            "spam": {"block_threshold": 0.5, "head": "acme/spam"},
        }},
        # threshold derived from each version's own held-out curve; min_precision falls back
        # to this target precision
        "kids": {"categories": {"hate": {"target_precision": 0.85}}},
    },
}
POLICY = parse_policy(POLICY_DATA)
N = 600


class Data:
    """Calibrated probabilities per category and labels drawn from them (seeded)."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        # Beta(0.3, 0.3) puts most mass near 0 and 1: a confident, well-separated model
        self.p = self.rng.beta(0.3, 0.3, size=(N, len(CATEGORIES)))
        self.targets = (self.rng.random((N, len(CATEGORIES))) < self.p).astype(np.float32)
        self.mask = np.ones((N, len(CATEGORIES)), dtype=bool)

    def probs(self, category: str, noise: float = 0.0) -> np.ndarray:
        """The true probabilities; a ``noise`` fraction of items get a uniform random score."""
        p = self.p[:, CATEGORIES.index(category)]
        if noise:
            p = np.where(self.rng.random(N) < noise, self.rng.random(N), p)
        return p


DATA = Data()


def scores_for(noise: float = 0.0, heads: list[str] = HEADS) -> np.ndarray:
    """One column per head; both spam heads are judged against the 'spam' labels."""
    return np.stack([DATA.probs(h.rsplit("/", 1)[-1], noise) for h in heads], axis=1)


def meta_for(version: str, scores: np.ndarray, heads: list[str]) -> dict:
    """Model metadata with held-out curves in training's format, one per head."""
    curves = {}
    for j, head in enumerate(heads):
        y = DATA.targets[:, CATEGORIES.index(head.rsplit("/", 1)[-1])] >= 0.5
        curves[head] = pr_curve(y.astype(np.float64), scores[:, j].astype(np.float64))
    return {"version": version, "curves": curves}


def evaluation(
    version: str, noise: float = 0.0, heads: list[str] = HEADS, p99: float | None = 12.0,
    policy: PolicySet = POLICY, mask: np.ndarray | None = None, meta: dict | None = None,
) -> VersionEvaluation:
    scores = scores_for(noise, heads)
    return evaluate_version(
        version, heads, meta if meta is not None else meta_for(version, scores, heads), scores,
        DATA.targets, DATA.mask if mask is None else mask, CATEGORIES, policy, p99_ms=p99,
    )


def check(report: GateReport, tenant: str | None, category: str | None, name: str) -> Check:
    (found,) = [c for c in report.checks
                if (c.tenant, c.category, c.name) == (tenant, category, name)]
    return found


CHAMPION = evaluation("1")


# -- evaluate_version --------------------------------------------------------------------------
def test_tenant_owned_head_is_judged_against_the_category_labels() -> None:
    ev = CHAMPION.categories[("acme", "spam")]
    y = DATA.targets[:, 1] >= 0.5
    pred = np.round(scores_for()[:, 2], 6) >= 0.5
    assert ev.head_key == "acme/spam"
    assert (ev.n, ev.n_pos) == (N, int(y.sum()))
    assert ev.precision_at_block == pytest.approx((pred & y).sum() / pred.sum())
    assert ev.recall_at_block == pytest.approx((pred & y).sum() / y.sum())


def test_target_precision_threshold_is_what_serving_resolves() -> None:
    scores = scores_for()
    meta = meta_for("1", scores, HEADS)
    served = resolve_policy(POLICY, HEADS, meta)["kids"].category("hate")
    assert served is not None
    ev = CHAMPION.categories[("kids", "hate")]
    assert ev.block_threshold == served.block_threshold
    assert ev.block_threshold != 0.5  # derived from the curve, not acme's fixed threshold
    assert ev.precision_at_block is not None and ev.precision_at_block >= 0.85


def test_masked_rows_are_left_out() -> None:
    mask = DATA.mask.copy()
    mask[100:, 0] = False
    ev = evaluation("1", mask=mask).categories[("acme", "hate")]
    assert (ev.n, ev.n_pos) == (100, int((DATA.targets[:100, 0] >= 0.5).sum()))


def test_missing_head_leaves_the_other_categories_evaluated() -> None:
    cand = evaluation("2", heads=["hate", "spam"])
    missing = cand.categories[("acme", "spam")]
    assert missing.head_key is None and missing.precision_at_block is None
    assert missing.note is not None and "no head 'acme/spam'" in missing.note
    assert cand.categories[("acme", "hate")].precision_at_block is not None
    assert cand.categories[("kids", "hate")].block_threshold is not None


def test_evaluate_version_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"scores has shape \(600, 2\), expected \(n_items, 3\)"):
        evaluate_version("2", HEADS, {}, scores_for()[:, :2], DATA.targets, DATA.mask,
                         CATEGORIES, POLICY)
    with pytest.raises(ValueError, match=r"mask has shape \(600, 2\), expected \(600, 3\)"):
        evaluate_version("2", HEADS, {}, scores_for(), DATA.targets, DATA.mask[:, :2],
                         CATEGORIES, POLICY)


# -- run_gate ----------------------------------------------------------------------------------
def test_good_candidate_passes() -> None:
    report = run_gate(evaluation("2"), CHAMPION, POLICY)
    assert report.passed, report.to_table()
    assert report.failures() == []
    assert {c.name for c in report.checks} == {
        "category_present", "precision_at_block", "recall_vs_champion", "calibration_ece",
        "auroc_vs_champion", "quality_evidence", "p99_latency",
    }
    assert all(c.passed is True for c in report.checks)
    assert report.to_table().startswith("PASSED v2 vs champion v1: ")


def test_noisy_candidate_fails_precision_and_recall_naming_the_category() -> None:
    report = run_gate(evaluation("2", noise=0.5), CHAMPION, POLICY)
    assert not report.passed
    failed = {(c.tenant, c.category, c.name) for c in report.failures()}
    assert {("acme", "hate", "precision_at_block"), ("acme", "hate", "recall_vs_champion"),
            ("kids", "hate", "recall_vs_champion"), ("acme", "hate", "calibration_ece")} <= failed
    precision = check(report, "acme", "hate", "precision_at_block")
    assert re.fullmatch(
        r"acme/hate: precision at block threshold 0\.\d+ < required 0\.8 "
        r"\(threshold 0\.5, n_pos=\d+\)", precision.message)
    recall = check(report, "kids", "hate", "recall_vs_champion")
    assert recall.value is not None and recall.threshold is not None
    assert recall.value < recall.threshold
    assert "< champion v1's" in recall.message and "tolerance 0.05" in recall.message

    table = report.to_table()
    verdict, _, header, first = table.splitlines()[:4]
    assert verdict.startswith("REJECTED v2 vs champion v1: ")
    assert "acme/hate" in verdict and "kids/hate" in verdict
    assert header.split() == ["tenant", "category", "check", "value", "threshold", "result"]
    assert first.split()[-1] == "FAIL"  # failures first
    assert precision.message in table


def test_candidate_missing_a_head_fails_category_present() -> None:
    report = run_gate(evaluation("2", heads=["hate", "spam"]), CHAMPION, POLICY)
    assert not report.passed
    (failure,) = report.failures()
    assert (failure.tenant, failure.category, failure.name) == ("acme", "spam",
                                                               "category_present")
    assert failure.message.startswith("acme/spam: candidate v2 has no head")
    assert "champion v1 scores it with head 'acme/spam'" in failure.message
    assert "no category may silently disappear" in failure.message
    # its other checks are skipped; the other categories are still checked
    assert [c.name for c in report.checks if (c.tenant, c.category) == ("acme", "spam")] == [
        "category_present"]
    assert check(report, "acme", "hate", "precision_at_block").passed is True
    assert "acme/spam" in report.to_table().splitlines()[0]


def test_category_the_champion_scored_may_not_vanish_with_the_policy() -> None:
    data = json.loads(json.dumps(POLICY_DATA))
    del data["tenants"]["acme"]["categories"]["spam"]
    smaller = parse_policy(data)
    report = run_gate(evaluation("2", heads=["hate", "spam"], policy=smaller), CHAMPION, smaller)
    (failure,) = report.failures()
    assert (failure.tenant, failure.category, failure.name) == ("acme", "spam",
                                                               "category_present")
    assert "was not evaluated for it" in failure.message


def test_too_few_positives_is_not_measurable_rather_than_passed() -> None:
    mask = DATA.mask.copy()
    mask[12:, 0] = False  # a dozen labelled 'hate' items: fewer positives than min_positives
    n_pos = int((DATA.targets[:12, 0] >= 0.5).sum())
    assert 0 < n_pos < 10
    report = run_gate(evaluation("2", mask=mask), evaluation("1", mask=mask), POLICY)
    for tenant in ("acme", "kids"):
        precision = check(report, tenant, "hate", "precision_at_block")
        recall = check(report, tenant, "hate", "recall_vs_champion")
        assert precision.passed is None and recall.passed is None
        assert precision.message == (
            f"{tenant}/hate: precision not measurable: {n_pos} held-out positives < "
            "min_positives 10; label more held-out items")
        calibration = check(report, tenant, "hate", "calibration_ece")
        assert calibration.passed is None  # 12 items: sampling noise alone would decide
        assert "12 held-out items < 225 needed to judge max_ece 0.1" in calibration.message
    # no label judges acme/hate or kids/hate: the candidate scores them as the champion did
    for tenant in ("acme", "kids"):
        agreement = check(report, tenant, "hate", "agreement_with_champion")
        assert agreement.passed is True and agreement.value == 0.0
        assert check(report, tenant, "hate", "quality_evidence").passed is True
    assert report.passed
    assert "Not measurable:" in report.to_table()
    # a candidate that changed those scores with nothing to show for it is refused
    noisy = run_gate(evaluation("2", mask=mask, noise=0.5), evaluation("1", mask=mask), POLICY)
    failing = {(c.tenant, c.category, c.name) for c in noisy.failures()}
    assert ("acme", "hate", "agreement_with_champion") in failing
    assert ("acme", "hate", "quality_evidence") in failing
    assert not noisy.passed


def test_report_with_nothing_measurable_does_not_pass() -> None:
    no_labels = np.zeros_like(DATA.mask)
    report = run_gate(evaluation("1", mask=no_labels, p99=None), None, POLICY)
    assert {c.name for c in report.failures()} == {"quality_evidence"}
    assert not report.passed
    assert report.to_table().splitlines()[0] == (
        "REJECTED v1 (no champion): 3 check(s) failed in acme/hate, acme/spam, kids/hate")


def test_first_version_has_no_recall_to_compare() -> None:
    report = run_gate(CHAMPION, None, POLICY)
    recall = check(report, "acme", "hate", "recall_vs_champion")
    assert recall.passed is None
    assert recall.message == (
        "acme/hate: recall not compared: there is no champion yet (first version)")
    assert report.passed
    assert report.to_table().startswith("PASSED v1 (no champion): ")


def test_recall_exactly_at_the_tolerance_passes() -> None:
    def version(name: str, recall: float) -> VersionEvaluation:
        ev = CategoryEvaluation("acme", "hate", "hate", n=200, n_pos=100, block_threshold=0.5,
                                precision_at_block=0.9, recall_at_block=recall, auroc=0.9,
                                ece=0.02)
        return VersionEvaluation(name, {("acme", "hate"): ev}, p99_ms=5.0, head_keys=["hate"])

    policy = parse_policy({"gate": {"recall_tolerance": 0.02},
                           "tenants": {"acme": {"categories": {"hate": {"block_threshold": 0.5}}}}})
    assert run_gate(version("2", 0.78), version("1", 0.8), policy).passed  # 0.8 - 0.02 in floats
    worse = run_gate(version("2", 0.77), version("1", 0.8), policy)
    assert [c.name for c in worse.failures()] == ["recall_vs_champion"]


def test_unreachable_target_precision_fails_where_the_champion_decided_alone() -> None:
    scores = scores_for()
    meta = meta_for("2", scores, HEADS)
    del meta["curves"]["hate"]  # no held-out curve: kids/hate would be review-only
    cand = evaluation("2", meta=meta)
    assert cand.categories[("kids", "hate")].block_threshold is None
    report = run_gate(cand, CHAMPION, POLICY)
    (failure,) = report.failures()
    assert (failure.tenant, failure.category, failure.name) == ("kids", "hate",
                                                               "precision_at_block")
    assert "would serve it review-only" in failure.message
    assert "where the champion decides alone" in failure.message
    # against a champion that was review-only too, the precision check is not measurable
    both = run_gate(cand, evaluation("1", meta=meta), POLICY)
    assert check(both, "kids", "hate", "precision_at_block").passed is None
    assert both.passed  # AUROC and calibration were measured for kids/hate


def test_latency_alone_never_counts_as_quality() -> None:
    no_labels = np.zeros_like(DATA.mask)
    report = run_gate(evaluation("2", mask=no_labels, p99=5.0), CHAMPION, POLICY)
    assert check(report, None, None, "p99_latency").passed is True
    assert not report.passed  # agreeing with the champion everywhere is no evidence either
    assert "no quality check was measurable" in report.verdict()
    first = run_gate(evaluation("1", mask=no_labels, p99=5.0), None, POLICY)
    assert not first.passed
    assert "no quality check was measurable" in check(first, "acme", "hate",
                                                      "quality_evidence").message


def test_forgetting_fails_the_auroc_check() -> None:
    report = run_gate(evaluation("2", noise=0.5), CHAMPION, POLICY)
    auroc = check(report, "acme", "hate", "auroc_vs_champion")
    assert auroc.passed is False and "below" not in auroc.message
    assert "< champion v1's" in auroc.message


def test_latency_over_budget_fails() -> None:
    report = run_gate(evaluation("2", p99=80.0), CHAMPION, POLICY)
    (failure,) = report.failures()
    assert (failure.tenant, failure.category, failure.name) == (None, None, "p99_latency")
    assert failure.message == "p99 latency of scoring one item 80 ms > budget 50 ms"
    assert report.to_table().splitlines()[0].endswith("1 check(s) failed in p99_latency")
    unmeasured = check(run_gate(evaluation("2", p99=None), CHAMPION, POLICY), None, None,
                       "p99_latency")
    assert unmeasured.passed is None


def test_to_json_round_trips_with_rounded_values() -> None:
    report = run_gate(evaluation("2", noise=0.5), CHAMPION, POLICY)
    data = report.to_json()
    assert json.loads(json.dumps(data)) == data
    assert list(data) == ["candidate", "champion", "passed", "verdict", "checks"]
    assert (data["candidate"], data["champion"], data["passed"]) == ("2", "1", False)
    for row in data["checks"]:
        assert list(row) == ["tenant", "category", "name", "passed", "value", "threshold",
                             "message"]
        for key in ("value", "threshold"):
            assert row[key] is None or round(row[key], 4) == row[key]
    assert len(data["checks"]) == len(report.checks)


def _with_new_category(cpol: dict) -> PolicySet:
    data = json.loads(json.dumps(POLICY_DATA))
    data["tenants"]["acme"]["categories"]["scam"] = {"head": "acme/scam", **cpol}
    return parse_policy(data)


def test_new_review_only_category_is_admitted_without_held_out_evidence() -> None:
    # 'bastion category add': a tenant-owned head no held-out item is labelled for, which the
    # policy makes review-only; every other category is gated as usual
    policy = _with_new_category({"review_threshold": 0.6})
    heads = [*HEADS, "acme/scam"]
    scores = np.c_[scores_for(), DATA.rng.random(N)]
    cand = evaluate_version("2", heads, meta_for("2", scores[:, :3], HEADS), scores,
                            DATA.targets, DATA.mask, CATEGORIES, policy, p99_ms=12.0)
    champ = evaluation("1", policy=policy)
    report = run_gate(cand, champ, policy)
    assert report.passed, report.to_table()
    assert check(report, "acme", "scam", "category_present").passed is True
    evidence = check(report, "acme", "scam", "quality_evidence")
    assert evidence.passed is True and "admitted because the policy makes it review-only" in (
        evidence.message)
    # the others were measured as before
    assert check(report, "acme", "hate", "quality_evidence").value is not None
    assert check(report, "acme", "hate", "precision_at_block").passed is True


def test_new_category_that_would_block_needs_evidence() -> None:
    policy = _with_new_category({"review_threshold": 0.6, "block_threshold": 0.9})
    heads = [*HEADS, "acme/scam"]
    scores = np.c_[scores_for(), DATA.rng.random(N)]
    cand = evaluate_version("2", heads, meta_for("2", scores[:, :3], HEADS), scores,
                            DATA.targets, DATA.mask, CATEGORIES, policy, p99_ms=12.0)
    report = run_gate(cand, evaluation("1", policy=policy), policy)
    assert not report.passed
    assert [(c.tenant, c.category, c.name) for c in report.failures()] == [
        ("acme", "scam", "quality_evidence")]


def test_new_review_only_category_must_still_be_present() -> None:
    policy = _with_new_category({"review_threshold": 0.6})
    report = run_gate(evaluation("2", policy=policy), evaluation("1", policy=policy), policy)
    assert [(c.tenant, c.category, c.name) for c in report.failures()] == [
        ("acme", "scam", "category_present")]


def test_an_absolute_rule_the_champion_fails_with_the_same_scores_is_not_held_against_it() -> None:
    # the champion's acme/hate misses a strict min_precision; a category version carries that
    # head unchanged (the same scores), so promoting it changes nothing there
    data = json.loads(json.dumps(POLICY_DATA))
    data["tenants"]["acme"]["categories"]["hate"]["gate"] = {"min_precision": 0.999}
    data["tenants"]["acme"]["categories"]["scam"] = {"head": "acme/scam", "review_threshold": 0.6}
    policy = parse_policy(data)
    heads = [*HEADS, "acme/scam"]
    scores = np.c_[scores_for(), DATA.rng.random(N)]
    cand = evaluate_version("2", heads, meta_for("2", scores[:, :3], HEADS), scores,
                            DATA.targets, DATA.mask, CATEGORIES, policy, p99_ms=12.0)
    champ = evaluation("1", policy=policy)
    assert not run_gate(champ, None, policy).passed  # the champion itself fails the rule
    report = run_gate(cand, champ, policy)
    assert report.passed, report.to_table()
    precision = check(report, "acme", "hate", "precision_at_block")
    assert precision.passed is None and "as champion v1 scores it" in precision.message
    assert check(report, "acme", "hate", "recall_vs_champion").passed is True  # measured
    # a head that changed is judged by the rule as before
    report = run_gate(evaluation("3", noise=0.3, policy=policy), champ, policy)
    assert check(report, "acme", "hate", "precision_at_block").passed is False


def test_the_champion_plus_a_review_only_category_passes_where_nothing_is_measurable() -> None:
    # a machine without labelled data: no held-out label measures anything, yet a version that
    # is the champion unchanged plus a review-only head changes no decision the champion makes
    no_labels = np.zeros_like(DATA.mask)
    policy = _with_new_category({"review_threshold": 0.6})
    heads = [*HEADS, "acme/scam"]
    scores = np.c_[scores_for(), DATA.rng.random(N)]
    cand = evaluate_version("2", heads, meta_for("2", scores[:, :3], HEADS), scores,
                            DATA.targets, no_labels, CATEGORIES, policy, p99_ms=12.0)
    champ = evaluation("1", policy=policy, mask=no_labels)
    report = run_gate(cand, champ, policy)
    assert report.passed, report.to_table()
    assert "the champion's scores unchanged, plus new review-only categories" in report.verdict()
    # with one carried head changed, it needs measured evidence again
    changed = scores.copy()
    changed[:, 0] = DATA.rng.random(N)
    cand = evaluate_version("3", heads, meta_for("3", changed[:, :3], HEADS), changed,
                            DATA.targets, no_labels, CATEGORIES, policy, p99_ms=12.0)
    assert not run_gate(cand, champ, policy).passed
    # and the same version as a first one (no champion) does not pass on nothing
    assert not run_gate(evaluate_version("1", heads, meta_for("1", scores[:, :3], HEADS),
                                         scores, DATA.targets, no_labels, CATEGORIES, policy,
                                         p99_ms=12.0), None, policy).passed
