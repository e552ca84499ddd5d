"""Shadow challengers on real serving: a candidate shadows live traffic and never decides, the
report compares it with @champion on what moderators reviewed, the gate can require that
evidence, and a canary decides a share of one tenant's traffic until its reviewed precision
falls below the champion's (the shadow Scorer rolls it back by itself)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from bastion.cli import cli
from bastion.core.labelled import LabelledSet
from bastion.core.labels import put_item, put_label
from bastion.core.policy import parse_policy
from bastion.core.shadow_events import ShadowLog
from bastion.core.store import open_store
from bastion.registry.lifecycle import Lifecycle
from bastion.registry.shadow import (
    SHADOW_ITEMS,
    SHADOW_PRECISION,
    shadow_config,
    start_shadow,
    stop_shadow,
)
from bastion.registry.store import ModelRegistry

from .conftest import Served, Starter
from .test_registry import register, variant

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.model]

ABUSIVE = ["you are a stupid bitch", "I hate you, you worthless piece of trash",
           "go back to where you came from, nobody wants your kind here",
           "you disgusting idiot, everyone hates you"]
CAT = "harassment"  # what the starter flags the abusive texts for (acme reviews it)
BENIGN = ["see you at lunch tomorrow", "the weather is lovely today",
          "thanks for the help with my homework", "what time does the match start?"]


def post(served: Served, tenant: str, texts: list[str]) -> list[dict[str, Any]]:
    items = [{"id": f"sh-{uuid.uuid4().hex[:12]}", "text": t} for t in texts]
    with httpx.Client(base_url=served.url, timeout=120) as c:
        r = c.post("/v1/moderate", json={"tenant": tenant, "items": items},
                   headers={"Authorization": f"Bearer {served.keys[tenant]}"})
    assert r.status_code == 200, r.text
    results: list[dict[str, Any]] = r.json()["results"]
    for res, text in zip(results, texts, strict=True):
        res["_text"] = text
    return results


def shadowing(served: Served) -> dict[str, Any]:
    """The Ingress's shadow counters (scored, skipped, failed, in flight) and the run it holds,
    from /readyz: what a failed wait reports."""
    with httpx.Client(base_url=served.url, timeout=30) as c:
        state: dict[str, Any] = c.get("/readyz").json()["ingress"]["shadow"]
    return state


def flagged(result: dict[str, Any], category: str) -> bool:
    return any(r.get("kind") == "model" and r.get("category") == category
               for r in result["reasons"])


def label(served: Served, tenant: str, values: dict[str, float], category: str) -> None:
    """Moderators' labels as a review submission writes them."""
    engine, _ = open_store(served.settings.database_url)
    now = time.time()
    with engine.begin() as conn:
        for k, (item_id, value) in enumerate(values.items()):
            put_item(conn, tenant=tenant, item_id=item_id, text=None,
                     text_sha256=f"sha:{item_id}", source="review", ts=now)
            put_label(conn, tenant=tenant, item_id=item_id, annotator="mod-a",
                      category=category, value=value, confidence=1.0, ts=now,
                      submission_id=f"sub-shadow-{k}-{item_id}")
    engine.dispose()


