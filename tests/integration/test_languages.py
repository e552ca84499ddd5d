"""Languages on the served platform: each result's language, and routing by language to the
@multilingual version (the shipped multilingual starter, on USE multilingual) beside the
English @champion, on the real Serve application and MLflow registry."""

from __future__ import annotations

import time
from typing import Any

import pytest

from bastion.registry.aliases import MULTILINGUAL
from bastion.registry.store import ModelRegistry
from bastion.training.starter import MULTILINGUAL_DIR, register_starter, shipped_starter
from tests._requires import missing

from .conftest import Served, Starter

pytestmark = [pytest.mark.ray, pytest.mark.model, pytest.mark.mlflow]

KOREAN = "너 같은 쓰레기는 꺼져라 진짜 역겹다"
ENGLISH = "you are a worthless piece of trash and everyone hates you, bitch"


def versions_of(served: Served, texts: list[str]) -> list[dict[str, Any]]:
    r = served.moderate("acme", texts)
    assert r.status_code == 200, r.text
    results: list[dict[str, Any]] = r.json()["results"]
    return results


def wait_for_route(served: Served, version: str, timeout_s: float = 90) -> list[dict[str, Any]]:
    deadline = time.time() + timeout_s
    while True:
        got = versions_of(served, [KOREAN, ENGLISH])
        if got[0]["model_version"] == version or time.time() > deadline:
            return got
        time.sleep(1.0)


def test_other_languages_are_scored_by_the_multilingual_version_english_by_the_champion(
        served: Served, starter: Starter) -> None:
    if shipped_starter(MULTILINGUAL_DIR) is None:
        missing("the shipped multilingual starter (training/starter_model_multilingual/)",
                "bastion starter build --multilingual")
    # before @multilingual names a version, every language goes to the champion
    before = versions_of(served, [KOREAN, ENGLISH])
    assert [r["model_version"] for r in before] == [starter.version] * 2
    assert [r["language"] for r in before] == ["ko", "en"]
    version, _ = register_starter(served.settings, served.policy, path=MULTILINGUAL_DIR,
                                  alias=MULTILINGUAL)
    registry = ModelRegistry(served.settings)
    try:
        korean, english = wait_for_route(served, version)
        assert korean["model_version"] == version, korean
        assert english["model_version"] == starter.version  # one request, two models
        assert korean["language"] == "ko" and english["language"] == "en"
        # the tenant's categories, scored and decided on the multilingual heads
        assert set(korean["scores"]) == {"hate", "harassment", "spam"}
        assert korean["decision"] != "allow", korean["reasons"]
        with served.client() as c:
            ready = c.get("/readyz").json()
        assert ready["multilingual"]["model_version"] == version
        assert ready["multilingual"]["encoder"] == "use-multilingual"
    finally:  # back to one model for the other tests of the platform
        registry.client.delete_registered_model_alias(registry.name, MULTILINGUAL)
    back = wait_for_route(served, starter.version)
    assert back[0]["model_version"] == starter.version
