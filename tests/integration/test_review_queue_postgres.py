"""The review queue on a real PostgreSQL server: the SQLite unit tests' concurrency checks (threads,
processes, a claimer dying mid-claim) plus the basics, each test in a schema of its own.

Set BASTION_TEST_POSTGRES_URL to use another server than postgres@127.0.0.1:5432/test.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import URL

from bastion.review.queue import LabelIn, LeaseLost, ReviewQueue
from tests._requires import missing
from tests.unit.test_review_queue import (
    Clock,
    check_crash,
    check_processes,
    check_same_moderator_threads,
    check_threads,
    item,
)

pytestmark = pytest.mark.postgres

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="module")
def server() -> URL:
    """The server's URL, or skip the module when none answers within 2 s."""
    url = make_url(os.environ.get("BASTION_TEST_POSTGRES_URL", DEFAULT_URL))
    engine = create_engine(url, connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:  # any failure to reach it: refused, timeout, auth, missing database
        missing(f"PostgreSQL on {url.host}:{url.port or 5432}",
                "start a server there or set BASTION_TEST_POSTGRES_URL")
    finally:
        engine.dispose()
    return url


@pytest.fixture
def pg_url(server: URL) -> Iterator[str]:
    """A fresh schema per test (search_path in the URL, so spawned processes use it too)."""
    schema = f"bastion_test_{secrets.token_hex(6)}"
    admin = create_engine(server)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = server.update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_claim_submit_and_lease_expiry(pg_url: str) -> None:
    clock = Clock()
    q = ReviewQueue(pg_url, lease_s=10.0, clock=clock)
    tid = q.add_item(item("i1"), slots=2)
    assert q.add_item(item("i1")) == tid
    a = q.claim("a", ["acme"])
    assert a is not None and q.claim("a", ["acme"]) is None
    b = q.claim("b", ["acme"])
    assert b is not None and b.slot != a.slot
    clock.t += 11.0
    c = q.claim("c", ["acme"])
    assert c is not None and c.task_id == tid
    with pytest.raises(LeaseLost):
        q.submit(a.token, "s-a", [LabelIn("i1", "hate", 1.0)])
    first = q.submit(b.token, "s-b", [LabelIn("i1", "hate", 1.0)])  # late, slot still its own
    again = q.submit(b.token, "s-b", [LabelIn("i1", "hate", 1.0)])
    assert again == dataclasses.replace(first, duplicate=True)
    q.submit(c.token, "s-c", [LabelIn("i1", "hate", 0.0)])
    assert q.task(tid, ["acme"]).status == "done"
    assert [r[0] for r in q.labels_since()] == [1, 2]
    q.close()


def test_threads_never_double_claim(pg_url: str) -> None:
    check_threads(pg_url)


def test_one_moderator_in_many_threads(pg_url: str) -> None:
    check_same_moderator_threads(pg_url)


def test_processes_never_double_claim(pg_url: str) -> None:
    check_processes(pg_url)


def test_a_claimer_dying_mid_claim_loses_nothing(pg_url: str) -> None:
    check_crash(pg_url)
