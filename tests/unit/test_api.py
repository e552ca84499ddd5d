"""The moderation API's HTTP layer without Ray: a fake deployment behind serving.api, so the
error contract (400/413/422 and their messages), the body limits and the routes are checked
in milliseconds; the real deployment is tests/integration/test_serving.py."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from fastapi import Request
from fastapi.testclient import TestClient

from bastion.core.http import ApiError
from bastion.core.keys import key_hash
from bastion.core.settings import Limits, Settings
from bastion.review.service import ReviewService
from bastion.serving.api import build_api
from bastion.serving.auth import authenticate_tenant
from bastion.serving.schemas import ModerateRequest

KEY = "bst_acme"
AUTH = {"Authorization": f"Bearer {KEY}"}


class FakeDeployment:
    """Authenticates like the Ingress and echoes the items instead of scoring them."""

    def __init__(self) -> None:
        self.limits = Limits(max_items=4, max_text_chars=10, max_body_bytes=2048,
                             max_id_chars=8)
        self.settings = Settings(state_dir=Path(tempfile.gettempdir()) / "bastion-fake-api")
        self.seen: list[ModerateRequest] = []

    def authenticate(self, request: Request, tenant: str) -> str:
        return authenticate_tenant(request, tenant, {key_hash(KEY): "acme"}, {"acme"})

    def reviewer_hashes(self) -> Mapping[str, Mapping[str, Any]]:
        return {}

    def review_service(self) -> ReviewService:
        raise ApiError(503, "human review is not enabled on this deployment")

    async def moderate(self, req: ModerateRequest, request: Request) -> dict[str, Any]:
        tenant = self.authenticate(request, req.tenant)
        self.seen.append(req)
        return {"request_id": "r", "tenant": tenant, "model_version": "1",
                "policy_version": "p", "results": []}

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        return False, {"scorer": {"error": "not started"}}


@pytest.fixture()
def deployment() -> FakeDeployment:
    return FakeDeployment()


@pytest.fixture()
def client(deployment: FakeDeployment) -> Iterator[TestClient]:
    with TestClient(build_api(deployment)) as c:
        yield c


def body(*texts: str, **extra: Any) -> dict[str, Any]:
    return {"tenant": "acme", "items": [{"id": str(i), "text": t} for i, t in enumerate(texts)],
            **extra}


def test_a_valid_request_reaches_the_deployment_parsed(
    client: TestClient, deployment: FakeDeployment
) -> None:
    r = client.post("/v1/moderate", json=body("hello"), headers=AUTH)
    assert r.status_code == 200, r.text
    assert deployment.seen[0].items[0].text == "hello"


def test_a_json_body_sent_as_a_form_is_still_read_as_json(client: TestClient) -> None:
    # curl -d sends application/x-www-form-urlencoded; the API reads every body as JSON.
    r = client.post("/v1/moderate", content=json.dumps(body("hi")), headers={
        **AUTH, "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(("raw", "status", "error"), [
    (b'{"tenant": "acme", "items": [{"id": "1", "text": "\xff"}]}', 400,
     "request body is not valid UTF-8 (byte 50: invalid start byte); encode the JSON as UTF-8"),
    (b'{"tenant": "acme",\n "items": [', 400,
     "request body is not valid JSON: Expecting value at line 2 column 12"),
])
def test_undecodable_bodies_are_400(client: TestClient, raw: bytes, status: int,
                                    error: str) -> None:
    r = client.post("/v1/moderate", content=raw, headers={**AUTH,
                                                           "Content-Type": "application/json"})
    assert (r.status_code, r.json()) == (status, {"error": error})


@pytest.mark.parametrize(("request_body", "details"), [
    (body("x" * 11), ["items.0.text: 11 characters; the limit is 10 (limits.max_text_chars)"]),
    (body("ok", "   "), ["items.1.text: only whitespace; send some text"]),
    ({"tenant": "acme", "items": [{"id": "1", "text": "a"}, {"id": "1", "text": "b"}]},
     ["items.1.id: '1' appears twice in this request"]),
    ({"tenant": "acme", "items": [{"id": "123456789", "text": "a"}]},
     ["items.0: an id is longer than 8 characters"]),
    ({"tenant": "acme", "items": [{"id": "1", "text": 5, "colour": "red"}]},
     ["items.0.text: Input should be a valid string", "items.0.colour: unknown field; remove it"]),
    ({"tenant": "acme", "items": []},
     ["items: List should have at least 1 item after validation, not 0"]),
])
def test_invalid_fields_are_422_each_named_by_its_path(
    client: TestClient, request_body: dict[str, Any], details: list[str]
) -> None:
    r = client.post("/v1/moderate", json=request_body, headers=AUTH)
    assert r.status_code == 422
    assert r.json() == {"error": "invalid request", "details": details}


def test_validation_comes_before_authentication(client: TestClient) -> None:
    assert client.post("/v1/moderate", json=body("   ")).status_code == 422
    r = client.post("/v1/moderate", json=body("hi"))
    assert (r.status_code, r.json()) == (401, {
        "error": "missing API key: send 'Authorization: Bearer <key>'"})
    r = client.post("/v1/moderate", json=body("hi"), headers={"X-API-Key": "bst_other"})
    assert (r.status_code, r.json()["error"]) == (401, "the API key is not valid for tenant "
                                                       "'acme'")


def test_too_many_items_is_413(client: TestClient) -> None:
    r = client.post("/v1/moderate", json=body(*"abcde"), headers=AUTH)
    assert (r.status_code, r.json()) == (413, {
        "error": "5 items in one request; the limit is 4 (limits.max_items): split the batch"})


def test_a_declared_body_past_the_limit_is_refused_before_it_is_read(
    client: TestClient, deployment: FakeDeployment
) -> None:
    r = client.post("/v1/moderate", content=b"{" + b" " * 3000, headers={
        **AUTH, "Content-Type": "application/json"})
    assert (r.status_code, r.json()) == (413, {
        "error": "request body is 3001 bytes; the limit is 2048 (limits.max_body_bytes)"})
    assert not deployment.seen


def test_a_streamed_body_past_the_limit_stops_at_the_limit(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(10):
            yield b" " * 1000

    r = client.post("/v1/moderate", content=chunks(), headers={
        **AUTH, "Content-Type": "application/json"})
    assert (r.status_code, r.json()) == (413, {
        "error": "request body is more than 2048 bytes; the limit is 2048 "
                 "(limits.max_body_bytes)"})


def test_health_readiness_docs_and_the_review_routes(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert (r.status_code, r.json()) == (503, {"ready": False,
                                               "scorer": {"error": "not started"}})
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/moderate", "/v1/reports", "/v1/events", "/v1/review/claim",
            "/v1/review/submit"} <= set(paths)
    assert "requestBody" in paths["/v1/moderate"]["post"]
    r = client.post("/v1/reports", json={"tenant": "acme", "reporter": "u", "reason": "spam",
                                         "session_id": "s"}, headers=AUTH)
    assert (r.status_code, r.json()) == (503, {
        "error": "human review is not enabled on this deployment"})
