"""Shadow runs: the shadow log, the report's comparison, the canary's precision and the gate's
shadow evidence (``core.shadow_events``, ``registry.shadow``)."""

from __future__ import annotations

import time

from bastion.core.events import DecisionEvent
from bastion.core.labels import item_key
from bastion.core.policy import parse_policy
from bastion.core.shadow_events import ShadowEvent, ShadowLog, ShadowWriter, bands_of
from bastion.registry.shadow import (
    SHADOW_ITEMS,
    SHADOW_PRECISION,
    ShadowConfig,
    build_report,
    canary_rows,
    evidence_checks,
)

POLICY = parse_policy({
    "gate": {"shadow_min_items": 5, "shadow_min_reviewed": 3, "shadow_max_precision_drop": 0.05},
    "tenants": {"acme": {"categories": {"hate": {"block_threshold": 0.8,
                                                 "review_threshold": 0.4}}}},
})


def reason(cat: str, band: str) -> dict:
    return {"kind": "model", "category": cat, "band": band, "score": 0.9,
            "action": "block" if band == "block" else "review"}


def shadowed(i: int, mine: str, theirs: str, text: str | None = None) -> ShadowEvent:
    """Item ``i`` that the challenger put in band ``mine`` and the champion in ``theirs``."""
    decision = {"block": "block", "review": "review", "allow": "allow"}
    return ShadowEvent(
        ts=time.time(), request_id=f"r{i}", tenant="acme", item_id=str(i), text=text,
        text_sha256=f"{i:064x}", language="en", version="3", decision=decision[mine],
        scores={"hate": 0.5}, bands={} if mine == "allow" else {"hate": mine},
        champion_version="2", champion_decision=decision[theirs],
        champion_scores={"hate": 0.5},
        champion_bands={} if theirs == "allow" else {"hate": theirs},
        champion_ms=10.0 + i, shadow_ms=12.0 + i)


def test_bands_name_each_category_s_strongest_band() -> None:
    reasons = [reason("hate", "review"), reason("hate", "block"), reason("spam", "review"),
               {"kind": "keyword", "category": "spam", "action": "block"}]
    assert bands_of(reasons) == {"hate": "block", "spam": "review"}
    assert bands_of([{"kind": "allow_list", "action": "allow"}]) == {}


def test_the_shadow_log_keeps_what_the_writer_accepted(db_url: str) -> None:
    log = ShadowLog(db_url)
    writer = ShadowWriter(log)
    writer.submit([shadowed(i, "block", "review", text=f"t{i}") for i in range(5)])
    writer.submit([shadowed(9, "allow", "allow")])
    writer.close()
    rows = list(log.read(version="3"))
    assert [r.item_id for r in rows] == ["0", "1", "2", "3", "4", "9"]
    assert rows[0].bands == {"hate": "block"} and rows[0].champion_bands == {"hate": "review"}
    assert rows[0].text == "t0" and rows[5].text is None
    assert log.count("3") == 6 and log.count("4") == 0
    assert list(log.read(version="3", tenant="other")) == []
    log.close()


def test_the_report_counts_agreement_differences_and_reviewed_precision() -> None:
    events = ([shadowed(i, "review", "review") for i in range(4)]
              + [shadowed(4, "block", "review", text="kept text")]
              + [shadowed(5, "allow", "block")]
              + [shadowed(6, "review", "allow", text="new flag")]
              + [shadowed(i, "allow", "review") for i in range(7, 10)])
    # moderators said items 0-4 are hate, 7-9 are not
    soft = {**{(item_key("acme", str(i)), "hate"): 1.0 for i in range(5)},
            **{(item_key("acme", str(i)), "hate"): 0.0 for i in range(7, 10)}}
    report = build_report("3", None, events, soft, min_reviewed=3)
    assert report.n == 10 and report.champions == ["2"]
    (cat,) = report.categories
    assert (cat.n, cat.agree) == (10, 4)
    assert (cat.newly_blocked, cat.newly_allowed, cat.newly_flagged) == (1, 4, 1)
    assert cat.reviewed == 8
    # the champion flagged all 8 reviewed items, 5 of them hate; the challenger flagged 0-4
    assert cat.champion_flagged == 8 and cat.champion_precision == 5 / 8
    assert cat.challenger_flagged == 5 and cat.challenger_precision == 1.0
    # examples only where the tenant's policy kept the text
    assert cat.examples == {"would block": ["kept text"], "would flag": ["new flag"]}
    assert report.tenants["acme"]["n"] == 10
    assert report.tenants["acme"]["changes"] == {"review->block": 1, "block->allow": 1,
                                                 "allow->review": 1, "review->allow": 3}
    assert report.latency_ms["champion_p50"] is not None
    table = report.to_table()
    assert "Shadow of v3 beside champion v2: 10 item(s)" in table and "kept text" in table
    assert report.to_json()["categories"][0]["challenger_precision"] == 1.0


