"""The label store: moderators' labels (and imported ones) in an embedded SQLite database.

Several annotators may label the same item; each gives, per category, a value in [0, 1]
(1 = the category applies, fractional = soft or unsure) and a confidence in (0, 1]. There is one
current label per (item, annotator, category); a revision replaces it and the replaced label
moves to ``label_history``, so nothing is lost. Retraining reads :meth:`LabelStore.aggregated`:
one soft target and one sample weight per (item, category).
"""

from __future__ import annotations

import math
import numbers
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from bastion.core._label_files import IMPORT_FORMATS as _IMPORT_FORMATS
from bastion.core._label_files import Row as _Row
from bastion.core._label_files import csv_rows as _csv_rows
from bastion.core._label_files import jsonl_rows as _jsonl_rows
from bastion.core.errors import LabelError
from bastion.core.events import text_digest
from bastion.core.policy import SLUG

__all__ = [
    "ImportReport",
    "LabelStore",
    "LabelledItem",
    "Vote",
    "labels_db_path",
]

_SCHEMA = """
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

TENANT_SLUG = CATEGORY_SLUG = SLUG  # tenant and category names as the policy file has them
# A contested item (annotators split 0/1) still says something: keep it in training, a little.
MIN_WEIGHT = 0.05

def labels_db_path(state_dir: str | Path) -> Path:
    """Where the embedded default keeps the label store under a state directory."""
    return Path(state_dir) / "labels.db"


@dataclass(frozen=True)
class LabelledItem:
    """One (item, category) with its aggregated label: what retraining reads."""

    item_id: str
    tenant: str
    text: str
    session_id: str | None
    user_id: str | None
    category: str
    soft: float  # the soft target in [0, 1]
    weight: float  # the sample weight in [MIN_WEIGHT, 1]
    n_labels: int
    annotators: tuple[str, ...]


@dataclass(frozen=True)
class ImportReport:
    """What :meth:`LabelStore.import_file` did; ``errors``: one "line N: why" a rejected line."""

    items: int
    labels_added: int
    labels_unchanged: int
    labels_revised: int
    errors: list[str] = field(default_factory=list)


class Vote(NamedTuple):
    """One annotator's current label of one (item, category)."""

    annotator: str
    value: float
    confidence: float


