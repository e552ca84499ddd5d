"""Images and voice through the served API, end to end on the real deployments: the shipped
image-safety model, tesseract-ocr, PDQ hashes, silero VAD, Whisper tiny.en and the acoustic
cues, then the text path, the event log and the review queue.

No labelled images or clips of abuse exist here: the media are our own (captions rendered with
Pillow, skimage's photos, espeak-ng speech; ``tests.media_samples``).
"""

from __future__ import annotations

import io
import time
from typing import Any

import httpx
import pytest
from PIL import Image

from bastion.core.events import EventLog
from bastion.review.queue import ReviewQueue
from tests._requires import missing
from tests.integration._media import b64
from tests.integration.conftest import Served
from tests.media_samples import (
    MISSING_TOOLS,
    espeak_available,
    photo,
    speech,
    tesseract_available,
    text_image,
)

pytestmark = [pytest.mark.ray, pytest.mark.model]


def _needs(tool: str, present: bool) -> None:
    if not present:
        missing(*MISSING_TOOLS[tool])


def post(served: Served, tenant: str, items: list[dict[str, Any]]) -> httpx.Response:
    with httpx.Client(base_url=served.url, timeout=120) as c:
        return c.post("/v1/moderate", json={"tenant": tenant, "items": items},
                      headers={"Authorization": f"Bearer {served.keys[tenant]}"})


def one(served: Served, tenant: str, item: dict[str, Any]) -> dict[str, Any]:
    r = post(served, tenant, [{"id": "m1", **item}])
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()["results"][0]
    return result


def test_a_rendered_threat_is_not_allowed_and_a_benign_caption_is(served: Served) -> None:
    _needs("tesseract", tesseract_available())
    threat = one(served, "acme", {"image_base64": b64(text_image(
        "I will find you and I will hurt you", fmt="JPEG"))})
    assert threat["modality"] == "image"
    assert "find you" in threat["media"]["text"].lower()
    assert threat["decision"] != "allow"
    fired = [r for r in threat["reasons"] if r["kind"] in ("keyword", "model")]
    assert fired and all(r["source"] == "ocr" for r in fired)
    benign = one(served, "acme", {"image_base64": b64(text_image(
        "Happy birthday grandma, see you at the beach", fmt="PNG"))})
    assert "birthday" in benign["media"]["text"].lower()
    assert benign["decision"] == "allow", benign["reasons"]
    assert set(benign["scores"]) >= {"sexual", "graphic_violence", "hate"}


def test_benign_photos_are_allowed_and_a_known_bad_images_copy_matches_its_hash(
        served: Served) -> None:
    for name in ("astronaut", "coffee"):
        got = one(served, "studio", {"image_base64": b64(photo(name))})
        assert got["decision"] == "allow", (name, got["reasons"])
        assert got["media"]["width"] > 0 and len(got["media"]["pdq"]) == 64
    # the listed photo, re-encoded smaller as a lossy JPEG, still matches its PDQ hash
    copy = one(served, "studio", {"image_base64": b64(photo("chelsea", "JPEG", scale=0.8,
                                                            quality=60))})
    assert copy["decision"] == "block"
    hit = next(r for r in copy["reasons"] if r["kind"] == "hash")
    assert hit["rule"] == "known-bad" and hit["distance"] <= hit["threshold"]
    # acme lists no hashes: the same photo is allowed there
    assert one(served, "acme", {"image_base64": b64(photo("chelsea"))})["decision"] == "allow"


def test_a_synthesized_threat_clip_is_not_allowed_and_benign_chat_is(served: Served) -> None:
    _needs("espeak-ng", espeak_available())
    threat = one(served, "acme", {"audio_base64": b64(speech(
        "listen to me. I will find you tonight", noise_db=20, pad_s=0.5))})
    assert threat["modality"] == "audio"
    assert "find you" in threat["media"]["transcript"].lower()
    assert threat["decision"] == "block"
    kw = next(r for r in threat["reasons"] if r["kind"] == "keyword")
    span = kw["span"]
    assert span is not None and 0 <= span["start"] < span["end"] <= threat["media"]["duration_s"]
    assert "find you" in span["text"].lower()
    words = threat["media"]["words"]
    assert words and all(a <= b for a, b, _ in words)
    benign = one(served, "acme", {"audio_base64": b64(speech(
        "hey, are we still meeting for lunch on friday", voice="en-gb", fmt="FLAC"))})
    assert benign["decision"] == "allow", benign["reasons"]
    assert benign["media"]["format"] == "flac"


