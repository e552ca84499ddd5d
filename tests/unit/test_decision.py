from __future__ import annotations

import numpy as np
import pytest

from bastion.core.decision import (
    decide,
    normalize_text,
    resolve_policy,
    threshold_for_precision,
    threshold_for_recall,
)
from bastion.core.errors import PolicyError
from bastion.core.policy import parse_policy

HEADS = ["hate", "spam", "acme/spam"]
CURVE = {  # ascending thresholds, as training writes them
    "threshold": [0.1, 0.3, 0.5, 0.7, 0.9],
    "precision": [0.2, 0.5, 0.8, 0.92, 1.0],
    "recall": [1.0, 0.95, 0.9, 0.6, 0.2],
    "n_pred": [100, 40, 25, 13, 4],
}
META = {"version": "7", "curves": {"hate": CURVE, "spam": CURVE, "acme/spam": CURVE}}


def policy(**tenant: object) -> dict:
    base: dict = {
        "categories": {
            "hate": {"block_threshold": 0.8, "review_threshold": 0.4},
            "spam": {"block_threshold": 0.9, "action": "review"},
        },
        "keywords": [{"name": "threats", "phrases": ["I will find you"], "action": "block",
                      "category": "violence"}],
        "allow_list": ["scunthorpe united"],
        "deprioritized_phrases": ["gg"],
    }
    base.update(tenant)
    return {"tenants": {"acme": base}}


def resolved(data: dict | None = None):
    return resolve_policy(parse_policy(data or policy()), HEADS, META)["acme"]


def scores(hate: float = 0.0, spam: float = 0.0, acme_spam: float = 0.0) -> np.ndarray:
    return np.array([hate, spam, acme_spam], dtype=np.float32)


def test_bands_block_review_allow() -> None:
    rt = resolved()
    assert decide(rt, "x", scores(hate=0.85))["decision"] == "block"
    assert decide(rt, "x", scores(hate=0.5))["decision"] == "review"
    out = decide(rt, "x", scores(hate=0.1))
    assert out["decision"] == "allow" and out["reasons"] == []


def test_reason_names_category_score_threshold() -> None:
    out = decide(resolved(), "x", scores(hate=0.85))
    (r,) = out["reasons"]
    assert (r["kind"], r["category"], r["threshold"], r["band"]) == ("model", "hate", 0.8, "block")
    assert r["score"] == pytest.approx(0.85, abs=1e-6)


def test_category_action_review_applies_at_the_block_band() -> None:
    out = decide(resolved(), "x", scores(spam=0.95))
    assert out["decision"] == "review" and out["reasons"][0]["band"] == "block"


def test_keyword_rule_forces_block_whatever_the_model_says() -> None:
    out = decide(resolved(), "Listen: I WILL   find you.", scores())
    assert out["decision"] == "block"
    assert out["reasons"][0]["rule"] == "threats"
    assert out["keyword_hits"][0]["phrases"] == ["i will find you"]


def test_keywords_match_whole_words_only() -> None:
    data = policy(keywords=[{"phrases": ["ass"], "action": "review"}])
    assert decide(resolved(data), "a classic passage", scores())["decision"] == "allow"
    assert decide(resolved(data), "you ass!", scores())["decision"] == "review"


def test_allow_list_exact_text_is_allowed_and_masks_keywords() -> None:
    data = policy(keywords=[{"phrases": ["scunthorpe"], "action": "review"}])
    rt = resolved(data)
    out = decide(rt, "Scunthorpe United", scores(hate=0.99))
    assert out["decision"] == "allow" and out["reasons"][0]["kind"] == "allow_list"
    assert decide(rt, "I support scunthorpe united", scores())["decision"] == "allow"
    assert decide(rt, "scunthorpe town", scores())["decision"] == "review"


def test_deprioritized_phrases_are_reported() -> None:
    assert decide(resolved(), "gg well played", scores())["deprioritized"] == ["gg"]


def test_most_severe_reason_first() -> None:
    out = decide(resolved(), "x", scores(hate=0.5, spam=0.95))
    assert out["decision"] == "review"
    out = decide(resolved(), "I will find you", scores(hate=0.5))
    assert [r["action"] for r in out["reasons"]] == ["block", "review"]


def test_only_requested_categories_are_scored() -> None:
    out = decide(resolved(), "x", scores(hate=0.9, spam=0.95), only=["spam"])
    assert set(out["scores"]) == {"spam"} and out["decision"] == "review"


