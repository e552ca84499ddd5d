"""The one-time import of a state directory's pre-database SQLite files (core.store.legacy).

The legacy files are built with the old code's own CREATE TABLE statements (git show
c40cca8:core/events.py, core/labels.py, review/_tables.py, drift/triggers.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, func, select

from bastion.cli import cli
from bastion.core.events import EventLog
from bastion.core.labels import LabelStore
from bastion.core.store import open_engine
from bastion.core.store.legacy import import_legacy, summary
from bastion.core.store.tables import (
    drift_triggers,
    label_history,
    label_items,
    labels,
    review_claims,
    review_items,
    review_tasks,
)

EVENTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    item_id TEXT NOT NULL,
    session_id TEXT,
    user_id TEXT,
    text TEXT,
    text_sha256 TEXT NOT NULL,
    text_len INTEGER NOT NULL,
    decision TEXT NOT NULL,
    scores TEXT NOT NULL,
    reasons TEXT NOT NULL,
    model_version TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    embedding BLOB
);
CREATE INDEX IF NOT EXISTS decisions_tenant_ts ON decisions (tenant, ts);
CREATE INDEX IF NOT EXISTS decisions_session ON decisions (tenant, session_id);
"""

LABELS_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    text TEXT NOT NULL,
    text_sha256 TEXT NOT NULL,
    session_id TEXT,
    user_id TEXT,
    source TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS labels (
    item_id TEXT NOT NULL REFERENCES items (item_id),
    annotator TEXT NOT NULL,
    category TEXT NOT NULL,
    value REAL NOT NULL,
    confidence REAL NOT NULL,
    ts REAL NOT NULL,
    PRIMARY KEY (item_id, annotator, category)
);
CREATE TABLE IF NOT EXISTS label_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id TEXT NOT NULL,
    annotator TEXT NOT NULL,
    category TEXT NOT NULL,
    value REAL NOT NULL,
    confidence REAL NOT NULL,
    ts REAL NOT NULL,
    replaced_ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS labels_ts ON labels (ts);
CREATE INDEX IF NOT EXISTS items_tenant ON items (tenant);
CREATE INDEX IF NOT EXISTS label_history_item ON label_history (item_id);
"""

# review/_tables.py's metadata as SQLite DDL (what create_all emitted).
REVIEW_SCHEMA = """
CREATE TABLE review_tasks (
    task_id VARCHAR(32) NOT NULL PRIMARY KEY, tenant VARCHAR(64) NOT NULL,
    group_key TEXT NOT NULL, priority FLOAT NOT NULL, reasons TEXT NOT NULL,
    slots INTEGER NOT NULL, slots_done INTEGER NOT NULL, status VARCHAR(8) NOT NULL,
    n_items INTEGER NOT NULL, created_ts FLOAT NOT NULL, updated_ts FLOAT NOT NULL,
    CONSTRAINT review_tasks_group UNIQUE (tenant, group_key));
CREATE INDEX review_tasks_queue ON review_tasks (status, priority);
CREATE TABLE review_items (
    tenant VARCHAR(64) NOT NULL, item_id VARCHAR(256) NOT NULL, task_id VARCHAR(32) NOT NULL,
    text TEXT, text_sha256 VARCHAR(64) NOT NULL, session_id TEXT, user_id TEXT,
    source VARCHAR(16) NOT NULL, scores TEXT NOT NULL, keyword_hits TEXT NOT NULL,
    decision VARCHAR(32), model_version TEXT, policy_version TEXT, ts FLOAT NOT NULL,
    gold TEXT, PRIMARY KEY (tenant, item_id));
CREATE TABLE review_reports (
    tenant VARCHAR(64) NOT NULL, report_id VARCHAR(256) NOT NULL, task_id VARCHAR(32) NOT NULL,
    reporter TEXT NOT NULL, reported_user TEXT, reported_item TEXT, session_id TEXT,
    reason TEXT NOT NULL, text TEXT NOT NULL, ts FLOAT NOT NULL,
    PRIMARY KEY (tenant, report_id));
CREATE TABLE review_events (
    tenant VARCHAR(64) NOT NULL, event_id VARCHAR(256) NOT NULL, task_id VARCHAR(32) NOT NULL,
    session_id TEXT NOT NULL, user_id TEXT, kind VARCHAR(32) NOT NULL, target_user TEXT,
    ts FLOAT NOT NULL, PRIMARY KEY (tenant, event_id));
CREATE TABLE review_slots (
    task_id VARCHAR(32) NOT NULL, slot INTEGER NOT NULL, state VARCHAR(8) NOT NULL,
    token VARCHAR(64), moderator TEXT, leased_until FLOAT, PRIMARY KEY (task_id, slot));
