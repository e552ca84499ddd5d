"""The review loop through the real Serve application: a review-band decision becomes a task,
reports and session events re-rank it, moderators claim and label it over HTTP (tenant-scoped
keys), and the labels reach the label store retraining reads."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from bastion.core.keys import add_reviewer, reviewers_path
from bastion.core.labels import LabelStore
from bastion.platform import deploy
from bastion.review._checks import task_id as task_id_of

from .conftest import Served

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.model]

# acme's 'harassment' has action review: a clearly offensive text is decided "review"
OFFENSIVE = "you are a stupid bitch and everyone hates you"


@pytest.fixture(scope="module")
def reviewers(served: Served) -> dict[str, str]:
    path = reviewers_path(served.settings.state_dir)
    keys = {
        "ann": add_reviewer(path, "ann", "moderator", ["acme"]),
        "bob": add_reviewer(path, "bob", "moderator", ["acme"]),
        "sam": add_reviewer(path, "sam", "moderator", ["studio"]),
        "ops": add_reviewer(path, "ops", "mlops", ["acme", "studio"]),
    }
    deploy(served.settings, served.policy, served.keys, served.dashboard)
    return keys


def call(served: Served, key: str, method: str, path: str, **kw: Any) -> httpx.Response:
    with served.client() as c:
        return c.request(method, path, headers={"Authorization": f"Bearer {key}"}, **kw)


def test_review_loop_end_to_end(served: Served, reviewers: dict[str, str]) -> None:
    session = f"s-{uuid.uuid4().hex[:8]}"
    body = {"tenant": "acme", "items": [
        {"id": f"{session}-1", "text": OFFENSIVE, "context": {"session_id": session,
                                                              "user_id": "troll"}},
        {"id": f"{session}-2", "text": "see you at lunch", "context": {"session_id": session,
                                                                       "user_id": "pal"}}]}
    with served.client() as c:
        r = c.post("/v1/moderate", json=body,
                   headers={"Authorization": f"Bearer {served.keys['acme']}"})
    assert r.status_code == 200
    assert r.json()["results"][0]["decision"] == "review", r.json()
    # this session's own task: the intake writes off the request path (and lingers)
    mine = task_id_of("acme", f"session:{session}")
    deadline, task = time.time() + 30, {}
    while time.time() < deadline:  # by id: the queue's first page may be other tests' tasks
        r = call(served, reviewers["ann"], "GET", f"/v1/review/tasks/{mine}")
        task = r.json() if r.status_code == 200 else {}
        if task.get("items"):
            break
        time.sleep(0.3)
    assert task.get("items"), f"the session's task never got its item: {task}"
    before = task["priority"]

    # a report by a user and a sudden block raise the session's priority, with reasons
    r = served.client().post("/v1/reports", json={
        "tenant": "acme", "reporter": "victim", "reported_user": "troll",
        "session_id": session, "reason": "harassment", "text": "he keeps insulting me"},
        headers={"Authorization": f"Bearer {served.keys['acme']}"})
    assert r.status_code == 202, r.text
    r = served.client().post("/v1/events", json={"tenant": "acme", "events": [
        {"session_id": session, "user_id": "victim", "kind": "block", "target_user": "troll"}]},
        headers={"Authorization": f"Bearer {served.keys['acme']}"})
    assert r.status_code == 202, r.text
    task_id = r.json()["accepted"][0]["task_id"]
    task = call(served, reviewers["ann"], "GET", f"/v1/review/tasks/{task_id}").json()
    factors = {x["factor"] for x in task["reasons"]}
    assert {"user reports", "session events"} <= factors
    assert task["priority"] > before and "gold" not in task
    assert task["items"][0]["text"] == OFFENSIVE and task["items"][0]["scores"]
    assert task["reports"][0]["reason"] == "harassment"

    # the other tenant's moderator never sees it; a tenant key is not a reviewer key
    assert call(served, reviewers["sam"], "GET", f"/v1/review/tasks/{task_id}").status_code == 404
    assert call(served, served.keys["acme"], "POST", "/v1/review/claim").status_code == 401

    # claim: the most urgent task comes first
    got = call(served, reviewers["ann"], "POST", "/v1/review/claim").json()
    assert got["claim"]["task_id"] == task_id
    token = got["claim"]["token"]
    labels = [{"item_id": f"{session}-1", "category": "harassment", "value": 1.0},
              {"item_id": f"{session}-2", "category": "harassment", "value": 0.0}]
    # another moderator cannot submit on ann's claim
    r = call(served, reviewers["bob"], "POST", "/v1/review/submit",
             json={"token": token, "submission_id": "x", "labels": labels})
    assert r.status_code == 403
    sub = {"token": token, "submission_id": f"ann-{session}", "labels": labels}
    first = call(served, reviewers["ann"], "POST", "/v1/review/submit", json=sub)
    again = call(served, reviewers["ann"], "POST", "/v1/review/submit", json=sub)
    assert first.status_code == again.status_code == 200
    assert not first.json()["duplicate"] and again.json()["duplicate"]
    bad = call(served, reviewers["ann"], "POST", "/v1/review/submit",
               json={**sub, "submission_id": "y",
                     "labels": [{**labels[0], "value": 2}]})
    assert bad.status_code == 422

    # the labels are in the label table retraining reads, written by the submission
    store = LabelStore(served.settings.database_url)
    try:
        rows = [r for r in store.aggregated(["acme"]) if r.item_id.startswith(session)]
        votes = store.votes(["acme"], reviewed=True)
    finally:
        store.close()
    assert {r.item_id for r in rows} == {f"{session}-1", f"{session}-2"}
    assert {k: [v.value for v in vs] for k, vs in votes.items()
            if k[0].startswith(f"acme:{session}")} == {
        (f"acme:{session}-1", labels[0]["category"]): [1.0],
        (f"acme:{session}-2", labels[1]["category"]): [0.0]}
    assert all(r.text for r in rows)
