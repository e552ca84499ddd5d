from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion.core.errors import ConfigError
from bastion.core.keys import add_reviewer, load_reviewers, reviewer_hashes
from bastion.core.policy import parse_policy
from bastion.review.priority import item_urgency, reporter_reliability, task_priority
from bastion.review.records import Report, ReviewItem, SessionEvent

POLICY = parse_policy({"tenants": {"acme": {
    "categories": {"hate": {"block_threshold": 0.8, "severity": 3},
                   "spam": {"block_threshold": 0.9, "severity": 1}},
    "deprioritized_phrases": ["gg"],
}}}).tenants["acme"]


def item(scores: dict[str, float], text: str = "hello", item_id: str = "i1") -> ReviewItem:
    return ReviewItem(tenant="acme", item_id=item_id, text=text, text_sha256="x",
                      session_id="s", user_id="u", source="decision", scores=scores,
                      keyword_hits=[], decision="review", model_version="1",
                      policy_version="p", ts=0.0)


def report(reporter: str = "r1") -> Report:
    return Report(tenant="acme", report_id=reporter, reporter=reporter, reported_user="u",
                  reported_item=None, session_id="s", reason="hate", text="", ts=0.0)


def event(kind: str) -> SessionEvent:
    return SessionEvent(tenant="acme", event_id=kind, session_id="s", user_id="v", kind=kind,
                        target_user="u", ts=0.0)


def test_severity_times_uncertainty_peaks_at_the_threshold() -> None:
    at, why = item_urgency(item({"hate": 0.8, "spam": 0.1}), POLICY)
    assert at == pytest.approx(3.0) and why["category"] == "hate"
    far, _ = item_urgency(item({"hate": 0.1, "spam": 0.9}), POLICY)
    assert far == pytest.approx(1.0)  # spam at its threshold, severity 1 beats far-off hate
    # serving's resolved thresholds win over the policy's
    moved, _ = item_urgency(item({"hate": 0.5}), POLICY, thresholds={"hate": 0.5})
    assert moved == pytest.approx(3.0)


def test_reports_events_and_deprioritized_phrases_combine_with_reasons() -> None:
    base, _ = task_priority([item({"hate": 0.8})], [], [], POLICY)
    reported, reasons = task_priority(
        [item({"hate": 0.8})], [report("good"), report("new")], [event("block")], POLICY,
        reporter_record=lambda r: (9, 10) if r == "good" else (0, 0))
    rel = reporter_reliability(9, 10) + reporter_reliability(0, 0)
    assert reported == pytest.approx(base * (1 + rel) * (1 + 1.0))
    assert [r["factor"] for r in reasons] == [
        "severity x uncertainty", "user reports", "session events"]
    banter, reasons = task_priority([item({"hate": 0.8}, text="gg ez noob")], [], [], POLICY)
    assert banter == pytest.approx(base * 0.3) and reasons[-1]["phrase"] == "gg"


def test_a_reliable_reporter_outranks_an_unreliable_one() -> None:
    def prio(record: tuple[int, int]) -> float:
        return task_priority([item({"hate": 0.5})], [report()], [], POLICY,
                             reporter_record=lambda _r: record)[0]

    assert prio((10, 10)) > prio((0, 0)) > prio((0, 10))


def test_reviewer_keys_are_scoped_and_kept_private(tmp_path: Path) -> None:
    path = tmp_path / "review_keys.json"
    key = add_reviewer(path, "ann", "moderator", ["acme", "acme"])
    assert key.startswith("rev_") and (path.stat().st_mode & 0o777) == 0o600
    assert load_reviewers(path)["ann"]["tenants"] == ["acme"]
    (h, who), = reviewer_hashes(load_reviewers(path)).items()
    assert key not in json.dumps(who) and who == {"name": "ann", "role": "moderator",
                                                  "tenants": ["acme"]}
    with pytest.raises(ConfigError, match="role 'boss'"):
        add_reviewer(path, "bob", "boss", ["acme"])
    with pytest.raises(ConfigError, match="at least one tenant"):
        add_reviewer(path, "bob", "moderator", [])


def test_banter_in_the_sessions_context_does_not_soften_a_flag() -> None:
    flagged = item({"hate": 0.8})
    chatter = ReviewItem(**{**item({"hate": 0.01}, text="gg", item_id="c").__dict__,
                            "source": "context"})
    alone, _ = task_priority([flagged], [], [], POLICY)
    with_context, reasons = task_priority([flagged, chatter], [], [], POLICY)
    assert with_context == alone and all(r["factor"] != "deprioritized phrase" for r in reasons)
