from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import numpy as np

from bastion.core.events import DecisionEvent, EventLog, EventWriter, text_digest
from bastion.core.keys import ensure_keys, key_hashes, load_keys

KEY = b"an install's text key, 32 chars+"


def event(i: int, text: str | None = None) -> DecisionEvent:
    return DecisionEvent(
        ts=time.time(), request_id="r", tenant="acme", item_id=str(i), session_id="s1",
        user_id="u1", text=text, text_sha256=text_digest("hello", KEY), text_len=5,
        decision="allow", scores={"hate": 0.1}, reasons=[], model_version="1",
        policy_version="p1", embedding=np.full(8, i / 10, dtype=np.float32),
    )


def test_writer_close_flushes_everything_accepted(db_url: str) -> None:
    log = EventLog(db_url)
    writer = EventWriter(log, flush_every_s=5.0)  # long interval: close() must still flush
    writer.submit([event(i) for i in range(1000)])
    writer.close()
    assert log.count("acme") == 1000
    rows = list(log.read(tenant="acme", limit=3))
    assert all(isinstance(r, DecisionEvent) for r in rows)
    assert [r.item_id for r in rows] == ["0", "1", "2"]
    assert rows[0].seq < rows[1].seq < rows[2].seq
    assert rows[2].embedding is not None
    np.testing.assert_allclose(rows[2].embedding, 0.2, atol=1e-3)
    assert rows[0].text is None and rows[0].text_sha256 == text_digest("hello", KEY)
    assert rows[0].scores == {"hate": 0.1} and rows[0].reasons == []
    log.close()


def test_two_writers_share_the_log(db_url: str) -> None:
    a, b = EventLog(db_url), EventLog(db_url)
    a.append([event(1, text="kept")])
    b.append([event(2)])
    assert a.count() == 2 and next(b.read()).text == "kept"
    assert [e.item_id for e in a.read(since=0.0)] == ["1", "2"]
    a.close()
    b.close()


def test_keys_are_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    keys, added = ensure_keys(path, ["a", "b"])
    assert added == ["a", "b"] and keys["a"].startswith("bst_") and keys["a"] != keys["b"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again, added = ensure_keys(path, ["a", "b", "c"])
    assert added == ["c"] and again["a"] == keys["a"]
    assert load_keys(path) == again
    assert key_hashes({"a": "k"})["a"] == (
        "8254c329a92850f6d539dd376f4816ee2764517da5e0235514af433164480d7a")
