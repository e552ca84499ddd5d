"""The retention purge: raw text, embeddings and report text past a tenant's retention_days
go from every store that keeps them; rows, scores and digests stay; open review tasks and
labelled items keep their text. On SQLite and PostgreSQL (the ``db_url`` fixture)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, insert, select

from bastion.cli import cli
from bastion.core.errors import PolicyError
from bastion.core.events import DecisionEvent, EventLog
from bastion.core.labels import LabelStore
from bastion.core.policy import parse_policy
from bastion.core.retention import DAY_S, purge
from bastion.core.settings import load_settings
from bastion.core.store import open_store
from bastion.core.store.tables import (
    embedding_encoders,
    embeddings,
    label_items,
    review_items,
    review_reports,
    review_tasks,
)

NOW = 1_800_000_000.0
KEY = b"an install's text key, 32 chars+"
POLICY = parse_policy({"tenants": {
    "acme": {"categories": {"hate": {"block_threshold": 0.9}}, "retention_days": 7},
    "studio": {"categories": {"hate": {"block_threshold": 0.9}}, "store_raw_text": True},
}})


def _event(tenant: str, item_id: str, text: str, age_days: float) -> DecisionEvent:
    return DecisionEvent(
        ts=NOW - age_days * DAY_S, request_id="r", tenant=tenant, item_id=item_id,
        session_id="s", user_id="u", text=text, text_sha256="d" * 64, text_len=len(text),
        decision="allow", scores={"hate": 0.1}, reasons=[], model_version="1",
        policy_version="p", embedding=np.ones(4, np.float32))


def _task(conn: object, tenant: str, task_id: str, status: str) -> None:
    conn.execute(insert(review_tasks).values(  # type: ignore[attr-defined]
        task_id=task_id, tenant=tenant, group_key=task_id, priority=1.0, reasons="[]",
        slots=1, slots_done=int(status == "done"), status=status, n_items=1,
        created_ts=NOW - 60 * DAY_S, updated_ts=NOW - 60 * DAY_S))


def _review(engine: Engine, tenant: str, item_id: str, text: str, task_id: str, status: str,
            age_days: float) -> None:
    ts = NOW - age_days * DAY_S
    with engine.begin() as conn:
        _task(conn, tenant, task_id, status)
        conn.execute(insert(review_items).values(
            tenant=tenant, item_id=item_id, task_id=task_id, text=text, text_sha256="d" * 64,
            source="decision", scores="{}", keyword_hits="[]", ts=ts))
        conn.execute(insert(review_reports).values(
            tenant=tenant, report_id=f"rep-{item_id}", task_id=task_id, reporter="x",
            reason="abuse", text=f"report about {text}", ts=ts))


def _cache(engine: Engine, *texts: str) -> None:
    with engine.begin() as conn:
        conn.execute(insert(embedding_encoders).values(fingerprint="enc", dim=4, identity="{}"))
        for t in texts:
            conn.execute(insert(embeddings).values(
                fingerprint="enc", sha=hashlib.sha256(t.encode()).digest(), vec=b"\0" * 16))


@pytest.fixture
def engine(db_url: str) -> Engine:
    engine, _ = open_store(db_url)
    yield engine  # type: ignore[misc]
    engine.dispose()


def test_purge_removes_text_and_embeddings_past_each_tenants_retention(engine: Engine) -> None:
    log = EventLog(engine)
    log.append([_event("acme", "old", "acme old text", 8), _event("acme", "new", "acme new", 6),
                _event("studio", "s-old", "studio 31 days", 31),
                _event("studio", "s-new", "studio 29 days", 29),
                _event("gone", "g", "a removed tenant's text", 31)])
    _review(engine, "acme", "done-old", "reviewed long ago", "t1", "done", 8)
    _review(engine, "acme", "open-old", "still waiting", "t2", "open", 8)
    _review(engine, "acme", "done-new", "reviewed lately", "t3", "done", 1)
    _cache(engine, "acme old text", "reviewed long ago", "acme new", "labelled text")
    labels = LabelStore(engine, KEY)
    labels.add_item(tenant="acme", item_id="lab", text="labelled text", ts=NOW - 100 * DAY_S)

    report = purge(engine, POLICY, now=NOW)

    assert report.counts == {"acme": {"events": 1, "review_items": 1, "review_reports": 1},
                             "studio": {"events": 1}, "gone": {"events": 1}}
    assert report.cached_embeddings == 2
    rows = {e.item_id: e for e in log.read()}
    assert len(rows) == 5  # every decision stays, with its scores and digest
    for purged in ("old", "s-old", "g"):
        assert rows[purged].text is None and rows[purged].embedding is None
        assert rows[purged].scores == {"hate": 0.1} and rows[purged].text_sha256 == "d" * 64
    for kept in ("new", "s-new"):
        assert rows[kept].text is not None and rows[kept].embedding is not None
    with engine.connect() as conn:
        items = dict(conn.execute(select(review_items.c.item_id, review_items.c.text)).all())
        reports = dict(conn.execute(select(review_reports.c.report_id,
                                           review_reports.c.text)).all())
        cached = {bytes(r[0]) for r in conn.execute(select(embeddings.c.sha))}
    assert items == {"done-old": None, "open-old": "still waiting",
                     "done-new": "reviewed lately"}
    assert reports["rep-done-old"] == "" and reports["rep-open-old"] != ""
    assert cached == {hashlib.sha256(t.encode()).digest() for t in ("acme new", "labelled text")}
    assert purge(engine, POLICY, now=NOW).total == 0  # nothing left to do: idempotent


def test_labelled_items_keep_their_text(engine: Engine) -> None:
    LabelStore(engine, KEY).add_item(tenant="acme", item_id="lab", text="labelled text",
                                     ts=NOW - 100 * DAY_S)
    purge(engine, POLICY, now=NOW)
    with engine.connect() as conn:
        assert conn.execute(select(label_items.c.text)).scalar_one() == "labelled text"


def test_retention_is_validated() -> None:
    with pytest.raises(PolicyError, match="retention_days"):
        parse_policy({"tenants": {"a": {"categories": {"hate": {"block_threshold": 0.9}},
                                        "retention_days": 0}}})
    with pytest.raises(PolicyError, match=r"tenants\.a\.retention_days: 1 day\(s\) is shorter "
                                          r"than the drift window"):
        parse_policy({"drift": {"window_hours": 48}, "tenants": {
            "a": {"categories": {"hate": {"block_threshold": 0.9}}, "retention_days": 1}}})
    assert parse_policy({"tenants": {"a": {"categories": {"hate": {"block_threshold": 0.9}}}}}
                        ).tenants["a"].retention_days == 30


def test_db_purge_command(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(json.dumps({"tenants": {
        "acme": {"categories": {"hate": {"block_threshold": 0.9}}, "retention_days": 7}}}))
    log = EventLog(load_settings(tmp_path).database_url)
    age = (NOW - time.time()) / DAY_S  # _event's ages count from NOW
    log.append([_event("acme", "x", "a day old", age + 1), _event("acme", "y", "8 days", age + 8)])
    log.close()
    result = CliRunner().invoke(cli, ["db", "purge", "--state-dir", str(tmp_path),
                                      "--policy", str(policy)])
    assert result.exit_code == 0, result.output
    assert "Retention purge: acme: 1 events" in result.output
    result = CliRunner().invoke(cli, ["db", "purge", "--state-dir", str(tmp_path),
                                      "--policy", str(policy)])
    assert "nothing older than any tenant's retention_days" in result.output


def test_bastion_up_purges_at_start_and_reports_failures(tmp_path: Path) -> None:
    from bastion.core.retention import PurgeReport
    from bastion.platform import RetentionSchedule

    settings = load_settings(tmp_path)
    log = EventLog(settings.database_url)
    age = (NOW - time.time()) / DAY_S
    log.append([_event("acme", "y", "8 days old", age + 8)])
    said: list[str] = []
    sched = RetentionSchedule(settings, lambda: POLICY, said.append, every_s=3600)
    sched.start()  # the first pass runs at once, the next an hour later
    sched.stop()
    sched.join(timeout=30)
    assert not sched.is_alive()
    assert said == ["Retention purge: acme: 1 events; 0 cached embedding(s)"]
    assert [e.text for e in log.read()] == [None]
    log.close()

    def broken(*_a: object) -> PurgeReport:
        raise RuntimeError("database away")

    said.clear()
    assert RetentionSchedule(settings, lambda: POLICY, said.append,
                             run_purge=broken).run_once() is None
    assert said == ["Retention purge failed (RuntimeError: database away); retrying in 60 min"]