CREATE TABLE review_claims (
    token VARCHAR(64) NOT NULL PRIMARY KEY, task_id VARCHAR(32) NOT NULL, slot INTEGER NOT NULL,
    moderator TEXT NOT NULL, state VARCHAR(10) NOT NULL, leased_until FLOAT NOT NULL,
    claimed_ts FLOAT NOT NULL, submission_id VARCHAR(128) UNIQUE, submitted_ts FLOAT,
    CONSTRAINT review_claims_one_per_moderator UNIQUE (task_id, moderator));
CREATE TABLE review_labels (
    seq INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, submission_id VARCHAR(128) NOT NULL,
    tenant VARCHAR(64) NOT NULL, task_id VARCHAR(32) NOT NULL, item_id VARCHAR(256) NOT NULL,
    moderator TEXT NOT NULL, category VARCHAR(64) NOT NULL, value FLOAT NOT NULL,
    confidence FLOAT NOT NULL, ts FLOAT NOT NULL,
    CONSTRAINT review_labels_once UNIQUE (submission_id, item_id, category));
"""

TRIGGERS_SCHEMA = """
CREATE TABLE IF NOT EXISTS triggers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    action TEXT NOT NULL,          -- submitted | cooldown | running | failed
    rule TEXT NOT NULL,
    reasons TEXT NOT NULL,         -- JSON list
    job_id TEXT,
    model_version TEXT,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS triggers_action_at ON triggers (action, at);
