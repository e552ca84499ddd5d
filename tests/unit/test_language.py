"""Language identification (core.language), the language of each decision (serving.decisions
.assemble), and the drift test of the language mix (drift.rates.language_mix_test)."""

from __future__ import annotations

import numpy as np

from bastion.core.language import detect_language, detect_languages, routed_elsewhere
from bastion.core.policy import parse_policy
from bastion.drift.rates import language_mix_test
from bastion.serving.decisions import Scored, assemble
from bastion.serving.schemas import ModerateRequest

KEY = b"an install's text key, 32 chars+"


def test_each_text_gets_its_iso_639_1_language_and_none_without_letters() -> None:
    got = detect_languages([
        "I will find you and you will regret it",
        "너 진짜 왜 그러냐 정신 좀 차려라",
        "Je vais te retrouver, tu vas le regretter",
        "te voy a encontrar y te vas a arrepentir",
        "123 456 !!!", "", None])
    assert got == ["en", "ko", "fr", "es", None, None, None]
    assert detect_language("😡😡😡") is None


def test_a_decision_carries_its_language_to_the_response_the_log_and_review() -> None:
    from bastion.core.decision import resolve_policy

    pol = parse_policy({"tenants": {"t": {"categories": {
        "hate": {"block_threshold": 0.9, "review_threshold": 0.5}}}}})
    rt = resolve_policy(pol, ["hate"], {"version": "3", "curves": {}})["t"]
    req = ModerateRequest.model_validate({"tenant": "t", "items": [
        {"id": "ko", "text": "이런 멍청한 놈은 처음 본다", "context": {"session_id": "s"}},
        {"id": "none", "text": "!!!", "context": {"session_id": "s"}}]})
    scored = [Scored("3", rt, np.array([0.7], np.float32), np.zeros(4, np.float32)),
              Scored("3", rt, np.array([0.1], np.float32), np.zeros(4, np.float32))]
    out = assemble(req, "t", scored, pol.tenants["t"].media, request_id="r", now=1.0,
                   review=True, text_key=KEY)
    assert [r["language"] for r in out.response["results"]] == ["ko", None]
    assert [e.language for e in out.events] == ["ko", None]
    assert {i.item_id: i.language for i in out.review_items} == {"ko": "ko", "none": None}
    assert out.events[0].row()["language"] == "ko"


def test_the_language_mix_drifts_when_a_new_language_arrives_and_not_by_chance() -> None:
    rng = np.random.default_rng(0)
    ref = list(rng.choice(["en", "es", "ko"], 2000, p=[0.8, 0.15, 0.05]))
    same = list(rng.choice(["en", "es", "ko"], 500, p=[0.8, 0.15, 0.05]))
    r = language_mix_test(ref, same + [None] * 50, p_threshold=0.01)
    assert not r.drift and r.detail["n_window"] == 500  # no language: left out
    raid = list(rng.choice(["en", "es", "ko", "pt"], 500, p=[0.55, 0.1, 0.05, 0.3]))
    r = language_mix_test(ref, raid, p_threshold=0.01)
    assert r.drift and r.p_value is not None and r.p_value < 1e-6
    assert r.detail["languages"]["pt"] == {"reference": 0.0, "window": round(
        raid.count("pt") / 500, 4)}
    assert r.statistic > 0.2  # total variation distance
    # rare languages are pooled, one language on both sides is no drift, few items skip
    r = language_mix_test(["en"] * 100, ["en"] * 99 + ["fi"], p_threshold=0.01)
    assert not r.drift
    assert language_mix_test(["en"] * 5, ["ko"] * 5).detail["skipped"]


def test_routing_sends_other_languages_to_the_multilingual_model_and_keeps_english() -> None:
    assert routed_elsewhere("ko", None) and routed_elsewhere("fr", None)
    assert not routed_elsewhere("en", None) and not routed_elsewhere(None, None)
    only = frozenset({"ko", "ar"})
    assert routed_elsewhere("ko", only) and not routed_elsewhere("fr", only)
    assert not routed_elsewhere(None, only)


def test_dialects_and_varieties_report_their_iso_639_1_language() -> None:
    # Egyptian Arabic is a class of its own in the model (arz): reported as Arabic
    assert detect_language("ايه ده يا عم انت مجنون ولا ايه") == "ar"
    texts = ["lol that bitch crazy af", "wetin dey happen for here abeg", "粵語好難學",
             "ok", "Hab dich lieb", "x y z", "¿qué pasa?"]
    assert all(lang is None or len(lang) == 2 for lang in detect_languages(texts))
