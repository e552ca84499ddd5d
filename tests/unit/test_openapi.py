"""The API's OpenAPI document (what /openapi.json serves): valid, every reference resolves,
and every operation documents each status it can return, with the error body and, for 429
and 503, the Retry-After header. The served document is fuzzed against the running service
by tests/integration/test_openapi.py."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from openapi_spec_validator import validate

from bastion.serving.api import build_api

from .test_api import AUTH, FakeDeployment, body

# What each operation can answer besides its success (see the routes and core/http.py).
EXPECTED = {
    ("post", "/v1/moderate"): {200, 400, 401, 404, 413, 422, 429, 503},
    ("post", "/v1/reports"): {202, 400, 401, 404, 413, 422, 503},
    ("post", "/v1/events"): {202, 400, 401, 404, 413, 422, 503},
    ("post", "/v1/review/claim"): {200, 401, 403, 503},
    ("post", "/v1/review/submit"): {200, 400, 401, 403, 404, 409, 413, 422, 503},
    ("post", "/v1/review/release"): {200, 400, 401, 403, 409, 413, 422, 503},
    ("get", "/v1/review/tasks/{task_id}"): {200, 401, 403, 404, 422, 503},
    ("get", "/v1/review/queue"): {200, 401, 403, 422, 503},
    ("post", "/v1/console/session"): {200, 401, 403, 503},
    ("get", "/v1/console/me"): {200, 401, 403, 503},
    ("get", "/v1/console/queue"): {200, 401, 403, 422, 503},
    ("post", "/v1/console/claim"): {200, 401, 403, 429, 503},
    ("post", "/v1/console/reveal"): {200, 400, 401, 403, 404, 409, 413, 422, 503},
    ("get", "/v1/console/media"): {200, 401, 403, 404, 409, 422, 503},
    ("get", "/v1/console/overview"): {200, 401, 403, 422, 503},
    ("get", "/v1/console/monitor"): {200, 401, 403, 503},
    ("get", "/v1/console/audit"): {200, 401, 403, 422, 503},
    ("get", "/v1/console/moderators"): {200, 401, 403, 503},
    ("get", "/v1/console/models"): {200, 401, 403, 503},
    ("get", "/v1/console/models/{version}"): {200, 401, 403, 404, 422, 503},
    ("post", "/v1/console/models/{version}/promote"): {202, 400, 401, 403, 404, 409, 413, 422,
                                                       503},
    ("post", "/v1/console/models/rollback"): {200, 400, 401, 403, 409, 413, 422, 503},
    ("post", "/v1/console/categories"): {202, 400, 401, 403, 409, 413, 422, 503},
    ("get", "/v1/console/drift"): {200, 401, 403, 422, 503},
    ("get", "/v1/console/drift/{run_id}"): {200, 401, 403, 404, 422, 503},
    ("get", "/v1/console/jobs"): {200, 401, 403, 503},
    ("get", "/healthz"): {200},
    ("get", "/readyz"): {200, 503},
}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return build_api(FakeDeployment()).openapi()


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [
            r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_the_document_is_valid_openapi(doc: dict[str, Any]) -> None:
    validate(doc)


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    refs = set(_refs(doc))
    assert refs and all(r.startswith("#/components/schemas/") for r in refs)
    missing = {r for r in refs if r.rsplit("/", 1)[1] not in doc["components"]["schemas"]}
    assert not missing


def test_every_operation_documents_each_status_it_can_return(doc: dict[str, Any]) -> None:
    documented = {(m, p): {int(s) for s in op["responses"]}
                  for p, ops in doc["paths"].items() for m, op in ops.items()}
    assert documented == EXPECTED


def test_errors_have_the_error_body_and_429_503_say_when_to_retry(doc: dict[str, Any]) -> None:
    for ops in doc["paths"].values():
        for op in ops.values():
            for status, response in op["responses"].items():
                if int(status) >= 400 and op["operationId"] != "readyz_readyz_get":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}
                if status in ("429", "503") and op["operationId"] != "readyz_readyz_get":
                    assert response["headers"]["Retry-After"]["required"] is True


def test_a_503_carries_retry_after() -> None:
    deployment = FakeDeployment()
    with TestClient(build_api(deployment)) as client:
        r = client.post("/v1/review/claim", headers=AUTH)  # review is not enabled: 503
        assert r.status_code == 401  # no reviewer key on this fake: refused first
        deployment.reviewer_hashes = _unavailable  # type: ignore[method-assign]
        r = client.post("/v1/review/claim", headers=AUTH)
        assert r.status_code == 503 and r.headers["Retry-After"] == "2"
        assert r.json() == {"error": "no policy loaded yet; retry shortly"}
        assert client.post("/v1/moderate", json=body("hi"), headers=AUTH).status_code == 200


def _unavailable() -> Any:
    from bastion.core.http import ApiError

    raise ApiError(503, "no policy loaded yet; retry shortly")