def test_target_precision_derives_thresholds_from_the_curve() -> None:
    data = policy(categories={"hate": {"target_precision": 0.9}})
    cat = resolved(data).categories[0]
    assert cat.block_threshold == 0.7  # lowest point with precision >= 0.9 and support >= 5
    assert cat.review_threshold == 0.5  # recall still >= 0.9 there
    assert "target precision 0.9" in cat.source


def test_threshold_helpers_ignore_unsupported_points() -> None:
    assert threshold_for_precision(CURVE, 0.95) is None  # only the 4-item point reaches it
    assert threshold_for_recall(CURVE, 0.95) == 0.3


def test_unreachable_target_precision_falls_back_to_review_only() -> None:
    data = policy(categories={"hate": {"target_precision": 0.99},
                              "spam": {"block_threshold": 0.9}})
    rt = resolved(data)
    hate = rt.category("hate")
    assert hate is not None and hate.block_threshold is None
    assert hate.review_threshold == 0.5  # where held-out recall still reaches 0.9
    assert hate.fallback is not None and "never reaches it" in hate.fallback
    (problem,) = rt.problems()
    assert problem.startswith("tenants.acme.categories.hate: target_precision 0.99")
    out = decide(rt, "x", scores(hate=0.999))
    assert out["decision"] == "review"  # never block, however high the score
    assert out["reasons"][0]["fallback"] == hate.fallback
    assert decide(rt, "x", scores(spam=0.95))["decision"] == "block"  # the others unaffected
    with pytest.raises(PolicyError, match=r"hate: target_precision 0.99: .* never reaches it"):
        resolve_policy(parse_policy(data), HEADS, META, strict=True)


def test_fallback_without_a_curve_reviews_from_the_default() -> None:
    data = policy(categories={"hate": {"target_precision": 0.9}})
    rt = resolve_policy(parse_policy(data), HEADS, {"version": "7", "curves": {}})["acme"]
    hate = rt.category("hate")
    assert hate is not None and (hate.block_threshold, hate.review_threshold) == (None, 0.5)


def test_review_only_category() -> None:
    rt = resolved(policy(categories={"hate": {"review_threshold": 0.3}}))
    hate = rt.category("hate")
    assert hate is not None and hate.block_threshold is None and hate.fallback is None
    assert rt.problems() == []
    assert decide(rt, "x", scores(hate=1.0))["decision"] == "review"
    assert decide(rt, "x", scores(hate=0.2))["decision"] == "allow"


def test_unknown_category_is_left_out_listing_known_heads() -> None:
    data = policy(categories={"sexual": {"block_threshold": 0.5},
                              "hate": {"block_threshold": 0.5}})
    rt = resolved(data)
    assert [c.name for c in rt.categories] == ["hate"]
    assert rt.unavailable["sexual"] == ("model version 7 has no head 'sexual' (known heads: "
                                        "hate, spam, acme/spam); not scored")
    assert decide(rt, "x", scores(hate=0.9))["decision"] == "block"
    with pytest.raises(PolicyError, match="no head 'sexual'"):
        resolve_policy(parse_policy(data), HEADS, META, strict=True)


def test_tenant_owned_head() -> None:
    data = policy(categories={"spam": {"block_threshold": 0.5, "head": "acme/spam"}})
    rt = resolved(data)
    assert decide(rt, "x", scores(spam=0.9, acme_spam=0.1))["decision"] == "allow"
    assert decide(rt, "x", scores(spam=0.1, acme_spam=0.9))["decision"] == "block"


def test_another_tenants_head_is_refused() -> None:
    data = {"tenants": {"other": {"categories": {"spam": {"block_threshold": 0.5,
                                                          "head": "acme/spam"}}}}}
    rt = resolve_policy(parse_policy(data), HEADS, META)["other"]
    assert rt.categories == [] and "'acme/spam' belongs to another tenant" in rt.unavailable[
        "spam"]


def test_other_tenants_heads_are_not_listed_to_a_tenant() -> None:
    data = {"tenants": {"other": {"categories": {"nope": {"block_threshold": 0.5}}}}}
    rt = resolve_policy(parse_policy(data), HEADS, META)["other"]
    assert "acme/spam" not in rt.unavailable["nope"]


def test_normalize_text() -> None:
    assert normalize_text("  ＨＥＬＬＯ\tWorld ") == "hello world"