def _is_number(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _check_item(item_id: str, tenant: str, text: str) -> None:
    if not isinstance(item_id, str) or not item_id.strip():
        raise LabelError(f"item_id must be a non-empty string, got {item_id!r}")
    if not isinstance(tenant, str) or not re.match(TENANT_SLUG, tenant):
        raise LabelError(f"tenant {tenant!r} of item {item_id!r} is not a lower-case slug "
                         "(letters, digits, _ or -; at most 63 characters), as in the policy file")
    if not isinstance(text, str) or not text.strip():
        raise LabelError(f"item {item_id!r} has no text; give the text the label is about")


def _check_label(item_id: str, annotator: str, category: str, value: Any,
                 confidence: Any) -> None:
    if not isinstance(annotator, str) or not annotator.strip():
        raise LabelError(f"annotator of item {item_id!r} must be a non-empty string, "
                         f"got {annotator!r}")
    if not isinstance(category, str) or not re.match(CATEGORY_SLUG, category):
        raise LabelError(f"category {category!r} on item {item_id!r} is not a lower-case slug "
                         "(lower-case letters, digits, _ or -; at most 63 characters)")
    if not _is_number(value) or not 0.0 <= float(value) <= 1.0:
        raise LabelError(f"label value of {category!r} on item {item_id!r} must be a number in "
                         f"[0, 1] (1 = applies, fractional = unsure), got {value!r}")
    if not _is_number(confidence) or not 0.0 < float(confidence) <= 1.0:
        raise LabelError(f"confidence of the {category!r} label on item {item_id!r} must be a "
                         f"number in (0, 1], got {confidence!r}")


class LabelStore:
    """Reader/writer of the label store at ``path``; threads and processes may share it (WAL).

    Every write is one ``BEGIN IMMEDIATE`` transaction: it takes SQLite's write lock before
    reading, so a read-then-write (is this label new?) never races another process.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # timeout=30 is SQLite's busy_timeout: wait up to 30 s for another writer's lock.
        # isolation_level=None: transactions are explicit (see _write), never implicit.
        self._conn = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False,
                                     isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as err:
                raise LabelError(f"label store {self.path} is busy ({err}) for more than 30 s; "
                                 "another process holds its write lock, try again") from None
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One snapshot for several SELECTs (WAL: readers never wait for writers)."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    # -- writing ---------------------------------------------------------------------------

    def add_item(self, *, item_id: str, tenant: str, text: str, session_id: str | None = None,
                 user_id: str | None = None, source: str = "review",
                 ts: float | None = None) -> None:
        """Store an item that labels can refer to.

        The same ``item_id`` again with the same tenant and text is a no-op (a session or user
        id missing so far is filled in).

        Raises:
            LabelError: an id, the tenant or the text is invalid, or ``item_id`` is already
                stored with another tenant or text.
        """
        _check_item(item_id, tenant, text)
        with self._write() as conn:
            self._put_item(conn, item_id, tenant, text, session_id, user_id, source, ts)

    def _put_item(self, conn: sqlite3.Connection, item_id: str, tenant: str, text: str,
                  session_id: str | None, user_id: str | None, source: str,
                  ts: float | None) -> None:
        row = conn.execute("SELECT tenant, text FROM items WHERE item_id = ?",
                           (item_id,)).fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO items (item_id, tenant, text, text_sha256, session_id, user_id, "
                "source, ts) VALUES (?,?,?,?,?,?,?,?)",
                (item_id, tenant, text, text_digest(text), session_id, user_id, source,
                 time.time() if ts is None else ts),
            )
            return
        if (row[0], row[1]) != (tenant, text):
            what = "tenant" if row[0] != tenant else "text"
            raise LabelError(
                f"item {item_id!r} is already in {self.path} with another {what} (tenant "
                f"{row[0]!r}, text {row[1][:40]!r}); an item id names one text of one tenant: "
                "give this one its own item_id, or leave item_id out to derive it from the text"
            )
        conn.execute(
            "UPDATE items SET session_id = COALESCE(session_id, ?), "
            "user_id = COALESCE(user_id, ?) WHERE item_id = ?",
            (session_id, user_id, item_id),
        )

    def add_label(self, *, item_id: str, annotator: str, category: str, value: float,
                  confidence: float = 1.0, ts: float | None = None) -> str:
        """Record one annotator's label of one category of a stored item.

        Returns:
            ``"added"`` for a first label, ``"unchanged"`` when the same value and confidence
            are already current (nothing is written), ``"revised"`` when it replaced a
            different one (the replaced label is kept in ``label_history``).

        Raises:
            LabelError: the item is not stored, or the label is invalid.
        """
        _check_label(item_id, annotator, category, value, confidence)
        with self._write() as conn:
            return self._put_label(conn, item_id, annotator, category, float(value),
                                   float(confidence), time.time() if ts is None else ts)

    def add_labels(self, item_id: str, annotator: str, labels: Mapping[str, float],
                   confidence: float = 1.0, ts: float | None = None) -> dict[str, str]:
        """Several categories of one item by one annotator, all or nothing.

        Returns:
            Each category's outcome, as :meth:`add_label` returns it.
        """
        if not labels:
            raise LabelError(f"no labels given for item {item_id!r} by {annotator!r}; give at "
                             "least one category with a value in [0, 1]")
        for category, value in labels.items():
            _check_label(item_id, annotator, category, value, confidence)
        now = time.time() if ts is None else ts
        with self._write() as conn:
            return {c: self._put_label(conn, item_id, annotator, c, float(v), float(confidence),
                                       now)
                    for c, v in labels.items()}

    def _put_label(self, conn: sqlite3.Connection, item_id: str, annotator: str, category: str,
                   value: float, confidence: float, ts: float) -> str:
        if conn.execute("SELECT 1 FROM items WHERE item_id = ?", (item_id,)).fetchone() is None:
            raise LabelError(f"no item {item_id!r} in {self.path}; store it first with its "
                             "tenant and text (add_item, or a line of 'bastion labels import')")
        key = (item_id, annotator, category)
        old = conn.execute(
            "SELECT value, confidence, ts FROM labels "
            "WHERE item_id = ? AND annotator = ? AND category = ?", key,
        ).fetchone()
        if old is None:
            conn.execute("INSERT INTO labels (item_id, annotator, category, value, confidence, "
                         "ts) VALUES (?,?,?,?,?,?)", (*key, value, confidence, ts))
            return "added"
        if (old[0], old[1]) == (value, confidence):
            return "unchanged"
        conn.execute("INSERT INTO label_history (item_id, annotator, category, value, "
                     "confidence, ts, replaced_ts) VALUES (?,?,?,?,?,?,?)", (*key, *old, ts))
        conn.execute("UPDATE labels SET value = ?, confidence = ?, ts = ? "
                     "WHERE item_id = ? AND annotator = ? AND category = ?",
                     (value, confidence, ts, *key))
        return "revised"

    # -- reading ---------------------------------------------------------------------------

    def aggregated(
        self, tenants: list[str] | None = None, since: float | None = None,
        aggregate: Callable[[Mapping[tuple[str, str], Sequence[Vote]]],
                            Mapping[tuple[str, str], tuple[float, float]]] | None = None,
    ) -> list[LabelledItem]:
        """One row per labelled (item, category), ordered by (item_id, category).

        Args:
            tenants: only these tenants' items (default: every tenant).
            aggregate: votes -> (soft, weight) per (item, category); default
                :meth:`aggregate` (retraining passes Dawid-Skene, ``review.aggregation``).
            since: only items with a label given after this unix time (strictly); such an
                item comes with all its current labels, older ones included.

        The numbers come from :meth:`aggregate`.
        """
        where: list[str] = []
        args: list[object] = []
        if tenants is not None:
            where.append(f"i.tenant IN ({','.join('?' * len(tenants))})")
            args.extend(tenants)
        if since is not None:
            where.append("l.item_id IN (SELECT item_id FROM labels WHERE ts > ?)")
            args.append(since)
        sql = (
            "SELECT i.item_id, i.tenant, i.text, i.session_id, i.user_id, l.category, "
            "l.annotator, l.value, l.confidence FROM labels l JOIN items i USING (item_id)"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY l.item_id, l.category, l.annotator"
        )
        with self._read() as conn:
            rows = conn.execute(sql, args).fetchall()
        items: dict[str, tuple[str, str, str | None, str | None]] = {}
        votes: dict[tuple[str, str], list[Vote]] = {}
        for item_id, tenant, text, session_id, user_id, category, annotator, value, conf in rows:
            items[item_id] = (tenant, text, session_id, user_id)
            votes.setdefault((item_id, category), []).append(Vote(annotator, value, conf))
        results = (aggregate or self.aggregate)(votes)
        out: list[LabelledItem] = []
        for (item_id, category), vs in votes.items():
            tenant, text, session_id, user_id = items[item_id]
            soft, weight = results[(item_id, category)]
            out.append(LabelledItem(
                item_id=item_id, tenant=tenant, text=text, session_id=session_id,
                user_id=user_id, category=category, soft=soft, weight=weight, n_labels=len(vs),
                annotators=tuple(v.annotator for v in vs),
            ))
        return out

    def aggregate(
        self, votes: Mapping[tuple[str, str], Sequence[Vote]]
    ) -> dict[tuple[str, str], tuple[float, float]]:
        """Soft target and sample weight of each (item_id, category) from its annotators' votes.

        A simple placeholder, to be replaced by Dawid-Skene (which estimates each annotator's
        reliability jointly over all items: hence every vote comes in one call):

        - ``soft = sum(conf_i * value_i) / sum(conf_i)``, the confidence-weighted mean;
        - ``weight = mean(conf_i) * (1 - disagreement)``, with ``disagreement`` twice the
          confidence-weighted standard deviation of the values, clipped to [0, 1] (a 0/1 split
          is 1), and ``weight`` at least ``MIN_WEIGHT``.

        Both are rounded to 6 decimals.
        """
        out: dict[tuple[str, str], tuple[float, float]] = {}
        for key, vs in votes.items():
            total = sum(v.confidence for v in vs)
            soft = sum(v.confidence * v.value for v in vs) / total
            var = sum(v.confidence * (v.value - soft) ** 2 for v in vs) / total
            disagreement = min(1.0, 2.0 * math.sqrt(var))
            weight = max(MIN_WEIGHT, total / len(vs) * (1.0 - disagreement))
            out[key] = (round(soft, 6), round(weight, 6))
        return out

    def count_labels(self, since: float | None = None, tenant: str | None = None) -> int:
        """Current labels (revised ones count once), given after ``since`` if set."""
        where: list[str] = []
        args: list[object] = []
        if since is not None:
            where.append("l.ts > ?")
            args.append(since)
        if tenant is not None:
            where.append("i.tenant = ?")
            args.append(tenant)
        sql = "SELECT COUNT(*) FROM labels l JOIN items i USING (item_id)"
        sql += (" WHERE " + " AND ".join(where)) if where else ""
        with self._read() as conn:
            return int(conn.execute(sql, args).fetchone()[0])

    def stats(self) -> dict[str, Any]:
        """Counts of items, current labels and annotators, per tenant and per category."""
        with self._read() as conn:
            n_items = conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            n_labels, n_annotators, last_ts = conn.execute(
                "SELECT COUNT(*), COUNT(DISTINCT annotator), MAX(ts) FROM labels").fetchone()
            by_tenant = conn.execute(
                "SELECT i.tenant, COUNT(DISTINCT i.item_id), COUNT(l.item_id) FROM items i "
                "LEFT JOIN labels l USING (item_id) GROUP BY i.tenant ORDER BY i.tenant"
            ).fetchall()
            by_category = conn.execute(
                "SELECT category, COUNT(*) FROM labels GROUP BY category ORDER BY category"
            ).fetchall()
        return {
            "items": int(n_items),
            "labels": int(n_labels),
            "annotators": int(n_annotators),
            "by_tenant": {t: {"items": int(i), "labels": int(n)} for t, i, n in by_tenant},
            "by_category": {c: int(n) for c, n in by_category},
            "last_label_ts": None if last_ts is None else float(last_ts),
        }

    # -- importing -------------------------------------------------------------------------

    def import_file(self, path: str | Path, default_annotator: str = "import") -> ImportReport:
        """Import items and labels from a labelling tool's export.

        JSON Lines (``.jsonl``), one object a line::

            {"item_id": "...", "tenant": "...", "text": "...", "session_id": "...",
             "user_id": "...", "annotator": "...", "confidence": 0.9,
             "labels": {"hate": 1, "offensive": 0.5}}

        or CSV (``.csv``) with columns ``item_id, tenant, text`` (optional ``session_id,
        user_id, annotator, confidence``) and one ``label:<category>`` column per category (an
        empty cell is no label). Only ``tenant``, ``text`` and the labels are required; a missing
        ``item_id`` becomes ``sha256:`` and 16 hex digits of the tenant and text.

        Each line is its own transaction: a bad line is skipped and reported as "line N: why",
        every other line is imported. Importing the same file again changes nothing.

        Raises:
            LabelError: the file is missing, not .jsonl/.csv, or its CSV header is unusable.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".jsonl", ".csv"):
            raise LabelError(f"cannot import {path}: unknown format {path.suffix or '(none)'!r}; "
                             f"give a {_IMPORT_FORMATS} file")
        if not path.is_file():
            raise LabelError(f"cannot import {path}: no such file; give a {_IMPORT_FORMATS} file")
        read = _jsonl_rows if suffix == ".jsonl" else _csv_rows
        items: set[str] = set()
        counts = {"added": 0, "unchanged": 0, "revised": 0}
        errors: list[str] = []
        for lineno, row in read(path, default_annotator):
            if isinstance(row, str):
                errors.append(f"line {lineno}: {row}")
                continue
            try:
                outcomes = self._import_row(row)
            except LabelError as err:
                errors.append(f"line {lineno}: {err}")
                continue
            items.add(row.item_id)
            for outcome in outcomes.values():
                counts[outcome] += 1
        return ImportReport(len(items), counts["added"], counts["unchanged"], counts["revised"],
                            errors)

    def _import_row(self, row: _Row) -> dict[str, str]:
        _check_item(row.item_id, row.tenant, row.text)
        for category, value in row.labels.items():
            _check_label(row.item_id, row.annotator, category, value, row.confidence)
        now = time.time()
        with self._write() as conn:
            self._put_item(conn, row.item_id, row.tenant, row.text, row.session_id, row.user_id,
                           "import", now)
            return {c: self._put_label(conn, row.item_id, row.annotator, c, float(v),
                                       float(row.confidence), now)
                    for c, v in row.labels.items()}

    def close(self) -> None:
        with self._lock:
            self._conn.close()