def test_precision_on_too_few_reviewed_items_is_not_measured() -> None:
    events = [shadowed(i, "review", "review") for i in range(2)]
    soft = {(item_key("acme", str(i)), "hate"): 1.0 for i in range(2)}
    (cat,) = build_report("3", None, events, soft, min_reviewed=3).categories
    assert cat.reviewed == 2 and cat.challenger_precision is None


def test_the_gate_needs_enough_shadowed_items() -> None:
    checks = evidence_checks(build_report("3", None, [shadowed(0, "allow", "allow")], {}),
                             POLICY)
    (items, precision) = checks
    assert items.name == SHADOW_ITEMS and items.passed is False
    assert "bastion shadow start 3" in items.message
    assert precision.name == SHADOW_PRECISION and precision.passed is None


def test_the_gate_refuses_a_precision_drop_on_reviewed_shadowed_items() -> None:
    # the challenger flags 0-5 where moderators said 0-2 are hate; the champion flags 0-2 only
    events = ([shadowed(i, "review", "review") for i in range(3)]
              + [shadowed(i, "review", "allow") for i in range(3, 6)])
    soft = {(item_key("acme", str(i)), "hate"): float(i < 3) for i in range(6)}
    checks = evidence_checks(build_report("3", None, events, soft, 3), POLICY)
    precision = next(c for c in checks if c.name == SHADOW_PRECISION)
    assert precision.passed is False and precision.value == 0.5
    assert precision.threshold is not None and abs(precision.threshold - 0.95) < 1e-9
    assert "acme/hate" in precision.message
    # the other way round it passes
    better = [shadowed(i, "review", "review") for i in range(3)] + \
        [shadowed(i, "allow", "review") for i in range(3, 6)]
    checks = evidence_checks(build_report("3", None, better, soft, 3), POLICY)
    assert next(c for c in checks if c.name == SHADOW_PRECISION).passed is True


def decided(i: int, version: str, band: str | None) -> DecisionEvent:
    return DecisionEvent(
        ts=time.time(), request_id=f"r{i}", tenant="acme", item_id=str(i), session_id=None,
        user_id=None, text=None, text_sha256=f"{i:064x}", text_len=3,
        decision="allow" if band is None else band, scores={"hate": 0.5},
        reasons=[] if band is None else [reason("hate", band)], model_version=version,
        policy_version="p", embedding=None)


def test_the_canary_s_precision_is_its_own_decisions_against_the_champion_s() -> None:
    config = ShadowConfig(version="3", sample=0.1, started_at=0.0, canary=0.05,
                          canary_tenant="acme", min_reviewed=2)
    assert config.canary_active
    assert ShadowConfig.from_json(config.to_json()) == config
    events = ([decided(i, "3", "review") for i in range(4)]
              + [decided(i, "2", "review") for i in range(4, 8)]
              + [decided(8, "2", None)])
    soft = {(item_key("acme", str(i)), "hate"): float(i in (0, 4, 5, 6)) for i in range(9)}
    (row,) = canary_rows(config, events, soft)
    assert row["challenger"] == 0.25 and row["challenger_n"] == 4
    assert row["champion"] == 0.75 and row["champion_n"] == 4
    stopped = ShadowConfig.from_json({**config.to_json(), "canary_stopped": {"why": "x"}})
    assert not stopped.canary_active
