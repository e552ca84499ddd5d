"""The one-time import of a state directory's pre-database SQLite files into the one database.

Before every store moved onto one database (:mod:`bastion.core.store.tables`), a state
directory held a SQLite file per store. :func:`import_legacy` copies what they accepted into
the database the URL points to (SQLite or PostgreSQL), one transaction per file, then renames
each imported file to ``<name>.imported``; nothing is deleted.

======================  =====================================================================
file                    imported into
======================  =====================================================================
``events.db``           ``decisions`` -> ``events`` (every column, the original ``ts`` and
                        the float16 embedding; a new ``seq``, in the old order)
``labels.db``           ``items`` -> ``label_items``, ``labels`` -> ``labels``,
                        ``label_history`` -> ``label_history``; the old bare ``item_id`` becomes
                        ``(tenant, item_id)`` with the tenant the old ``items`` row recorded,
                        and the review sync's ``tenant:item_id`` names lose their prefix, so
                        they are the review queue's items again
``review.db``           every review table (``review_tasks``, ``review_items``,
                        ``review_reports``, ``review_events``, ``review_slots``,
                        ``review_claims``: the same columns as the new ones); ``review_labels``
                        -> ``labels`` where the label is not there yet (labels after the last
                        sync mark), with the submission that gave it
``drift/triggers.db``   ``triggers`` -> ``drift_triggers`` (a new ``id``, in the old order)
======================  =====================================================================

The embedding cache (``embeddings/*.sqlite``) is only a cache: it is not imported and its
files stay where they are (delete them at will; retraining recomputes what it misses). The
review sync's high-water mark (``review_sync.json``) is no longer read either.

Idempotent: the database records each imported file by its name and SHA-256
(``legacy_imports``) in the file's own transaction, so a crash mid-file imports nothing of it
(the file stays, the next start imports it whole) and a crash between the commit and the
rename imports nothing twice (the next start only renames it).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, and_, insert, select, update

from bastion.core.errors import StoreError
from bastion.core.labels import put_item
from bastion.core.store.counts import rebuild_event_counts
from bastion.core.store.engine import insert_ignore
from bastion.core.store.tables import (
    drift_triggers,
    events,
    label_history,
    labels,
    legacy_imports,
    review_claims,
    review_events,
    review_items,
    review_reports,
    review_slots,
    review_tasks,
)

__all__ = ["LEGACY_FILES", "import_legacy", "legacy_files", "summary"]

# Per-table hook: (file, table, rows imported); raising aborts that file's transaction.
Progress = Callable[[str, str, int], None]

LEGACY_FILES = ("events.db", "labels.db", "review.db", "drift/triggers.db")
SUFFIX = ".imported"
_BATCH = 5000  # rows per INSERT round trip: bounded memory for a large event log

_EVENT_COLUMNS = ("ts", "request_id", "tenant", "item_id", "session_id", "user_id", "text",
                  "text_sha256", "text_len", "decision", "scores", "reasons", "model_version",
                  "policy_version", "embedding")
_TRIGGER_COLUMNS = ("at", "action", "rule", "reasons", "job_id", "model_version", "message")
# The old review queue's tables: the same names and columns as the new ones.
_REVIEW_TABLES = (review_tasks, review_items, review_reports, review_events, review_slots,
                  review_claims)


def legacy_files(state_dir: str | Path) -> list[Path]:
    """The pre-database files still waiting in ``state_dir`` (not yet renamed)."""
    return [p for p in (Path(state_dir) / n for n in LEGACY_FILES) if p.is_file()]


def import_legacy(state_dir: str | Path, engine: Engine,
                  progress: Progress | None = None) -> dict[str, dict[str, int]]:
    """Import the state directory's pre-database files into ``engine``'s database (at head).

    Args:
        state_dir: the directory holding ``events.db``, ``labels.db``, ``review.db``,
            ``drift/triggers.db`` (any missing one is skipped).
        engine: the database to import into.
        progress: called after each table with (file, table, rows imported).

    Returns:
        Rows imported per file and table, e.g. ``{"events.db": {"decisions": 1234}}``; a file
        already imported (renamed now) maps to ``{}``.

    Raises:
        sqlite3.DatabaseError, sqlalchemy.exc.SQLAlchemyError, LabelError: a file cannot be
            read or its rows do not fit; that file stays un-renamed and nothing of it is kept.
    """
    state = Path(state_dir)
    out: dict[str, dict[str, int]] = {}
    for path in legacy_files(state):
        name = path.relative_to(state).as_posix()
        with closing(_open(path)) as src:
            # the old stores ran in WAL mode: fold the log into the file before hashing it
            src.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            digest = _sha256(path)
            with engine.begin() as conn:
                done = conn.execute(select(legacy_imports.c.name).where(
                    legacy_imports.c.name == name, legacy_imports.c.sha256 == digest)).first()
                counts: dict[str, int] = {}
                if done is None:
                    _IMPORTERS[name](src, conn, _Tally(name, counts, progress))
                    conn.execute(insert(legacy_imports).values(
                        name=name, sha256=digest, imported_ts=time.time(),
                        counts=json.dumps(counts)))
        _rename(path)
        out[name] = counts
    return out


def summary(counts: dict[str, dict[str, int]]) -> str:
    """One line for the operator: ``Imported from events.db: 1,234 decisions; ...``."""
    parts = []
    for name, tables in counts.items():
        what = ", ".join(f"{n:,} {t}" for t, n in tables.items()) or "already imported"
        parts.append(f"{name}: {what}")
    return "Imported from " + "; ".join(parts) if parts else ""


class _Tally:
    """Records one file's count per table, and tells ``progress``."""

    def __init__(self, name: str, counts: dict[str, int], progress: Progress | None) -> None:
        self.name, self.counts, self.progress = name, counts, progress

    def __call__(self, table: str, n: int) -> None:
        self.counts[table] = n
        if self.progress is not None:
            self.progress(self.name, table, n)


