"""The event log: every decision, with its scores and embedding, in an embedded SQLite store.

Writes happen on a background thread in batches, so the request path only enqueues. Raw text
is kept only when the tenant's policy allows (``store_raw_text``); otherwise its SHA-256.
Later stages (review, drift, training) read it with :meth:`EventLog.read`.
"""

from __future__ import annotations

import hashlib
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DecisionEvent", "EventLog", "EventWriter", "events_db_path", "text_digest"]

_SCHEMA = """
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


def events_db_path(state_dir: str | Path) -> Path:
    """Where the embedded default keeps the event log under a state directory."""
    return Path(state_dir) / "events.db"


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class DecisionEvent:
    ts: float
    request_id: str
    tenant: str
    item_id: str
    session_id: str | None
    user_id: str | None
    text: str | None
    text_sha256: str
    text_len: int
    decision: str
    scores: dict[str, float]
    reasons: list[dict[str, Any]]
    model_version: str
    policy_version: str
    embedding: np.ndarray | None  # float16 on disk

    def row(self) -> tuple[Any, ...]:
        emb = None if self.embedding is None else self.embedding.astype(np.float16).tobytes()
        return (
            self.ts, self.request_id, self.tenant, self.item_id, self.session_id, self.user_id,
            self.text, self.text_sha256, self.text_len, self.decision,
            json.dumps(self.scores), json.dumps(self.reasons), self.model_version,
            self.policy_version, emb,
        )


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(_SCHEMA)
    return conn


class EventLog:
    """Reader/writer of the decision log at ``path`` (several processes may share it: WAL)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn = _connect(self.path)
        self._lock = threading.Lock()

    def append(self, events: list[DecisionEvent]) -> None:
        if not events:
            return
        with self._lock, self._conn:
            self._conn.executemany(
                "INSERT INTO decisions (ts, request_id, tenant, item_id, session_id, user_id, "
                "text, text_sha256, text_len, decision, scores, reasons, model_version, "
                "policy_version, embedding) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [e.row() for e in events],
            )

    def count(self, tenant: str | None = None) -> int:
        sql, args = "SELECT COUNT(*) FROM decisions", ()  # type: tuple[str, tuple[str, ...]]
        if tenant is not None:
            sql, args = sql + " WHERE tenant = ?", (tenant,)
        with self._lock:
            return int(self._conn.execute(sql, args).fetchone()[0])

    def read(
        self, tenant: str | None = None, since: float | None = None, limit: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Decisions in arrival order, embeddings as float32 arrays."""
        where: list[str] = []
        args: list[object] = []
        if tenant is not None:
            where.append("tenant = ?")
            args.append(tenant)
        if since is not None:
            where.append("ts >= ?")
            args.append(since)
        sql = "SELECT * FROM decisions" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY seq" + (f" LIMIT {int(limit)}" if limit else "")
        with self._lock:
            cur = self._conn.execute(sql, args)
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
        for r in rows:
            rec = dict(zip(names, r, strict=True))
            rec["scores"] = json.loads(rec["scores"])
            rec["reasons"] = json.loads(rec["reasons"])
            blob = rec["embedding"]
            rec["embedding"] = (
                None if blob is None else np.frombuffer(blob, dtype=np.float16).astype(np.float32)
            )
            yield rec

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class EventWriter:
    """Batches events off the request path; ``close()`` flushes everything accepted."""

    def __init__(self, log: EventLog, flush_every_s: float = 0.2, max_batch: int = 512) -> None:
        self.log = log
        self._q: queue.Queue[DecisionEvent | None] = queue.Queue()
        self._flush_every_s = flush_every_s
        self._max_batch = max_batch
        self._closed = False
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="bastion-event-writer", daemon=True)
        self._thread.start()

    def submit(self, events: list[DecisionEvent]) -> None:
        if self._closed:
            raise RuntimeError("event writer is closed")
        for e in events:
            self._q.put(e)

    def _run(self) -> None:
        pending: list[DecisionEvent] = []
        stop = False
        while not stop:
            deadline = time.monotonic() + self._flush_every_s
            while len(pending) < self._max_batch:
                try:
                    item = self._q.get(timeout=max(deadline - time.monotonic(), 0.001))
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                pending.append(item)
            while True:  # drain whatever else is queued without waiting
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                else:
                    pending.append(item)
            if pending:
                for attempt in range(5):
                    try:
                        self.log.append(pending)
                        pending = []
                        break
                    except sqlite3.OperationalError:  # locked by another writer: retry
                        self.errors += 1
                        time.sleep(0.1 * (attempt + 1))

    def close(self, timeout: float = 30.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._q.put(None)
        self._thread.join(timeout)
