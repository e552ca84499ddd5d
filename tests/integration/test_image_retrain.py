"""The image heads' loop on the real components: images moderated through the served API (the
shipped image-safety backbone logs each one's embedding), moderators' labels in the label
store, Ray Train, MLflow's registry and the gate, and the image deployment following the image
model's ``@champion``.

No labelled images of abuse exist here, so the category is one our own media can honestly
show: ``screenshot`` (a chat rendered with Pillow) against benign photos (crops of skimage's
and scikit-learn's). What this measures is the loop, not the quality of a moderation head.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from bastion.core.events import EventLog
from bastion.core.labels import put_item, put_label
from bastion.core.store import open_store
from bastion.registry.aliases import CHAMPION, image_model_name
from bastion.registry.store import ModelRegistry
from bastion.training.image_retrain import ImageRetrainOptions, retrain_images
from bastion.training.retrain import RetrainError
from tests.integration._media import b64
from tests.integration.conftest import Served
from tests.media_samples import caption_variant, photo_variant

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.model]

# screenshots and photos. Item ids (so the split) are fixed: 12 screenshots and 18 photos are
# held out, past the gate's min_positives of 10 (a fresh state directory per test session)
N_EACH = 80


def post(served: Served, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with httpx.Client(base_url=served.url, timeout=120) as c:
        r = c.post("/v1/moderate", json={"tenant": "studio", "items": items},
                   headers={"Authorization": f"Bearer {served.keys['studio']}"})
    assert r.status_code == 200, r.text
    results: list[dict[str, Any]] = r.json()["results"]
    return results


def label(served: Served, items: list[tuple[str, float]]) -> None:
    """Moderators' labels as a review submission writes them: the item (an image), then
    each moderator's label; a second moderator labels every third item too."""
    engine, _ = open_store(served.settings.database_url)
    now = time.time()
    with engine.begin() as conn:
        for k, (item_id, value) in enumerate(items):
            put_item(conn, tenant="studio", item_id=item_id, text=None,
                     text_sha256=f"image:{item_id}", source="review", ts=now, modality="image")
            for who in ("mod-a", "mod-b")[: 2 if k % 3 == 0 else 1]:
                put_label(conn, tenant="studio", item_id=item_id, annotator=who,
                          category="screenshot", value=value, confidence=1.0, ts=now,
                          submission_id=f"sub-{who}-{k}")
    engine.dispose()


def wait_for_version(served: Served, image: bytes, version: str | None,
                     timeout_s: float = 90) -> dict[str, Any]:
    """Moderate ``image`` until the response says the image deployment serves ``version``
    of the image heads (None: the shipped model alone)."""
    deadline = time.time() + timeout_s
    while True:
        got = post(served, [{"id": f"probe-{uuid.uuid4().hex[:8]}",
                             "image_base64": b64(image)}])[0]
        if got["media"]["image_version"] == version or time.time() > deadline:
            return got
        time.sleep(1.0)


def test_reviewed_images_train_gated_image_heads_that_serving_then_uses(served: Served) -> None:
    shots = [(f"shot-{i}", caption_variant(i)) for i in range(N_EACH)]
    photos = [(f"photo-{i}", photo_variant(i)) for i in range(N_EACH)]
    before = EventLog(served.settings.database_url)
    n0 = before.count("studio")
    media = shots + photos
    for i in range(0, len(media), 14):  # under limits.max_media_items
        results = post(served, [{"id": item_id, "image_base64": b64(data)}
                                for item_id, data in media[i:i + 14]])
        # nothing scores the new category yet: no image heads are @champion
        assert all("screenshot" not in r["scores"] for r in results)
        assert all(r["media"]["image_version"] is None for r in results)
        assert all("screenshot" in r["media"]["categories"] for r in results)
    deadline = time.time() + 30  # the event writer flushes in the background
    while before.count("studio") < n0 + len(media) and time.time() < deadline:
        time.sleep(0.2)
    before.close()
    label(served, [(i, 1.0) for i, _ in shots] + [(i, 0.0) for i, _ in photos])

    registry = ModelRegistry(served.settings, image_model_name(served.settings.model_name))
    try:
        result = retrain_images(served.settings, served.policy, ImageRetrainOptions(),
                                say=print)
        print(result.gate_table, result.timings_s, result.snapshot["splits"])
        assert result.promoted and result.gate_passed, result.gate_table
        assert result.snapshot["categories"]["screenshot"]["labelled"] >= 2 * N_EACH
        assert "studio/screenshot" in result.gate_table
        assert registry.by_alias(CHAMPION).version == result.version
        info = registry.get(result.version)
        assert info.tags["validation_status"] == "passed"
        assert info.tags["bastion.kind"] == "retrain-image"
        held = result.metrics["screenshot"]
        assert held["n"] >= 20 and held["auroc"] >= 0.95, held

        # serving follows the image model's @champion: a new screenshot now scores high on
        # the category (and goes to review: its action), a new photo low
        shot = wait_for_version(served, caption_variant(10_001), result.version)
        assert shot["media"]["image_version"] == result.version, shot["media"]
        assert shot["scores"]["screenshot"] >= 0.5
        fired = next(r for r in shot["reasons"] if r.get("category") == "screenshot")
        assert fired["scored_by"] == f"image heads v{result.version}"
        assert shot["decision"] == "review"
        pic = post(served, [{"id": "photo-new", "image_base64": b64(photo_variant(
            10_002))}])[0]
        assert pic["scores"]["screenshot"] < 0.5 and pic["decision"] == "allow"

        # the same data and configuration again is refused: it is already that version
        with pytest.raises(RetrainError, match="already image model version"):
            retrain_images(served.settings, served.policy, ImageRetrainOptions())
    finally:  # back to the shipped model alone, for the other tests of the platform
        try:
            registry.client.delete_registered_model_alias(registry.name, CHAMPION)
        except Exception:  # noqa: BLE001 - nothing was promoted
            pass
    back = wait_for_version(served, caption_variant(10_003), None)
    assert back["media"]["image_version"] is None and "screenshot" not in back["scores"]
