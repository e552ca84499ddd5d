"""The moderation API on a real Ray Serve application, over HTTP."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from bastion.core.events import DecisionEvent, EventLog, text_digest
from bastion.core.policy import parse_policy
from bastion.core.textkey import text_key
from bastion.platform import deploy

from .conftest import POLICY, Served

pytestmark = [pytest.mark.ray, pytest.mark.model]

ABUSE = "you are a worthless piece of trash and everyone hates you, bitch"


def test_moderate_returns_scores_decision_reasons_and_versions(served: Served) -> None:
    r = served.moderate("acme", [ABUSE, "see you at lunch tomorrow?"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "1" and body["policy_version"].startswith("t1-")
    abusive, benign = body["results"]
    assert set(abusive["scores"]) == {"hate", "harassment", "spam"}
    assert abusive["decision"] in {"block", "review"} and benign["decision"] == "allow"
    fired = abusive["reasons"][0]
    assert {"category", "score", "threshold"} <= set(fired)
    assert fired["score"] >= fired["threshold"]
    assert abusive["model_version"] == "1" and abusive["policy_version"] == body["policy_version"]
    assert benign["language"] == "en"
    korean = served.moderate("acme", ["내일 점심 같이 먹을래?", "👍"]).json()["results"]
    assert [r["language"] for r in korean] == ["ko", None]  # ISO 639-1; none without letters


def test_keyword_rule_and_allow_list(served: Served) -> None:
    body = served.moderate("acme", ["I will find you.", "scunthorpe", "gg all"]).json()
    threat, allowed, banter = body["results"]
    assert threat["decision"] == "block" and threat["reasons"][0]["rule"] == "threats"
    assert allowed["decision"] == "allow" and allowed["reasons"][0]["kind"] == "allow_list"
    assert banter["deprioritized"] == ["gg"]


@pytest.mark.parametrize("headers, expected", [
    ({}, "missing API key"),
    ({"Authorization": "Bearer bst_wrong"}, "not valid for tenant 'acme'"),
])
def test_missing_or_wrong_key_is_401(served: Served, headers: dict, expected: str) -> None:
    with served.client() as c:
        r = c.post("/v1/moderate", json={"tenant": "acme", "items": [{"id": "1", "text": "hi"}]},
                   headers=headers)
    assert r.status_code == 401 and expected in r.json()["error"]
    assert "studio" not in r.text and "scores" not in r.text


def test_a_tenant_key_opens_no_other_tenant(served: Served) -> None:
    r = served.moderate("studio", ["hello"], key=served.keys["acme"])
    assert r.status_code == 401 and "not valid for tenant 'studio'" in r.json()["error"]
    r = served.moderate("nobody", ["hello"], key=served.keys["acme"])
    assert r.status_code == 401
    body = served.moderate("studio", ["hello"]).json()
    assert set(body["results"][0]["scores"]) == {"violence", "sexual"}  # only its categories


@pytest.mark.parametrize("body, status, message", [
    ({"tenant": "acme", "items": []}, 422, "items: List should have at least 1 item"),
    ({"tenant": "acme", "items": [{"id": "1", "text": 5}]}, 422, "items.0.text"),
    ({"tenant": "acme", "items": [{"id": "1", "text": "   "}]}, 422, "only whitespace"),
    ({"tenant": "acme", "items": [{"id": "1", "text": "x" * 20_001}]}, 422,
     "the limit is 20000 (limits.max_text_chars)"),
    ({"tenant": "acme", "items": [{"id": str(i), "text": "x"} for i in range(257)]}, 413,
     "the limit is 256 (limits.max_items)"),
    ({"tenant": "acme", "items": [{"id": "1", "text": "a"}, {"id": "1", "text": "b"}]}, 422,
     "appears twice"),
    ({"tenant": "acme", "items": [{"id": "1", "text": "a", "colour": "red"}]}, 422,
     "unknown field"),
    # acme scores images on sexual and graphic_violence (the media defaults), not violence
    ({"tenant": "acme", "items": [{"id": "1", "text": "a"}], "categories": ["violence"]}, 422,
     "unknown categories ['violence'] for tenant 'acme'"),
])
def test_bad_input_gets_a_clear_4xx(served: Served, body: dict, status: int, message: str) -> None:
    with served.client() as c:
        r = c.post("/v1/moderate", json=body,
                   headers={"Authorization": f"Bearer {served.keys['acme']}"})
    assert r.status_code == status, r.text
    assert message in r.text


@pytest.mark.parametrize("raw, message", [
    (b'{"tenant": "acme", "items": [{"id": "1", "text": "\xff\xfe"}]}', "not valid UTF-8"),
    (b'{"tenant": "acme", "items": [', "not valid JSON"),
    (b'{"tenant": "acme", "items": [{"id": "1", "text": "\\ud800"}]}', "items.0.text"),
])
def test_undecodable_bodies_are_400_or_422(served: Served, raw: bytes, message: str) -> None:
    with served.client() as c:
        r = c.post("/v1/moderate", content=raw,
                   headers={"Authorization": f"Bearer {served.keys['acme']}",
                            "Content-Type": "application/json"})
    assert r.status_code in (400, 422) and message in r.text
    assert served.moderate("acme", ["still serving"]).status_code == 200


def test_health_ready_and_docs(served: Served) -> None:
    with served.client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz").json()
        assert ready["ready"] and ready["scorer"]["model_version"] == "1"
        spec = c.get("/openapi.json").json()
        assert "/v1/moderate" in spec["paths"]
        assert c.get("/docs").status_code == 200


def test_every_decision_is_logged_privately_unless_allowed(served: Served) -> None:
    log = EventLog(served.settings.database_url)
    key = text_key(served.settings)  # the install's: the replicas read the same file
    served.moderate("acme", ["private words one"])
    served.moderate("studio", ["studio words two"])
    deadline = time.time() + 10
    found: dict[str, DecisionEvent] = {}
    while time.time() < deadline and len(found) < 2:
        for rec in log.read():
            if rec.text_sha256 in {text_digest("private words one", key),
                                   text_digest("studio words two", key)}:
                found[rec.tenant] = rec
        time.sleep(0.3)
    assert found["acme"].text is None  # privacy by default: only the hash
    assert found["studio"].text == "studio words two"  # the policy allows raw text
    emb = found["acme"].embedding
    assert emb is not None and emb.shape == (384,)
    assert found["acme"].model_version == "1" and "hate" in found["acme"].scores
    assert found["acme"].language == "en" and found["studio"].language == "en"


def test_policy_edit_applies_without_restarting_a_replica(served: Served) -> None:
    def replicas() -> tuple[dict[str, tuple[int, float]], set[str]]:
        """Each Ingress replica /readyz reached (there are two): pid and policy load time."""
        seen: dict[str, tuple[int, float]] = {}
        scorers: set[str] = set()
        with served.client() as c:
            for _ in range(16):
                r = c.get("/readyz").json()
                seen[r["ingress"]["replica_id"]] = (r["ingress"]["pid"],
                                                    r["ingress"]["policy_loaded_at"])
                scorers.add(r["scorer"]["replica_id"])
        return seen, scorers

    before, scorers_before = replicas()
    assert served.moderate("acme", ["banana split"]).json()["results"][0]["decision"] == "allow"
    data = json.loads(json.dumps(served.policy.model_dump(mode="json", exclude_none=True)))
    data["tenants"]["acme"]["keywords"].append(
        {"name": "fruit", "phrases": ["banana split"], "action": "review"})
    try:
        deploy(served.settings, parse_policy(data), served.keys, served.dashboard)
        body = served.moderate("acme", ["banana split"]).json()
        assert body["results"][0]["decision"] == "review"
        assert body["policy_version"] != served.policy.tenant_version("acme")
        after, scorers_after = replicas()
        assert set(after) <= set(before) and scorers_after <= scorers_before  # none restarted
        for rid, (pid, loaded_at) in after.items():
            assert pid == before[rid][0] and loaded_at > before[rid][1]
    finally:
        deploy(served.settings, served.policy, served.keys, served.dashboard)
    assert served.moderate("acme", ["banana split"]).json()["results"][0]["decision"] == "allow"


def test_concurrent_requests_batch_and_all_succeed(served: Served) -> None:
    import concurrent.futures as cf

    texts = [f"message number {i} about the weather" for i in range(40)]
    with cf.ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda t: served.moderate("acme", [t]).status_code, texts))
    assert codes == [200] * 40


def test_cli_moderate_talks_to_the_server(served: Served) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "bastion.cli", "moderate", "--state-dir",
         str(served.settings.state_dir), "--url", served.url, "--tenant", "acme", "hello there"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["results"][0]["decision"] == "allow"


def test_unknown_tenant_in_the_policy_file_is_not_served(served: Served) -> None:
    assert POLICY.exists()
    with httpx.Client(base_url=served.url) as c:
        r = c.post("/v1/moderate", json={"tenant": "ghost", "items": [{"id": "1", "text": "x"}]},
                   headers={"Authorization": "Bearer bst_nothing"})
    assert r.status_code == 401


def test_up_reloads_an_edited_policy_file_and_rejects_a_bad_edit(
        served: Served, tmp_path: Path) -> None:
    """The step `bastion up` runs when the policy file changes."""
    import yaml

    from bastion.platform import reload_policy

    said: list[str] = []
    path = tmp_path / "policy.yaml"
    path.write_text("tenants:\n  acme:\n    categories:\n      hate: {block_threshold: 2}\n")
    assert reload_policy(served.settings, path, served.dashboard, said.append) is None
    assert "Policy edit rejected" in said[-1] and "block_threshold" in said[-1]
    data = json.loads(json.dumps(served.policy.model_dump(mode="json", exclude_none=True)))
    # a category the model has no head for, and one whose target precision it never
    # reaches: applied all the same, said loudly, and the rest of the tenant keeps serving
    data["tenants"]["acme"]["categories"]["weapons"] = {"block_threshold": 0.5}
    data["tenants"]["acme"]["categories"]["hate"] = {"target_precision": 0.999}
    data["tenants"]["acme"]["keywords"].append(
        {"name": "fruit", "phrases": ["banana split"], "action": "review"})
    path.write_text(yaml.safe_dump(data))
    try:
        assert reload_policy(served.settings, path, served.dashboard, said.append) is not None
        assert said[-1].startswith("Policy reloaded: acme=")
        told = "\n".join(said)
        assert "2 category(ies) served otherwise than written" in told
        assert "acme.categories.weapons: model version 1 has no head 'weapons'" in told
        assert "acme.categories.hate: target_precision 0.999" in told
        body = served.moderate("acme", ["banana split", "you are all subhuman vermin"]).json()
        fruit, hateful = body["results"]
        assert fruit["decision"] == "review" and "weapons" not in fruit["scores"]
        assert hateful["decision"] in ("review", "allow")  # hate is review-only now
        for reason in hateful["reasons"]:
            if reason.get("category") == "hate":
                assert "target_precision 0.999" in reason["fallback"]
        with served.client() as c:
            fit = c.get("/readyz").json()["policy_fit"]
        assert any("weapons" in p for p in fit["acme"]) and any("hate" in p for p in fit["acme"])
    finally:
        deploy(served.settings, served.policy, served.keys, served.dashboard)
