"""The review router on a plain FastAPI app, with a real queue (SQLite) and a fake of what the
serving application hands it (tenant authentication, reviewer key hashes)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from bastion.core.http import ApiError, bearer_token, install_error_handlers
from bastion.core.keys import key_hash
from bastion.core.policy import parse_policy
from bastion.review.queue import ReviewQueue
from bastion.review.records import ReviewItem
from bastion.review.routes import include_review
from bastion.review.service import ReviewService

POLICY = parse_policy({"tenants": {
    "acme": {"categories": {"hate": {"block_threshold": 0.8, "review_threshold": 0.4}}},
    "studio": {"categories": {"hate": {"block_threshold": 0.8}}},
}})
REVIEWERS = {"rev_ann": ("ann", "moderator", ["acme"]), "rev_bob": ("bob", "moderator", ["acme"]),
             "rev_sam": ("sam", "moderator", ["studio"]), "rev_x": ("x", "auditor", ["acme"])}


class FakeAccess:
    def __init__(self, service: ReviewService) -> None:
        self.service = service

    def review_service(self) -> ReviewService:
        return self.service

    def authenticate(self, request: Request, tenant: str) -> str:
        if bearer_token(request) != f"bst_{tenant}":
            raise ApiError(401, f"the API key is not valid for tenant {tenant!r}")
        return tenant

    def reviewer_hashes(self) -> Mapping[str, Mapping[str, Any]]:
        return {key_hash(k): {"name": n, "role": r, "tenants": t}
                for k, (n, r, t) in REVIEWERS.items()}


@pytest.fixture()
def service(tmp_path: Path) -> ReviewService:
    return ReviewService(ReviewQueue(f"sqlite:///{tmp_path / 'review.db'}"), lambda: POLICY)


@pytest.fixture()
def client(service: ReviewService) -> Iterator[TestClient]:
    app = FastAPI()
    install_error_handlers(app)
    include_review(app, FakeAccess(service))
    with TestClient(app) as c:
        yield c


def as_(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_report_makes_a_task_a_moderator_claims_and_labels_it(
    client: TestClient, service: ReviewService
) -> None:
    service.intake_decisions([ReviewItem(
        tenant="acme", item_id="m1", text="some text", text_sha256="x", session_id="s1",
        user_id="u1", source="decision", scores={"hate": 0.6}, keyword_hits=[],
        decision="review", model_version="1", policy_version="p", ts=1.0)])
    r = client.post("/v1/reports", json={"tenant": "acme", "reporter": "v", "reason": "hate",
                                         "session_id": "s1"}, headers=as_("bst_acme"))
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]
    assert client.get(f"/v1/review/tasks/{task_id}", headers=as_("rev_sam")).status_code == 404
    got = client.post("/v1/review/claim", headers=as_("rev_ann")).json()
    assert got["claim"]["task_id"] == task_id and "gold" not in got["task"]
    sub = {"token": got["claim"]["token"], "submission_id": "a1",
           "labels": [{"item_id": "m1", "category": "hate", "value": 1.0}]}
    r = client.post("/v1/review/submit", json=sub, headers=as_("rev_bob"))
    assert (r.status_code, r.json()) == (403, {"error": "that claim belongs to another reviewer"})
    first = client.post("/v1/review/submit", json=sub, headers=as_("rev_ann")).json()
    again = client.post("/v1/review/submit", json=sub, headers=as_("rev_ann")).json()
    assert (first["duplicate"], again["duplicate"], first["labels"]) == (False, True, 1)


@pytest.mark.parametrize(("method", "path", "key", "status", "error"), [
    ("POST", "/v1/review/claim", None, 401, "missing reviewer key"),
    ("POST", "/v1/review/claim", "bst_acme", 401, "the key is not a reviewer key"),
    ("GET", "/v1/review/queue", "rev_x", 403, "reviewer 'x' has role 'auditor'"),
    ("POST", "/v1/reports", "bst_studio", 401, "not valid for tenant 'acme'"),
])
def test_keys_are_checked(client: TestClient, method: str, path: str, key: str | None,
                          status: int, error: str) -> None:
    json = {"tenant": "acme", "reporter": "v", "reason": "hate", "session_id": "s"}
    r = client.request(method, path, headers=as_(key) if key else {},
                       json=json if path == "/v1/reports" else None)
    assert r.status_code == status and error in r.json()["error"]


def test_bad_bodies_name_the_field(client: TestClient) -> None:
    r = client.post("/v1/review/submit", headers=as_("rev_ann"), json={
        "token": "t", "submission_id": "s",
        "labels": [{"item_id": "m1", "category": "hate", "value": 2}]})
    assert r.status_code == 422
    assert r.json()["details"] == ["labels.0.value: Input should be less than or equal to 1"]
    r = client.post("/v1/reports", headers=as_("bst_acme"), json={
        "tenant": "acme", "reporter": "v", "reason": "hate"})
    assert (r.status_code, r.json()) == (422, {
        "error": "a report names reported_user, reported_item or session_id"})