def test_a_shouted_clip_raises_the_loudness_cue(served: Served) -> None:
    _needs("espeak-ng", espeak_available())
    calm = one(served, "acme", {"audio_base64": b64(speech("that was a good round, well played"))})
    loud = one(served, "acme", {"audio_base64": b64(speech(
        "that was a good round, well played", shout=True, fmt="OGG"))})
    assert loud["media"]["cues"]["max_momentary_lufs"] > calm["media"]["cues"]["max_momentary_lufs"]
    assert not any(r["kind"] == "acoustic" for r in calm["reasons"])
    cue = next(r for r in loud["reasons"] if r["kind"] == "acoustic" and r["cue"] == "shouting")
    assert cue["action"] == "review" and loud["decision"] == "review"
    assert cue["value"] >= cue["threshold"]


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "GIF")
    return buf.getvalue()


@pytest.mark.parametrize(("item", "message"), [
    ({"image_base64": "not base64!!"}, "not valid base64"),
    ({"image_base64": b64(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)}, "image"),
    ({"image_base64": b64(_gif())}, "GIF"),
    ({"audio_base64": b64(b"RIFF\0\0\0\0WAVEfmt garbage")}, "audio"),
    ({"text": "hi", "image_base64": "aGk="}, "exactly one of"),
    ({}, "exactly one of"),
])
def test_bad_media_is_a_422_that_says_what_is_wrong_and_serving_goes_on(
        served: Served, item: dict[str, Any], message: str) -> None:
    r = post(served, "acme", [{"id": "bad", **item}])
    assert r.status_code == 422, r.text
    assert message.lower() in r.text.lower()
    assert served.moderate("acme", ["still serving"]).status_code == 200


def test_oversized_media_is_refused_before_it_is_decoded(served: Served) -> None:
    _needs("espeak-ng", espeak_available())
    long_clip = speech("one two three", pad_s=70.0)  # past limits.max_audio_seconds (60)
    r = post(served, "acme", [{"id": "long", "audio_base64": b64(long_clip)}])
    assert r.status_code == 422 and "max_audio_seconds" in r.text
    huge = "A" * (6 * 1024 * 1024)  # 4.5 MiB decoded: past limits.max_image_bytes (4 MiB)
    r = post(served, "acme", [{"id": "huge", "image_base64": huge}])
    assert r.status_code == 422 and "max_image_bytes" in r.text


def _readyz(served: Served) -> dict[str, Any]:
    with served.client() as c:
        body: dict[str, Any] = c.get("/readyz").json()
    return body


def test_a_mixed_session_is_logged_and_reviewed_per_modality(served: Served) -> None:
    _needs("espeak-ng", espeak_available())
    session = f"voice-{time.time_ns()}"
    ctx = {"session_id": session, "user_id": "u1", "metadata": {"consent": True}}
    items = [
        {"id": f"{session}-t", "text": "gg everyone", "context": ctx},
        {"id": f"{session}-i", "image_base64": b64(photo("rocket", "WEBP")), "context": ctx},
        # shouted: the loudness cue sends it, and its session, to review
        {"id": f"{session}-a", "audio_base64": b64(speech(
            "come on team, push forward right now", shout=True, pad_s=0.3)),
         "context": ctx},
    ]
    r = post(served, "studio", items)
    assert r.status_code == 200, r.text
    results = {x["id"]: x for x in r.json()["results"]}
    assert results[f"{session}-a"]["decision"] == "review", results[f"{session}-a"]["reasons"]
    assert [results[i["id"]].get("modality", "text") for i in items] == ["text", "image", "audio"]
    time.sleep(1.0)  # the writers flush in the background
    log = EventLog(served.settings.database_url)
    try:
        events = {e.item_id: e for e in log.read(tenant="studio") if e.session_id == session}
    finally:
        log.close()
    assert {e.modality for e in events.values()} == {"text", "image", "audio"}
    image = events[f"{session}-i"]
    assert image.media is not None and image.media["format"] == "webp"
    assert image.embedding is not None and image.embedding.shape[0] != 384  # the image model's
    audio = events[f"{session}-a"]
    assert audio.media is not None and "words" not in audio.media  # the words are its text
    assert audio.text and "push forward" in audio.text.lower()  # studio keeps raw text
    queue = ReviewQueue(served.settings.database_url)
    try:
        task = next(t for t in queue.pending(["studio"], limit=500)
                    if t.group_key == f"session:{session}")
        kept = {i.item_id: i for i in task.items}
        clip = kept[f"{session}-a"]
        assert clip.modality == "audio" and clip.has_media  # studio keeps consented audio
        mime, data = queue.item_media(task.task_id, clip.item_id, ["studio"])
        assert mime == "audio/wav" and data[:4] == b"RIFF"
        assert clip.media is not None and clip.media["words"]
    finally:
        queue.close()


def test_a_text_only_tenant_never_reaches_the_media_deployments(served: Served) -> None:
    before = _readyz(served)
    assert served.moderate("acme", ["just text", "more text"] * 8).status_code == 200
    after = _readyz(served)
    assert after["images"]["batches"] == before["images"]["batches"]
    assert after["voice"]["clips"] == before["voice"]["clips"]
