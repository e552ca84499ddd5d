"""Two serving processes on ONE PostgreSQL database: two ``bastion up`` (each its own state
directory, Ray and port; ``BASTION_DATABASE_URL`` the same fresh schema, which the first one up
migrates). Both write one event log, one review queue and one label table; a drift check, an
active-learning selection and the training snapshot, run here, see the items of both.

This is the set-up of several pods of a RayService with the stores on PostgreSQL.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from bastion.core.events import EventLog
from bastion.core.keys import add_reviewer, load_keys, reviewers_path
from bastion.core.labels import LabelStore
from bastion.core.policy import load_policy
from bastion.core.settings import Settings, load_settings
from bastion.core.store import current_revision, head_revision, open_engine
from bastion.core.store.tables import review_items
from bastion.drift.check import check_tenants
from bastion.review.queue import ReviewQueue
from bastion.review.service import ReviewService
from bastion.training.snapshot import build_snapshot
from tests._databases import postgres_schema, postgres_server

from .conftest import POLICY, free_port

pytestmark = [pytest.mark.postgres, pytest.mark.ray, pytest.mark.mlflow, pytest.mark.model]

TEXTS = ["the new trailer looks great", "see you at the studio tomorrow",
         "I will hurt you if you come back", "lovely colours in this shot",
         "this scene is so violent, blood everywhere", "can we reschedule the session",
         "thanks for the feedback on my render", "I am going to smash your face",
         "what lens did you use here", "the lighting in take two is better"]


@dataclass
class Server:
    name: str
    state: Path
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, key: str, method: str, path: str, **kw: object) -> httpx.Response:
        with httpx.Client(base_url=self.url, timeout=60) as c:
            return c.request(method, path, headers={"Authorization": f"Bearer {key}"},
                             **kw)  # type: ignore[arg-type]


def _start(name: str, root: Path, url: str) -> tuple[Server, str]:
    state = root / name
    state.mkdir()
    shutil.copy(POLICY, state / "policy.yaml")
    moderator = add_reviewer(reviewers_path(state), f"mod-{name}", "moderator", ["studio"])
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "BASTION_"))}
    # one install on two machines: one database and one text digest key (as a k8s Secret)
    env.update(BASTION_DATABASE_URL=url, BASTION_STATE_DIR=str(state),
               BASTION_TEXT_HMAC_KEY="two servers, one install, one text key")
    log = root / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("bastion")), "up", "--state-dir", str(state),
             "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    return Server(name, state, port, proc, log), moderator


def _wait_ready(server: Server, timeout: float = 420.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"bastion up {server.name} exited:\n"
                                 f"{server.log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise AssertionError(f"bastion up {server.name} not ready:\n"
                         f"{server.log.read_text()[-4000:]}")


def _stop(server: Server) -> None:
    if server.proc.poll() is None:
        os.killpg(server.proc.pid, signal.SIGINT)  # Ctrl-C: bastion up stops Serve and Ray
        try:
            server.proc.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait(30)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A fresh, empty schema (no migration: 'bastion up' applies it), as postgresql:// (the
    settings put it on psycopg 3)."""
    with postgres_schema(postgres_server(), migrate=False) as url:
        yield url.replace("postgresql+psycopg://", "postgresql://", 1)


@pytest.fixture(scope="module")
def servers(database: str, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[list[tuple[Server, str]]]:
    root = tmp_path_factory.mktemp("two-servers")
    started = [_start("a", root, database), _start("b", root, database)]
    try:
        for server, _ in started:
            _wait_ready(server)
        yield started
    finally:
        for server, _ in started:
            _stop(server)


def _settings(server: Server, database: str) -> Settings:
    return load_settings(server.state, database_url=database)


def test_two_servers_share_one_postgres_database(servers: list[tuple[Server, str]],
                                                 database: str) -> None:
    (a, mod_a), (b, mod_b) = servers
    engine = open_engine(database)
    try:
        assert current_revision(engine) == head_revision()  # 'bastion up' migrated it
    finally:
        engine.dispose()

    # both serve; every decision goes into the one event log
    for server in (a, b):
        key = load_keys(server.state / "tenant_keys.json")["studio"]
        body = {"tenant": "studio", "items": [{"id": f"{server.name}-{i}", "text": t}
                                              for i, t in enumerate(TEXTS)]}
        r = server.call(key, "POST", "/v1/moderate", json=body)
        assert r.status_code == 200, r.text
    log = EventLog(database)
    try:
        deadline = time.time() + 30
        while log.count("studio") < 2 * len(TEXTS) and time.time() < deadline:
            time.sleep(0.3)
        events = list(log.read(tenant="studio"))
    finally:
        log.close()
    assert sorted(e.item_id for e in events) == sorted(
        f"{s}-{i}" for s in "ab" for i in range(len(TEXTS)))
    assert all(e.text and e.embedding is not None for e in events)  # studio keeps text

    # active learning over the one event log picks items of both servers into the one queue
    policy = load_policy(a.state / "policy.yaml")
    queue = ReviewQueue(database)
    try:
        picks = ReviewService(queue, lambda: policy).select_for_labelling(
            2 * len(TEXTS), tenants=["studio"])
        assert {p["item_id"].split("-")[0] for p in picks} == {"a", "b"}
        with queue.engine.connect() as conn:
            queued = conn.execute(select(func.count()).select_from(review_items).where(
                review_items.c.tenant == "studio")).scalar_one()
        assert queued >= len(picks)
    finally:
        queue.close()

    # a moderator on each server claims from that one queue and labels: one label table
    for server, key in ((a, mod_a), (b, mod_b)):
        got = server.call(key, "POST", "/v1/review/claim")
        assert got.status_code == 200, got.text
        claim = got.json()["claim"]
        task = server.call(key, "GET", f"/v1/review/tasks/{claim['task_id']}").json()
        labels = [{"item_id": it["item_id"], "category": "violence", "value": 1.0}
                  for it in task["items"]]
        r = server.call(key, "POST", "/v1/review/submit", json={
            "token": claim["token"], "submission_id": f"sub-{server.name}", "labels": labels})
        assert r.status_code == 200, r.text
    store = LabelStore(database)
    try:
        votes = store.votes(["studio"], reviewed=True)
        labelled = store.aggregated(["studio"])
    finally:
        store.close()
    assert {v.annotator for vs in votes.values() for v in vs} == {"mod-a", "mod-b"}

    # retraining reads those labels from the database: the snapshot holds both servers' items
    snap = build_snapshot(_settings(a, database), save=False, limit_per_source=50,
                          davidson_limit=50)
    assert snap.n_labelled_items == len({(r.tenant, r.item_id) for r in labelled}) >= 2

    # the drift check (run here, on server a's champion) reads the window of both servers
    ((report, message),) = check_tenants(_settings(a, database), policy, tenants=["studio"],
                                         hours=1, min_items=len(TEXTS), log_mlflow=False)
    assert report is not None, message
    assert report.n_window == 2 * len(TEXTS), message