@pytest.fixture(scope="module")
def challenger(served: Served, starter: Starter) -> str:
    """A worse candidate: the starter with its harassment head negated (it flags the benign)."""
    return register(served.settings, variant(starter.model, negate="harassment"))


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_a_shadow_scores_live_traffic_never_decides_and_is_reported(
        served: Served, starter: Starter, challenger: str) -> None:
    state = str(served.settings.state_dir)
    registry = ModelRegistry(served.settings)
    out = run("shadow", "start", challenger, "--sample", "1.0", "--state-dir", state,
              "--reason", "test")
    assert f"Shadowing version {challenger}" in out
    log = ShadowLog(served.settings.database_url)
    results: list[dict[str, Any]] = []
    try:
        deadline = time.time() + 90
        while log.count(challenger) == 0:  # the Ingress picks the run up within seconds
            assert time.time() < deadline, \
                f"the Ingress never shadowed an item: {shadowing(served)}"
            post(served, "acme", ["warming up the shadow"])
            time.sleep(0.5)
        while shadowing(served)["in_flight"]:  # the warm-up's calls are done: none skipped
            assert time.time() < deadline, f"shadow calls never finished: {shadowing(served)}"
            time.sleep(0.2)
        before = log.count(challenger)
        for _ in range(3):
            results += post(served, "acme", ABUSIVE + BENIGN)
        # the champion decided every item: the shadow never reaches a caller
        assert {r["model_version"] for r in results} == {starter.version}
        deadline = time.time() + 60
        while log.count(challenger) < before + len(results):
            assert time.time() < deadline, \
                f"shadow verdicts were not all written: {log.count(challenger) - before} of " \
                f"{len(results)}; the Ingress: {shadowing(served)}"
            time.sleep(0.2)
        rows = [e for e in log.read(version=challenger)
                if e.item_id in {r["id"] for r in results}]
        assert len(rows) == len(results)
        assert {e.champion_version for e in rows} == {starter.version}
        assert all(e.text is None for e in rows)  # acme keeps no raw text
        # moderators reviewed what either flagged: the challenger's benign flags are wrong
        text_of = {r["id"]: r["_text"] for r in results}
        label(served, "acme", {e.item_id: float(text_of[e.item_id] in ABUSIVE) for e in rows
                               if e.bands.get(CAT) or e.champion_bands.get(CAT)}, CAT)
        report = json.loads(run("shadow", "report", "--json", "--min-reviewed", "3",
                                "--state-dir", state))
        assert report["version"] == challenger and report["n"] >= len(results)
        harass = next(c for c in report["categories"]
                    if c["tenant"] == "acme" and c["category"] == "harassment")
        assert harass["agreement"] < 1.0
        assert harass["newly_flagged"] + harass["newly_allowed"] > 0
        assert report["latency_ms"]["shadow_p99"] is not None
        table = run("shadow", "report", "--state-dir", state)
        assert f"Shadow of v{challenger}" in table and "acme" in table

        # the gate can require shadow evidence: too few items, and the precision drop
        policy = parse_policy({**served.policy.model_dump(mode="json", exclude_none=True),
                               "gate": {"shadow_min_items": 100_000, "shadow_min_reviewed": 3,
                                        "max_p99_ms": 5000}})
        texts = ABUSIVE * 5 + BENIGN * 5
        labelled = np.array([[1.0]] * 20 + [[0.0]] * 20, np.float32)
        data = LabelledSet(texts=texts, groups=[f"g{i}" for i in range(40)],
                           sources=["test"] * 40, targets=labelled,
                           mask=np.ones((40, 1), bool), categories=["harassment"])
        gate = Lifecycle(served.settings, policy, eval_data=data, latency_items=5).gate(
            challenger)
        items = next(c for c in gate.checks if c.name == SHADOW_ITEMS)
        assert items.passed is False and not gate.passed
        assert any(c.name == SHADOW_PRECISION for c in gate.checks)
    finally:
        log.close()
        stop_shadow(registry, reason="test over")
    assert shadow_config(registry) is None
    assert [e["action"] for e in registry.audit_trail()][-2:] == ["shadow_started",
                                                                  "shadow_stopped"]


def test_a_canary_decides_for_its_tenant_and_is_rolled_back_by_itself(
        served: Served, starter: Starter, challenger: str) -> None:
    registry = ModelRegistry(served.settings)
    start_shadow(registry, challenger, sample=0.05, canary=0.5, tenant="acme",
                 tenants=list(served.policy.tenants), min_reviewed=3, reason="test canary")
    try:
        canary: list[dict[str, Any]] = []
        champion: list[dict[str, Any]] = []
        deadline = time.time() + 120
        while (sum(flagged(r, "harassment") for r in canary) < 4
               or sum(flagged(r, "harassment") for r in champion) < 4):
            assert time.time() < deadline, (
                f"canary flagged {sum(flagged(r, 'harassment') for r in canary)} of "
                f"{len(canary)}, the champion {sum(flagged(r, 'harassment') for r in champion)} "
                f"of {len(champion)}")
            for tenant in ("acme", "studio"):
                got = post(served, tenant, ABUSIVE + BENIGN)
                if tenant == "studio":  # another tenant never meets the canary
                    assert {r["model_version"] for r in got} == {starter.version}
                    continue
                (canary if got[0]["model_version"] == challenger else champion).extend(got)
        # a request is the canary's or the champion's, whole
        assert {r["model_version"] for r in canary} == {challenger}
        # moderators: what the canary flagged was benign, what the champion flagged abusive
        label(served, "acme", {r["id"]: 0.0 for r in canary if flagged(r, CAT)}, CAT)
        label(served, "acme", {r["id"]: 1.0 for r in champion if flagged(r, CAT)}, CAT)
        deadline = time.time() + 60  # serving.canary_check_s is 2 s in these tests
        while (config := shadow_config(registry)) is not None and config.canary_active:
            assert time.time() < deadline, "the canary was never rolled back"
            time.sleep(1)
        assert config is not None and config.canary_stopped is not None
        assert "acme/harassment" in config.canary_stopped["why"]
        assert registry.audit_trail()[-1]["action"] == "canary_rolled_back"
        time.sleep(5)  # the Ingress reads the run's settings every 2 s
        later = [r for _ in range(6) for r in post(served, "acme", BENIGN)]
        assert {r["model_version"] for r in later} == {starter.version}
    finally:
        stop_shadow(registry, reason="test over")
