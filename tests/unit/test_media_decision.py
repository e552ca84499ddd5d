"""A tenant's policy applied to what the media deployments read (core.media_decision), the
request's decisions with media (serving.decisions.assemble), and where media labels go."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from sqlalchemy import create_engine, insert

from bastion.core.decision import resolve_policy
from bastion.core.errors import PolicyError
from bastion.core.labels import LabelStore, put_item
from bastion.core.media_decision import cue_reasons, flagged_span, image_verdict, merge
from bastion.core.policy import AudioPolicy, HashList, ImagePolicy, MediaPolicy, parse_policy
from bastion.core.store.tables import labels as labels_t
from bastion.serving.decisions import Scored, assemble
from bastion.serving.schemas import ModerateRequest

KEY = b"an install's text key, 32 chars+"
BAD = "5feb5321f01da156898e2bf629a5d3438412cdbd23f48942464526315db33ffd"
HEADS = ["hate", "violence"]
META: dict[str, Any] = {"version": "3", "curves": {}}


def facts(**over: Any) -> dict[str, Any]:
    base = {"format": "png", "mime": "image/png", "width": 64, "height": 48, "bytes": 10,
            "sha256": "ab" * 32, "pdq": BAD, "pdq_quality": 100,
            "image_scores": {"graphic": 0.1, "sexual": 0.2, "safe": 0.7},
            "embedding": np.ones(224, dtype=np.float16), "ocr_text": ""}
    return base | over


def test_a_copy_within_the_distance_matches_and_one_past_it_does_not() -> None:
    near = BAD[:-1] + ("c" if BAD[-1] != "c" else "d")  # a few bits off
    pol = ImagePolicy(hash_lists=(HashList(name="known-bad", hashes=(BAD,), max_distance=4),))
    _, reasons = image_verdict(pol, facts(pdq=near))
    assert [r["kind"] for r in reasons] == ["hash"] and reasons[0]["distance"] <= 4
    far = "0" * 64
    _, reasons = image_verdict(pol, facts(pdq=far))
    assert reasons == []


def test_image_categories_read_their_source_and_fire_on_their_thresholds() -> None:
    pol = ImagePolicy()  # default: review-only at 0.6
    scores, reasons = image_verdict(pol, facts(image_scores={"graphic": 0.7, "sexual": 0.1,
                                                             "safe": 0.2}))
    assert scores == {"sexual": 0.1, "graphic_violence": 0.7}
    assert [(r["category"], r["action"], r["band"]) for r in reasons] == \
        [("graphic_violence", "review", "review")]


def test_policy_refuses_what_cannot_be_meant() -> None:
    with pytest.raises(ValidationError, match="64 lower-case hex"):
        HashList(name="x", hashes=("abc",))
    with pytest.raises(ValidationError, match="never blocks"):
        AudioPolicy(cue_action="block")
    with pytest.raises(PolicyError, match=r"media\.image\.categories\.nsfw: set review_threshold"):
        parse_policy({"tenants": {"a": {"categories": {"hate": {"block_threshold": 0.9}},
                                        "media": {"image": {"categories": {
                                            "nsfw": {"source": "sexual"}}}}}}})


def test_acoustic_cues_fire_past_the_tenants_thresholds_with_its_action() -> None:
    cues = {"loudness_lufs": -7.0, "max_momentary_lufs": -5.0, "burst_db": 12.0,
            "burst_at_s": 1.0, "loud_span": [0.5, 1.5], "speech_s": 2.0,
            "speech_rate_wps": 3.0, "duration_s": 3.0}
    fired = cue_reasons(AudioPolicy(), cues)
    assert [(r["cue"], r["action"]) for r in fired] == [("shouting", "review"), ("burst", "review")]
    assert fired[0]["span"] == [0.5, 1.5]
    assert cue_reasons(AudioPolicy(shout_lufs=None, burst_db=None), cues) == []
    quiet = cues | {"max_momentary_lufs": -20.0, "burst_db": 2.0}
    assert cue_reasons(AudioPolicy(), quiet) == []


def test_the_flagged_span_is_the_segment_with_the_phrase_else_the_highest_score() -> None:
    segs = [[0.0, 1.0, "hello there"], [1.2, 2.5, "I will find you"], [2.6, 3.0, "bye"]]
    assert flagged_span(segs, None, None, lambda t: "find you" in t.lower())["start"] == 1.2
    seg_scores = np.array([[0.1, 0.1], [0.2, 0.3], [0.9, 0.1]])
    assert flagged_span(segs, seg_scores, 0)["text"] == "bye"
    assert flagged_span([], seg_scores, 0) is None


def test_a_media_reason_outranks_the_allow_list_of_the_text_it_shows() -> None:
    decided = {"decision": "allow", "scores": {"hate": 0.1},
               "reasons": [{"kind": "allow_list", "action": "allow"}], "keyword_hits": [],
               "deprioritized": []}
    hit = {"kind": "hash", "action": "block", "rule": "known-bad"}
    out = merge(decided, {"sexual": 0.2}, [hit])
    assert out["decision"] == "block" and out["reasons"] == [hit]
    assert out["scores"] == {"hate": 0.1, "sexual": 0.2}
    assert merge(decided, {}, [])["decision"] == "allow"


def _tenant(media: dict[str, Any]) -> tuple[Any, MediaPolicy]:
    pol = parse_policy({"tenants": {"t": {
        "categories": {"hate": {"block_threshold": 0.9, "review_threshold": 0.5}},
        "keywords": [{"name": "threats", "phrases": ["find you"], "action": "block"}],
        "media": media}}})
    return resolve_policy(pol, HEADS, META)["t"], pol.tenants["t"].media


def test_assemble_keeps_media_for_review_only_where_the_policy_allows() -> None:
    rt, media = _tenant({"keep_images": True, "keep_audio": True})
    audio = {"format": "wav", "mime": "audio/wav", "duration_s": 2.0, "sample_rate": 16000,
             "channels": 1, "bytes": 64000, "sha256": "cd" * 32, "transcript": "I will find you",
             "words": [[0.1, 0.3, "I"]], "segments": [[0.1, 1.9, "I will find you"]],
             "speech_spans": [[0.1, 1.9]], "cues": {"max_momentary_lufs": -4.0, "burst_db": 0.0,
                                                    "loud_span": [0.2, 1.0], "speech_s": 1.8}}
    req = ModerateRequest.model_validate({"tenant": "t", "items": [
        {"id": "img", "image_base64": "aGk=", "context": {"session_id": "s"}},
        {"id": "loud", "audio_base64": "aGk=", "context": {"session_id": "s"}},
        {"id": "agreed", "audio_base64": "aGk=",
         "context": {"session_id": "s", "metadata": {"consent": True}}}]})
    image = facts(image_scores={"graphic": 0.1, "sexual": 0.7, "safe": 0.2})
    row = np.array([0.1, 0.2], dtype=np.float32)
    scored = [Scored("3", rt, None, None, media=image, media_bytes=b"png"),
              Scored("3", rt, row, np.zeros(4), media=audio, media_bytes=b"wav",
                     segment_scores=row[None, :]),
              Scored("3", rt, row, np.zeros(4), media=audio, media_bytes=b"wav2",
                     segment_scores=row[None, :])]
    out = assemble(req, "t", scored, media, request_id="r", now=1.0, review=True, text_key=KEY)
    results = {r["id"]: r for r in out.response["results"]}
    assert results["img"]["decision"] == "review"  # sexual 0.7 past the default 0.6
    assert results["loud"]["decision"] == "block"  # the keyword in what was said
    span = next(r for r in results["loud"]["reasons"] if r["kind"] == "keyword")["span"]
    assert span == {"start": 0.1, "end": 1.9, "text": "I will find you"}
    kept = {i.item_id: i.media_blob for i in out.review_items}
    assert kept == {"img": b"png", "loud": None, "agreed": b"wav2"}  # audio needs consent
    ev = {e.item_id: e for e in out.events}
    assert ev["img"].modality == "image" and ev["img"].embedding is not None
    assert ev["img"].embedding.shape == (224,)  # the image model's, for image drift
    assert "words" not in ev["loud"].media and ev["loud"].text is None  # store_raw_text off


def test_image_labels_stay_out_of_the_text_heads_training_data(db_url: str) -> None:
    store = LabelStore(db_url, KEY)
    engine = create_engine(db_url)
    with engine.begin() as conn:
        for item, modality in (("caption", "image"), ("said", "audio"), ("typed", "text")):
            put_item(conn, tenant="t", item_id=item, text="some words", text_sha256=item * 2,
                     source="review", ts=1.0, modality=modality)
            conn.execute(insert(labels_t).values(tenant="t", item_id=item, annotator="m",
                                                 category="hate", value=1.0, confidence=1.0,
                                                 ts=2.0, submission_id="s"))
    assert {r.item_id for r in store.aggregated()} == {"said", "typed"}
    assert store.count_labels() == 3  # counted all the same (new-label triggers)
    store.close()


def test_calibration_evidence_leaves_out_reviewed_images(db_url: str) -> None:
    from bastion.core.store.tables import review_items

    store = LabelStore(db_url, KEY)
    engine = create_engine(db_url)
    with engine.begin() as conn:
        for item, modality in (("photo", "image"), ("typed", "text")):
            put_item(conn, tenant="t", item_id=item, text="words", text_sha256=item * 2,
                     source="review", ts=1.0, modality=modality)
            conn.execute(insert(labels_t).values(tenant="t", item_id=item, annotator="m",
                                                 category="hate", value=1.0, confidence=1.0,
                                                 ts=2.0, submission_id="s"))
            conn.execute(insert(review_items).values(
                tenant="t", item_id=item, task_id="task", text="words", text_sha256=item * 2,
                source="decision", scores='{"hate": 0.7}', keyword_hits="[]", ts=1.0,
                model_version="3", modality=modality))
    for version in (None, "3"):
        scores, _labels = store.reviewed(version)[("t", "hate")]
        assert len(scores) == 1  # the typed item only
    store.close()


def test_what_a_clip_says_is_withheld_like_its_text() -> None:
    from bastion.review.records import media_without_words

    media = {"format": "wav", "transcript": "I will find you", "words": [[0.1, 0.3, "I"]],
             "segments": [[0.1, 1.0, "I will find you"]], "cues": {"burst_db": 3.0},
             "reasons": [{"kind": "keyword", "rule": "threats", "text": "I will find you",
                          "span": {"start": 0.1, "end": 1.0, "text": "I will find you"}},
                         {"kind": "acoustic", "cue": "shouting", "span": [0.2, 0.9]}]}
    out = media_without_words(media)
    assert out is not None and "find you" not in repr(out)
    assert out["reasons"][0]["span"] == {"start": 0.1, "end": 1.0}
    assert out["reasons"][1]["span"] == [0.2, 0.9] and out["cues"] == {"burst_db": 3.0}