"""

EMB = np.array([0.5, -1.0, 0.25], dtype=np.float16)
DIGEST = {"you are lovely": "a" * 64, "you are awful": "b" * 64, "kept no text": "c" * 64}


def _write(path: Path, schema: str, rows: dict[str, list[tuple[object, ...]]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")  # as the old stores ran
    conn.executescript(schema)
    for table, values in rows.items():
        for v in values:
            conn.execute(f"INSERT INTO {table} VALUES ({','.join('?' * len(v))})", v)
    conn.commit()
    conn.close()


def legacy_state(state: Path) -> Path:
    """A state directory as the old code left it: labels synced from review up to seq 2."""
    _write(state / "events.db", EVENTS_SCHEMA, {"decisions": [
        (1, 100.0, "r1", "acme", "i1", "s1", "u1", "you are lovely", DIGEST["you are lovely"],
         14, "allow", '{"hate": 0.1}', "[]", "3", "p1", EMB.tobytes()),
        (2, 101.5, "r2", "acme", "i2", None, None, None, DIGEST["you are awful"], 13, "review",
         '{"hate": 0.6}', '[{"category": "hate"}]', "3", "p1", None),
    ]})
    _write(state / "labels.db", LABELS_SCHEMA, {
        "items": [
            ("acme:i2", "acme", "you are awful", DIGEST["you are awful"], "s2", "u2", "review",
             101.5),
            ("sha256:0123456789abcdef", "globex", "imported text", "d" * 64, None, None,
             "import", 50.0),
        ],
        "labels": [
            ("acme:i2", "mod-a", "hate", 1.0, 1.0, 200.0),
            ("acme:i2", "mod-b", "hate", 0.0, 0.8, 201.0),
            ("sha256:0123456789abcdef", "tool", "spam", 0.5, 0.9, 60.0),
        ],
        "label_history": [(1, "sha256:0123456789abcdef", "tool", "spam", 1.0, 1.0, 55.0, 60.0)],
    })
    item = ("acme", "i2", "t1", "you are awful", DIGEST["you are awful"], "s2", "u2", "review",
            '{"hate": 0.6}', "[]", "review", "3", "p1", 101.5, None)
    hidden = ("acme", "i3", "t2", None, DIGEST["kept no text"], None, "u3", "review",
              '{"hate": 0.7}', "[]", "review", "3", "p1", 102.0, '{"hate": 1}')
    _write(state / "review.db", REVIEW_SCHEMA, {
        "review_tasks": [
            ("t1", "acme", "item:i2", 0.9, "[]", 2, 2, "done", 1, 101.5, 201.0),
            ("t2", "acme", "item:i3", 0.7, "[]", 1, 0, "open", 1, 102.0, 102.0),
        ],
        "review_items": [item, hidden],
        "review_reports": [("acme", "rep1", "t2", "u9", "u3", "i3", None, "abuse", "hey", 102.0)],
        "review_events": [("acme", "ev1", "t2", "s3", "u3", "block", "u4", 102.0)],
        "review_slots": [("t1", 0, "done", "k1", "mod-a", None),
                         ("t1", 1, "done", "k2", "mod-b", None),
                         ("t2", 0, "free", None, None, None)],
        "review_claims": [("k1", "t1", 0, "mod-a", "submitted", 300.0, 150.0, "sub1", 200.0),
                          ("k2", "t1", 1, "mod-b", "submitted", 300.0, 151.0, "sub2", 201.0)],
        "review_labels": [
            (1, "sub1", "acme", "t1", "i2", "mod-a", "hate", 1.0, 1.0, 200.0),  # synced
            (2, "sub2", "acme", "t1", "i2", "mod-b", "hate", 0.0, 0.8, 201.0),  # synced
            (3, "sub3", "acme", "t1", "i2", "mod-c", "hate", 1.0, 0.9, 202.0),  # after the mark
            (4, "sub4", "acme", "t2", "i3", "mod-a", "hate", 1.0, 1.0, 203.0),  # text not kept
        ],
    })
    (state / "review_sync.json").write_text('{"seq": 2, "at": 250.0}')
    (state / "embeddings").mkdir()
    (state / "embeddings" / "minilm.sqlite").write_bytes(b"only a cache")
    _write(state / "drift" / "triggers.db", TRIGGERS_SCHEMA, {"triggers": [
        (1, 400.0, "submitted", "drift", '["acme drifted"]', "job-1", "3", "submitted job-1"),
        (2, 401.0, "cooldown", "drift", '["acme drifted"]', None, "3", "cooling down"),
    ]})
    return state


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    e = open_engine(db_url)
    LabelStore(e).close()  # the schema at head (the embedded SQLite is upgraded on the spot)
    yield e
    e.dispose()


def _count(engine: Engine, table: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_every_row_arrives_with_its_values(tmp_path: Path, engine: Engine) -> None:
    state = legacy_state(tmp_path / "state")
    counts = import_legacy(state, engine)
    assert counts == {
        "events.db": {"decisions": 2},
        "labels.db": {"items": 2, "labels": 3, "label_history": 1},
        "review.db": {"review_tasks": 2, "review_items": 2, "review_reports": 1,
                      "review_events": 1, "review_slots": 3, "review_claims": 2,
                      "review_labels": 2},
        "drift/triggers.db": {"triggers": 2},
    }
    assert summary(counts).startswith("Imported from events.db: 2 decisions; labels.db: 2 "
                                      "items, 3 labels, 1 label_history; review.db: ")

    log = EventLog(engine)
    try:
        rows = list(log.read())
    finally:
        log.close()
    assert [(r.ts, r.request_id, r.tenant, r.item_id, r.session_id, r.user_id, r.text_sha256,
             r.text_len, r.decision, r.model_version, r.policy_version) for r in rows] == [
        (100.0, "r1", "acme", "i1", "s1", "u1", "a" * 64, 14, "allow", "3", "p1"),
        (101.5, "r2", "acme", "i2", None, None, "b" * 64, 13, "review", "3", "p1")]
    assert rows[0].scores == {"hate": 0.1} and rows[0].text == "you are lovely"
    assert rows[0].embedding is not None
    np.testing.assert_array_equal(rows[0].embedding, EMB.astype(np.float32))
    assert rows[1].embedding is None and rows[1].reasons == [{"category": "hate"}]
    assert rows[1].text is None

    with engine.connect() as conn:
        items = {(r.tenant, r.item_id): r for r in conn.execute(select(label_items))}
        got = {(r.tenant, r.item_id, r.annotator, r.category):
               (r.value, r.confidence, r.ts, r.submission_id) for r in conn.execute(select(labels))}
        history = conn.execute(select(label_history)).one()
        task = conn.execute(select(review_tasks).where(review_tasks.c.task_id == "t2")).one()
        gold = conn.execute(select(review_items.c.gold).where(
            review_items.c.item_id == "i3")).scalar_one()
        claim = conn.execute(select(review_claims).where(review_claims.c.token == "k1")).one()
        triggers = conn.execute(select(drift_triggers).order_by(drift_triggers.c.id)).all()
    # the review sync's "acme:i2" is the review queue's (acme, i2) again
    assert set(items) == {("acme", "i2"), ("globex", "sha256:0123456789abcdef"), ("acme", "i3")}
    assert items[("acme", "i2")].session_id == "s2" and items[("acme", "i3")].text is None
    assert got == {
        ("acme", "i2", "mod-a", "hate"): (1.0, 1.0, 200.0, "sub1"),  # synced: its submission
        ("acme", "i2", "mod-b", "hate"): (0.0, 0.8, 201.0, "sub2"),
        ("acme", "i2", "mod-c", "hate"): (1.0, 0.9, 202.0, "sub3"),  # after the mark: not lost
        ("acme", "i3", "mod-a", "hate"): (1.0, 1.0, 203.0, "sub4"),
        ("globex", "sha256:0123456789abcdef", "tool", "spam"): (0.5, 0.9, 60.0, None),
    }
    assert (history.tenant, history.item_id, history.value, history.ts,
            history.replaced_ts) == ("globex", "sha256:0123456789abcdef", 1.0, 55.0, 60.0)
    assert (task.status, task.priority, task.slots_done) == ("open", 0.7, 0)
    assert gold == '{"hate": 1}' and (claim.submission_id, claim.submitted_ts) == ("sub1", 200.0)
    assert [(t.at, t.action, t.job_id, t.message) for t in triggers] == [
        (400.0, "submitted", "job-1", "submitted job-1"),
        (401.0, "cooldown", None, "cooling down")]


def test_the_labels_aggregate_as_before(tmp_path: Path, engine: Engine) -> None:
    """The old store's votes (those the sync had copied) are the new store's, plus the labels
    given after the sync's mark."""
    import_legacy(legacy_state(tmp_path / "state"), engine)
    store = LabelStore(engine)
    try:
        votes = store.votes()
        agg = {(a.tenant, a.item_id, a.category): a for a in store.aggregated()}
        reviewed = store.votes(reviewed=True)
    finally:
        store.close()
    assert {k: [tuple(v) for v in vs] for k, vs in votes.items()} == {
        ("acme:i2", "hate"): [("mod-a", 1.0, 1.0), ("mod-b", 0.0, 0.8), ("mod-c", 1.0, 0.9)],
        ("acme:i3", "hate"): [("mod-a", 1.0, 1.0)],
        ("globex:sha256:0123456789abcdef", "spam"): [("tool", 0.5, 0.9)],
    }
    assert set(agg) == {("acme", "i2", "hate"), ("globex", "sha256:0123456789abcdef", "spam")}
    assert agg[("acme", "i2", "hate")].annotators == ("mod-a", "mod-b", "mod-c")
    assert agg[("acme", "i2", "hate")].text == "you are awful"
    assert set(reviewed) == {("acme:i2", "hate"), ("acme:i3", "hate")}  # from submissions