def _open(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=30)
    conn.row_factory = sqlite3.Row
    return conn


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _rename(path: Path) -> None:
    path.replace(path.with_name(path.name + SUFFIX))
    for side in ("-wal", "-shm"):  # empty after the checkpoint; keep them with their file
        extra = path.with_name(path.name + side)
        if extra.exists():
            extra.replace(path.with_name(path.name + SUFFIX + side))


def _has(src: sqlite3.Connection, table: str) -> bool:
    return src.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                       (table,)).fetchone() is not None


def _rows(src: sqlite3.Connection, sql: str) -> Iterator[list[dict[str, Any]]]:
    cur = src.execute(sql)
    while batch := cur.fetchmany(_BATCH):
        yield [dict(r) for r in batch]


def _copy(src: sqlite3.Connection, conn: Connection, old: str, table: Table,
          columns: tuple[str, ...], order: str) -> int:
    """Every row of ``old`` into ``table`` (plain INSERT: the database assigns the new key)."""
    if not _has(src, old):
        return 0
    n = 0
    for batch in _rows(src, f"SELECT {', '.join(columns)} FROM {old} ORDER BY {order}"):
        conn.execute(insert(table), batch)
        n += len(batch)
    return n


def _events(src: sqlite3.Connection, conn: Connection, tick: _Tally) -> None:
    tick("decisions", _copy(src, conn, "decisions", events, _EVENT_COLUMNS, "seq"))
    rebuild_event_counts(conn)  # the dashboards' counts include the imported decisions


def _triggers(src: sqlite3.Connection, conn: Connection, tick: _Tally) -> None:
    tick("triggers", _copy(src, conn, "triggers", drift_triggers, _TRIGGER_COLUMNS, "id"))


def _new_item_id(tenant: str, item_id: str, source: str) -> str:
    # The old review sync named an item f"{tenant}:{item_id}" (one key column); the review
    # queue and the new labels name it (tenant, item_id).
    prefix = f"{tenant}:"
    return item_id[len(prefix):] if source == "review" and item_id.startswith(prefix) else item_id


