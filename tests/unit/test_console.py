"""The console's routes (review/console.py) on a plain FastAPI app with a real queue, event log
and audit log (SQLite): sign-in, masked sessions and reveals, the exposure cap, the queue's
filters, the dashboards' aggregates, the audit log's scope and the page's security headers.
The browser drives the whole console in tests/integration/test_console_browser.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bastion.core.events import DecisionEvent, EventLog
from bastion.core.http import install_error_handlers
from bastion.core.policy import PolicySet, parse_policy
from bastion.review.console import CONTENT_SECURITY_POLICY, include_console
from bastion.review.queue import ReviewQueue
from bastion.review.records import Report, ReviewItem
from bastion.review.routes import include_review
from bastion.review.service import ReviewService
from tests.unit.test_review_routes import REVIEWERS, FakeAccess, as_

REVIEWERS.setdefault("rev_ops", ("ops", "mlops", ["acme"]))


def policy(cap: int = 400) -> PolicySet:
    return parse_policy({"tenants": {
        "acme": {"categories": {"hate": {"block_threshold": 0.8, "review_threshold": 0.4},
                                "spam": {"block_threshold": 0.9, "review_threshold": 0.5}},
                 "keywords": [{"name": "slurs", "phrases": ["vermin"], "action": "review",
                               "category": "hate"}],
                 "review": {"daily_exposure_cap": cap}},
        "studio": {"categories": {"hate": {"block_threshold": 0.8}}},
    }})


def item(item_id: str, score: float, session: str = "s1", tenant: str = "acme",
         text: str = "you are vermin, leave") -> ReviewItem:
    return ReviewItem(tenant=tenant, item_id=item_id, text=text, text_sha256="x",
                      session_id=session, user_id="u1", source="decision",
                      scores={"hate": score, "spam": 0.1}, keyword_hits=["slurs"],
                      decision="review", model_version="1", policy_version="p", ts=1.0)


class Setup:
    def __init__(self, tmp_path: Path, cap: int) -> None:
        self.url = f"sqlite:///{tmp_path / 'bastion.db'}"
        self.policy = policy(cap)
        self.service = ReviewService(ReviewQueue(self.url), lambda: self.policy)
        app = FastAPI()
        install_error_handlers(app)
        include_review(app, FakeAccess(self.service))
        include_console(app)
        self.client = TestClient(app)


@pytest.fixture()
def setup(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Setup]:
    s = Setup(tmp_path, getattr(request, "param", 400))
    with s.client:
        yield s


def test_sign_in_names_the_reviewer_and_is_audited(setup: Setup) -> None:
    r = setup.client.post("/v1/console/session", headers=as_("rev_ann"))
    assert r.status_code == 200, r.text
    me = r.json()
    assert me["name"] == "ann" and me["tenants"] == ["acme"] and me["exposure_today"] == 0
    assert setup.client.post("/v1/console/session").status_code == 401
    assert setup.client.post("/v1/console/session", headers=as_("nope")).status_code == 401
    audit = setup.client.get("/v1/console/audit", headers=as_("rev_ops")).json()["entries"]
    assert [(e["actor"], e["action"]) for e in audit] == [("ann", "sign_in")]


def test_a_claimed_session_is_masked_until_revealed_and_reveals_count(setup: Setup) -> None:
    setup.service.intake_decisions([item("m1", 0.7), item("m2", 0.6, text="hello there")])
    got = setup.client.post("/v1/console/claim", headers=as_("rev_ann")).json()
    items = got["task"]["items"]
    assert [i["text"] for i in items] == [None, None] and all(i["masked"] for i in items)
    assert items[0]["text_length"] == len("you are vermin, leave")
    token = got["claim"]["token"]
    # another moderator cannot reveal with ann's claim; the other tenant's sees nothing
    other = setup.client.post("/v1/console/reveal", json={"token": token, "item_id": "m1"},
                              headers=as_("rev_bob"))
    assert other.status_code == 403
    assert setup.client.post("/v1/console/claim", headers=as_("rev_sam")).json()["claim"] is None
    r = setup.client.post("/v1/console/reveal", json={"token": token, "item_id": "m1"},
                          headers=as_("rev_ann"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["text"] == "you are vermin, leave" and body["exposure_today"] == 1
    (span,) = body["keyword_spans"]
    assert body["text"][span["start"]:span["end"]] == "vermin" and span["rule"] == "slurs"
    again = setup.client.post("/v1/console/reveal", json={"token": token, "item_id": "m1"},
                              headers=as_("rev_ann")).json()
    assert again["exposure_today"] == 1  # a second look at the same item is not new exposure
    missing = setup.client.post("/v1/console/reveal", json={"token": token, "item_id": "zz"},
                                headers=as_("rev_ann"))
    assert missing.status_code == 404 and "not in the claimed session" in missing.json()["error"]


@pytest.mark.parametrize("setup", [1], indirect=True)
def test_past_the_daily_exposure_cap_claims_stop_with_429(setup: Setup) -> None:
    setup.service.intake_decisions([item("a", 0.7, session="s1"), item("b", 0.7, session="s2")])
    got = setup.client.post("/v1/console/claim", headers=as_("rev_ann")).json()
    setup.client.post("/v1/console/reveal", headers=as_("rev_ann"),
                      json={"token": got["claim"]["token"],
                            "item_id": got["task"]["items"][0]["item_id"]})
    r = setup.client.post("/v1/console/claim", headers=as_("rev_ann"))
    assert r.status_code == 429 and "daily exposure cap" in r.json()["error"]
    assert 0 < int(r.headers["Retry-After"]) <= 86400
    assert setup.client.get("/v1/console/me", headers=as_("rev_bob")).json()[
        "exposure_today"] == 0  # the cap is per moderator


def test_the_queue_says_why_and_filters_by_category_and_reason(setup: Setup) -> None:
    setup.service.intake_decisions([item("a", 0.7, session="s1"),
                                    item("b", 0.7, session="s2", text="plain words")])
    setup.service.report(Report(tenant="acme", report_id="r1", reporter="v", reported_user="u1",
                                reported_item=None, session_id="s2", reason="hate",
                                text="rude", ts=time.time()))
    q = setup.client.get("/v1/console/queue", headers=as_("rev_ann")).json()["tasks"]
    assert len(q) == 2 and all(t["age_s"] is not None and t["age_s"] >= 0 for t in q)
    assert all("hate" in t["categories"] for t in q)
    reported = setup.client.get("/v1/console/queue?reason=reports",
                                headers=as_("rev_ann")).json()["tasks"]
    assert [t["reports"] for t in reported] == [1]
    assert setup.client.get("/v1/console/queue?category=spam",
                            headers=as_("rev_ann")).json()["tasks"] == []
    assert setup.client.get("/v1/console/queue", headers=as_("rev_sam")).json()["tasks"] == []


def _event(ts: float, tenant: str, decision: str, category: str | None,
           language: str | None = "en") -> DecisionEvent:
    reasons = [] if category is None else [{"kind": "model", "category": category,
                                            "action": decision}]
    return DecisionEvent(ts=ts, request_id="r", tenant=tenant, item_id=f"i{ts}",
                         session_id=None, user_id=None, text=None, text_sha256="x",
                         text_len=3, decision=decision, scores={}, reasons=reasons,
                         model_version="1", policy_version="p",
                         embedding=np.zeros(4, dtype=np.float32), language=language)


def test_the_dashboards_count_decisions_per_bucket_category_and_tenant(setup: Setup) -> None:
    now = time.time()
    log = EventLog(setup.url)
    log.append([_event(now - 10, "acme", "block", "hate"),
                _event(now - 20, "acme", "review", "spam", "ko"),
                _event(now - 30, "acme", "allow", None, None),
                _event(now - 7200, "acme", "block", "hate"),
                _event(now - 10, "studio", "block", "hate")])
    log.close()
    ov = setup.client.get("/v1/console/overview?hours=24", headers=as_("rev_ann")).json()
    assert sum(ov["decisions"]["block"]) == 2 and sum(ov["decisions"]["allow"]) == 1
    assert ov["decisions"]["block"][-1] == 1  # the newest hour
    assert ov["by_category"]["hate"]["block"] == 2 and ov["by_category"]["spam"]["review"] == 1
    assert list(ov["by_tenant"]) == ["acme"]  # studio's decisions are not ann's to see
    assert ov["by_language"] == {"en": {"block": 2, "review": 0, "allow": 0},
                                 "ko": {"block": 0, "review": 1, "allow": 0},
                                 "none": {"block": 0, "review": 0, "allow": 1}}
    assert ov["minutes_saved"]["automatic_decisions"] == 3
    mon = setup.client.get("/v1/console/monitor", headers=as_("rev_ann")).json()
    assert mon["total"] == 3 and len(mon["buckets"]) >= 30
    assert {e["decision"] for e in mon["latest"]} == {"block", "review", "allow"}
    bad = setup.client.get("/v1/console/overview?hours=2000&bucket_s=60",
                           headers=as_("rev_ann"))
    assert bad.status_code == 422 and "buckets" in bad.json()["error"]


def test_the_audit_log_is_for_ml_ops_and_holds_their_tenants_only(setup: Setup) -> None:
    setup.service.intake_decisions([item("a", 0.7), item("z", 0.7, tenant="studio")])
    for key in ("rev_ann", "rev_sam"):
        got = setup.client.post("/v1/console/claim", headers=as_(key)).json()
        setup.client.post("/v1/review/submit", headers=as_(key), json={
            "token": got["claim"]["token"], "submission_id": f"sub-{key}",
            "labels": [{"item_id": got["task"]["items"][0]["item_id"], "category": "hate",
                        "value": 1.0}]})
    assert setup.client.get("/v1/console/audit", headers=as_("rev_ann")).status_code == 403
    entries = setup.client.get("/v1/console/audit", headers=as_("rev_ops")).json()["entries"]
    assert {(e["actor"], e["action"], e["tenant"]) for e in entries} == {
        ("ann", "claim", "acme"), ("ann", "submit", "acme")}


def test_the_page_and_its_assets_carry_the_security_headers(setup: Setup) -> None:
    page = setup.client.get("/console/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe" not in \
        CONTENT_SECURITY_POLICY
    assert page.headers["X-Frame-Options"] == "DENY"
    assert '<script src="/console/assets/console.js"' in page.text and "cdn" not in page.text
    js = setup.client.get("/console/assets/console.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert "innerHTML" not in js.text  # server text goes in as textContent only
    assert setup.client.get("/console/assets/other.js").status_code == 404
    assert setup.client.get("/console", follow_redirects=False).headers["location"] == "/console/"


def test_moderator_measures_are_for_ml_ops_and_count_agreement(setup: Setup) -> None:
    setup.service.intake_decisions([item("a", 0.78)])  # near the threshold: 3 labels wanted
    for key, value in (("rev_ann", 1.0), ("rev_bob", 1.0)):
        got = setup.client.post("/v1/console/claim", headers=as_(key)).json()
        assert got["claim"], got
        r = setup.client.post("/v1/review/submit", headers=as_(key), json={
            "token": got["claim"]["token"], "submission_id": f"m-{key}",
            "labels": [{"item_id": "a", "category": "hate", "value": value}]})
        assert r.status_code == 200, r.text
    assert setup.client.get("/v1/console/moderators", headers=as_("rev_ann")).status_code == 403
    rows = {m["moderator"]: m for m in setup.client.get(
        "/v1/console/moderators", headers=as_("rev_ops")).json()["moderators"]}
    assert set(rows) == {"ann", "bob"}
    assert rows["ann"]["sessions"] == 1 and rows["ann"]["items"] == 1
    assert rows["ann"]["agreement"] == 1.0 and rows["ann"]["pairs"] == 1
    assert {r["category"] for r in rows["ann"]["reliability"]} == {"hate"}


def test_the_script_parses() -> None:
    """A syntax error would leave the page dead; the browser tests would say so later."""
    import shutil
    import subprocess
    from importlib import resources

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the browser tests check the script instead")
    script = resources.files("bastion.review").joinpath("console_static", "console.js")
    with resources.as_file(script) as path:
        done = subprocess.run([node, "--check", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