def test_a_second_run_imports_nothing_and_the_files_are_renamed(tmp_path: Path,
                                                                engine: Engine) -> None:
    state = legacy_state(tmp_path / "state")
    import_legacy(state, engine)
    for name in ("events.db", "labels.db", "review.db", "drift/triggers.db"):
        assert not (state / name).exists() and (state / f"{name}.imported").is_file()
    before = {t.name: _count(engine, t) for t in (labels, label_history, drift_triggers)}
    assert import_legacy(state, engine) == {}
    # a file put back after a crash between commit and rename: renamed, imported again never
    (state / "events.db.imported").rename(state / "events.db")
    assert import_legacy(state, engine) == {"events.db": {}}
    assert not (state / "events.db").exists()
    log = EventLog(engine)
    try:
        assert log.count() == 2
    finally:
        log.close()
    assert {t.name: _count(engine, t) for t in (labels, label_history, drift_triggers)} == before


class Crash(RuntimeError):
    pass


def test_a_crash_mid_file_leaves_it_whole_and_unimported(tmp_path: Path, engine: Engine) -> None:
    state = legacy_state(tmp_path / "state")

    def crash_in_labels(name: str, table: str, _n: int) -> None:
        if (name, table) == ("labels.db", "labels"):  # items are in, history not yet
            raise Crash("power cut")

    with pytest.raises(Crash, match="power cut"):
        import_legacy(state, engine, progress=crash_in_labels)
    assert (state / "events.db.imported").is_file()  # the file before it is done
    assert (state / "labels.db").is_file() and (state / "review.db").is_file()
    assert _count(engine, label_items) == 0 and _count(engine, labels) == 0
    assert _count(engine, label_history) == 0

    counts = import_legacy(state, engine)  # the next start: the rest, once
    assert set(counts) == {"labels.db", "review.db", "drift/triggers.db"}
    assert counts["labels.db"] == {"items": 2, "labels": 3, "label_history": 1}
    assert _count(engine, labels) == 5 and _count(engine, label_history) == 1
    log = EventLog(engine)
    try:
        assert log.count() == 2
    finally:
        log.close()


def test_bastion_db_upgrade_imports_a_state_directory(tmp_path: Path) -> None:
    state = legacy_state(tmp_path / "state")
    out = CliRunner().invoke(cli, ["db", "upgrade", "--state-dir", str(state)])
    assert out.exit_code == 0, out.output
    assert "upgraded from an empty database" in out.output
    assert ("Imported from events.db: 2 decisions; labels.db: 2 items, 3 labels, "
            "1 label_history; review.db: 2 review_tasks") in out.output
    assert "drift/triggers.db: 2 triggers (the files are renamed to *.imported)." in out.output
    # the embedding cache is only a cache: not imported, left as it was
    assert (state / "embeddings" / "minilm.sqlite").read_bytes() == b"only a cache"
    out = CliRunner().invoke(cli, ["db", "upgrade", "--state-dir", str(state)])
    assert out.exit_code == 0 and "Imported" not in out.output