def _labels(src: sqlite3.Connection, conn: Connection, tick: _Tally) -> None:
    keys: dict[str, tuple[str, str]] = {}  # old item_id -> (tenant, new item_id)
    n = 0
    if _has(src, "items"):
        for batch in _rows(src, "SELECT * FROM items ORDER BY item_id"):
            for r in batch:
                tenant, item_id = r["tenant"], _new_item_id(r["tenant"], r["item_id"],
                                                            r["source"])
                keys[r["item_id"]] = (tenant, item_id)
                put_item(conn, tenant=tenant, item_id=item_id, text=r["text"],
                         text_sha256=r["text_sha256"], session_id=r["session_id"],
                         user_id=r["user_id"], source=r["source"], ts=r["ts"])
                n += 1
    tick("items", n)
    n = 0
    if _has(src, "labels"):
        for batch in _rows(src, "SELECT * FROM labels ORDER BY item_id, annotator, category"):
            for r in batch:
                if r["item_id"] not in keys:  # the old foreign key was never enforced
                    raise StoreError(f"labels.db: a label of item {r['item_id']!r}, which its "
                                     "items table lacks; add the item or delete the label "
                                     "(sqlite3 labels.db), then start again")
                tenant, item_id = keys[r["item_id"]]
                added = conn.execute(insert_ignore(conn, labels).values(
                    tenant=tenant, item_id=item_id, annotator=r["annotator"],
                    category=r["category"], value=r["value"], confidence=r["confidence"],
                    ts=r["ts"], submission_id=None).returning(labels.c.item_id)).first()
                n += added is not None
    tick("labels", n)
    n = 0
    if _has(src, "label_history"):
        for batch in _rows(src, "SELECT * FROM label_history ORDER BY seq"):
            rows = []
            for r in batch:
                if r["item_id"] not in keys:  # history of an item the old store never held
                    continue
                tenant, item_id = keys[r["item_id"]]
                rows.append({"tenant": tenant, "item_id": item_id, "annotator": r["annotator"],
                             "category": r["category"], "value": r["value"],
                             "confidence": r["confidence"], "ts": r["ts"],
                             "submission_id": None, "replaced_ts": r["replaced_ts"]})
            if rows:
                conn.execute(insert(label_history), rows)
            n += len(rows)
    tick("label_history", n)


def _review(src: sqlite3.Connection, conn: Connection, tick: _Tally) -> None:
    for table in _REVIEW_TABLES:
        n = 0
        if _has(src, table.name):
            # the columns the old store has (later ones, e.g. media, keep their defaults)
            present = {r[1] for r in src.execute(f"PRAGMA table_info({table.name})")}
            cols = ", ".join(c.name for c in table.columns if c.name in present)
            for batch in _rows(src, f"SELECT {cols} FROM {table.name} ORDER BY rowid"):
                for r in batch:  # ON CONFLICT: what the new queue already holds stays
                    got = conn.execute(insert_ignore(conn, table).values(**r).returning(
                        *table.primary_key.columns)).first()
                    n += got is not None
        tick(table.name, n)
    tick("review_labels", _review_labels(src, conn) if _has(src, "review_labels") else 0)


def _review_labels(src: sqlite3.Connection, conn: Connection) -> int:
    """Submitted labels not yet in ``labels`` (given after the old sync's last mark)."""
    q = ("SELECT l.*, i.text, i.text_sha256, i.session_id, i.user_id, i.ts AS item_ts "
         "FROM review_labels l JOIN review_items i "
         "ON i.tenant = l.tenant AND i.item_id = l.item_id ORDER BY l.seq")
    n = 0
    for batch in _rows(src, q):
        for r in batch:
            key = and_(labels.c.tenant == r["tenant"], labels.c.item_id == r["item_id"],
                       labels.c.annotator == r["moderator"],
                       labels.c.category == r["category"])
            old = conn.execute(select(labels.c.value, labels.c.confidence,
                                      labels.c.submission_id).where(key)).first()
            if old is not None:
                # the sync copied it without its submission: name it, so it counts as reviewed
                if (old.submission_id is None
                        and (old.value, old.confidence) == (r["value"], r["confidence"])):
                    conn.execute(update(labels).where(key).values(
                        submission_id=r["submission_id"]))
                continue
            put_item(conn, tenant=r["tenant"], item_id=r["item_id"], text=r["text"],
                     text_sha256=r["text_sha256"], session_id=r["session_id"],
                     user_id=r["user_id"], source="review", ts=r["item_ts"])
            conn.execute(insert(labels).values(
                tenant=r["tenant"], item_id=r["item_id"], annotator=r["moderator"],
                category=r["category"], value=r["value"], confidence=r["confidence"],
                ts=r["ts"], submission_id=r["submission_id"]))
            n += 1
    return n


_IMPORTERS: dict[str, Callable[[sqlite3.Connection, Connection, _Tally], None]] = {
    "events.db": _events,
    "labels.db": _labels,
    "review.db": _review,
    "drift/triggers.db": _triggers,
}
