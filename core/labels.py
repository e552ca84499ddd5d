"""The label store: moderators' labels (and imported ones) in the one ``labels`` table.

Several annotators may label the same item; each gives, per category, a value in [0, 1]
(1 = the category applies, fractional = soft or unsure) and a confidence in (0, 1]. There is one
current label per (item, annotator, category); a revision replaces it and the replaced label
moves to ``label_history``, so nothing is lost. The review queue writes a moderator's labels
here in the submission's own transaction (:func:`put_label`); files come in through
:meth:`LabelStore.import_file`. Retraining reads :meth:`LabelStore.aggregated`: one soft target
and one sample weight per (item, category), by Dawid-Skene (``core.aggregation``).
"""

from __future__ import annotations

import json
import numbers
import re
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, and_, func, insert, select, update
from sqlalchemy.engine import URL

from bastion.core._label_files import IMPORT_FORMATS as _IMPORT_FORMATS
from bastion.core._label_files import Row as _Row
from bastion.core._label_files import csv_rows as _csv_rows
from bastion.core._label_files import jsonl_rows as _jsonl_rows
from bastion.core.aggregation import MIN_WEIGHT, Vote, dawid_skene_weights
from bastion.core.errors import LabelError
from bastion.core.policy import SLUG
from bastion.core.store import READ, insert_ignore, is_postgres, open_store
from bastion.core.store.tables import label_history, label_items, labels, review_items
from bastion.core.textkey import text_digest

__all__ = [
    "Aggregate",
    "ImportReport",
    "LabelStore",
    "LabelledItem",
    "MIN_WEIGHT",
    "Vote",
    "item_key",
    "put_item",
    "put_label",
    "split_item_key",
]

TENANT_SLUG = CATEGORY_SLUG = SLUG  # tenant and category names as the policy file has them
# votes -> (soft, weight) per (item key, category), over all of them at once (Dawid-Skene
# estimates each annotator's reliability jointly over every item)
Aggregate = Callable[[Mapping[tuple[str, str], Sequence[Vote]]],
                     Mapping[tuple[str, str], tuple[float, float]]]


def item_key(tenant: str, item_id: str) -> str:
    """The one in-memory name of an item, ``tenant:item_id`` (a tenant slug has no ``:``);
    the tables name it by the two columns ``(tenant, item_id)``."""
    return f"{tenant}:{item_id}"


def split_item_key(key: str) -> tuple[str, str]:
    """``(tenant, item_id)`` of an :func:`item_key`."""
    tenant, item_id = key.split(":", 1)
    return tenant, item_id


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


def put_item(conn: Connection, *, tenant: str, item_id: str, text: str | None,
             text_sha256: str, session_id: str | None = None,
             user_id: str | None = None, source: str, ts: float,
             modality: str = "text") -> None:
    """Store an item labels can refer to, in the caller's transaction (the review queue's
    submission, an import line). The same item again is a no-op: a session or user id, or the
    text, missing so far is filled in. ``text_sha256`` is the text's keyed digest
    (``core.textkey.text_digest`` under the install's key).

    Raises:
        LabelError: the item is already stored with another text.
    """
    digest = text_sha256
    where = and_(label_items.c.tenant == tenant, label_items.c.item_id == item_id)
    # ON CONFLICT DO NOTHING: two writers of a new item (PostgreSQL runs them concurrently)
    # both end up comparing against the one stored row below
    added = conn.execute(insert_ignore(conn, label_items).values(
        tenant=tenant, item_id=item_id, text=text, text_sha256=digest,
        session_id=session_id, user_id=user_id, source=source, ts=ts, modality=modality
    ).returning(label_items.c.item_id)).first()  # RETURNING: psycopg's rowcount here is -1
    if added is not None:
        return
    q = select(label_items.c.text_sha256, label_items.c.text).where(where)
    row = conn.execute(q.with_for_update() if is_postgres(conn) else q).one()
    if row.text_sha256 != digest:
        stored = f"text {row.text[:40]!r}" if row.text else f"text digest {row.text_sha256[:12]}"
        raise LabelError(
            f"item {item_id!r} of tenant {tenant!r} is already labelled with another {stored}; "
            "an item id names one text of one tenant: give this one its own item_id, or leave "
            "item_id out to derive it from the text")
    conn.execute(update(label_items).where(where).values(
        text=func.coalesce(label_items.c.text, text),
        session_id=func.coalesce(label_items.c.session_id, session_id),
        user_id=func.coalesce(label_items.c.user_id, user_id)))


def put_label(conn: Connection, *, tenant: str, item_id: str, annotator: str, category: str,
              value: float, confidence: float, ts: float,
              submission_id: str | None = None) -> str:
    """One annotator's label of a stored item, in the caller's transaction.

    Returns:
        ``"added"``, ``"unchanged"`` (same value and confidence: nothing written) or
        ``"revised"`` (the replaced label moves to ``label_history``).
    """
    key = and_(labels.c.tenant == tenant, labels.c.item_id == item_id,
               labels.c.annotator == annotator, labels.c.category == category)
    current = select(labels.c.value, labels.c.confidence, labels.c.ts,
                     labels.c.submission_id).where(key)
    if is_postgres(conn):  # a concurrent revision of this label waits for this one
        current = current.with_for_update()
    old = conn.execute(current).first()
    if old is None:
        if conn.execute(select(label_items.c.item_id).where(
                label_items.c.tenant == tenant, label_items.c.item_id == item_id)).first() is None:
            raise LabelError(f"no item {item_id!r} of tenant {tenant!r} in the label store; "
                             "store it first with its text (add_item, or a line of 'bastion "
                             "labels import')")
        added = conn.execute(insert_ignore(conn, labels).values(
            tenant=tenant, item_id=item_id, annotator=annotator, category=category,
            value=value, confidence=confidence, ts=ts, submission_id=submission_id
        ).returning(labels.c.item_id)).first()
        if added is not None:
            return "added"
        old = conn.execute(current).one()  # another writer added it meanwhile
    if (old.value, old.confidence) == (value, confidence):
        return "unchanged"
    conn.execute(insert(label_history).values(
        tenant=tenant, item_id=item_id, annotator=annotator, category=category, value=old.value,
        confidence=old.confidence, ts=old.ts, submission_id=old.submission_id, replaced_ts=ts))
    conn.execute(update(labels).where(key).values(value=value, confidence=confidence, ts=ts,
                                                  submission_id=submission_id))
    return "revised"


class LabelStore:
    """The labels in the database at ``url`` (``Settings.database_url``, or an engine):
    moderators' (the review queue writes them, :func:`put_label`) and imported ones.

    Every write is one transaction (on SQLite ``BEGIN IMMEDIATE``: the write lock is taken
    before reading, so a read-then-write (is this label new?) never races another process).
    """

    def __init__(self, url: str | URL | Engine, text_key: bytes | None = None) -> None:
        """
        Args:
            url: the database.
            text_key: the install's text digest key (``core.textkey.text_key``); needed only
                to add items (``add_item``, ``import_file``), which digest their text.
        """
        self._engine, self._owned = open_store(url)
        self._text_key = text_key

    def digest(self, text: str) -> str:
        """The keyed digest of ``text`` under this store's install key."""
        if self._text_key is None:
            raise LabelError("this label store was opened without the install's text key; "
                             "open it as LabelStore(url, text_key=text_key(settings))")
        return text_digest(text, self._text_key)

    def close(self) -> None:
        if self._owned:
            self._engine.dispose()

    def _read(self) -> Any:
        return self._engine.connect().execution_options(**READ)

    # -- writing ---------------------------------------------------------------------------

    def add_item(self, *, tenant: str, item_id: str, text: str, session_id: str | None = None,
                 user_id: str | None = None, source: str = "import",
                 ts: float | None = None) -> None:
        """Store an item that labels can refer to (see :func:`put_item`).

        Raises:
            LabelError: an id, the tenant or the text is invalid, or ``(tenant, item_id)`` is
                already stored with another text.
        """
        _check_item(item_id, tenant, text)
        with self._engine.begin() as conn:
            put_item(conn, tenant=tenant, item_id=item_id, text=text,
                     text_sha256=self.digest(text), session_id=session_id,
                     user_id=user_id, source=source, ts=time.time() if ts is None else ts)

    def add_label(self, *, tenant: str, item_id: str, annotator: str, category: str,
                  value: float, confidence: float = 1.0, ts: float | None = None) -> str:
        """Record one annotator's label of one category of a stored item (see
        :func:`put_label` for the outcome).

        Raises:
            LabelError: the item is not stored, or the label is invalid.
        """
        _check_label(item_id, annotator, category, value, confidence)
        with self._engine.begin() as conn:
            return put_label(conn, tenant=tenant, item_id=item_id, annotator=annotator,
                             category=category, value=float(value),
                             confidence=float(confidence), ts=time.time() if ts is None else ts)

    def add_labels(self, tenant: str, item_id: str, annotator: str, values: Mapping[str, float],
                   confidence: float = 1.0, ts: float | None = None) -> dict[str, str]:
        """Several categories of one item by one annotator, all or nothing.

        Returns:
            Each category's outcome, as :meth:`add_label` returns it.
        """
        if not values:
            raise LabelError(f"no labels given for item {item_id!r} by {annotator!r}; give at "
                             "least one category with a value in [0, 1]")
        for category, value in values.items():
            _check_label(item_id, annotator, category, value, confidence)
        now = time.time() if ts is None else ts
        with self._engine.begin() as conn:
            return {c: put_label(conn, tenant=tenant, item_id=item_id, annotator=annotator,
                                 category=c, value=float(v), confidence=float(confidence),
                                 ts=now)
                    for c, v in values.items()}

    # -- reading ---------------------------------------------------------------------------

    def votes(self, tenants: Collection[str] | None = None, since: float | None = None,
              reviewed: bool = False) -> dict[tuple[str, str], list[Vote]]:
        """Every current label as votes per (:func:`item_key`, category), ordered by item,
        category and annotator.

        Args:
            tenants: only these tenants' items (default: every tenant).
            since: only items with a label given after this unix time (strictly); such an
                item comes with all its current labels, older ones included.
            reviewed: only moderators' labels from review submissions (not imported or gold
                ones): what measures moderators and the model on reviewed traffic.
        """
        return self._votes(tenants, since, reviewed=reviewed)[0]

    def _votes(self, tenants: Collection[str] | None, since: float | None,
               with_text: bool = False, reviewed: bool = False, images: bool = False
               ) -> tuple[dict[tuple[str, str], list[Vote]], dict[str, Any]]:
        q = (select(labels.c.tenant, labels.c.item_id, labels.c.category, labels.c.annotator,
                    labels.c.value, labels.c.confidence, label_items.c.text,
                    label_items.c.session_id, label_items.c.user_id)
             .join(label_items, and_(label_items.c.tenant == labels.c.tenant,
                                     label_items.c.item_id == labels.c.item_id)))
        if tenants is not None:
            q = q.where(labels.c.tenant.in_(sorted(set(tenants))))
        if with_text:  # training data: text, and what was said (an image's labels are not
            # about the text it shows)
            q = q.where(label_items.c.text.is_not(None), label_items.c.modality != "image")
        if images:  # the image heads' training data: labels of images, with or without text
            q = q.where(label_items.c.modality == "image")
        if reviewed:
            q = q.where(labels.c.submission_id.is_not(None))
        if since is not None:
            fresh = (select(labels.c.tenant, labels.c.item_id).where(labels.c.ts > since)
                     .distinct().subquery())
            q = q.join(fresh, and_(fresh.c.tenant == labels.c.tenant,
                                   fresh.c.item_id == labels.c.item_id))
        q = q.order_by(labels.c.tenant, labels.c.item_id, labels.c.category, labels.c.annotator)
        with self._read() as conn, conn.begin():
            rows = conn.execute(q).all()
        votes: dict[tuple[str, str], list[Vote]] = {}
        items: dict[str, Any] = {}
        for r in rows:
            key = item_key(r.tenant, r.item_id)
            items[key] = r
            votes.setdefault((key, r.category), []).append(
                Vote(r.annotator, r.value, r.confidence))
        return votes, items

    def reviewed(self, model_version: str | None = None
                 ) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
        """(tenant, category) -> (model scores, Dawid-Skene labels) of every item moderators
        labelled in review that the model scored for that category (``model_version``: only
        items that version scored): threshold calibration's evidence, and the drift check's
        precision on reviewed items."""
        votes = self.votes(reviewed=True)
        q = (select(review_items.c.tenant, review_items.c.item_id, review_items.c.scores)
             .where(select(labels.c.item_id).where(
                 labels.c.tenant == review_items.c.tenant,
                 labels.c.item_id == review_items.c.item_id,
                 labels.c.submission_id.is_not(None)).exists(),
                    review_items.c.modality != "image"))  # its scores mix the image model's
        if model_version is not None:
            q = q.where(review_items.c.model_version == model_version)
        with self._read() as conn, conn.begin():
            scores = {item_key(r.tenant, r.item_id): json.loads(r.scores)
                      for r in conn.execute(q)}
        out: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
        for (key, category), (soft, _w) in (dawid_skene_weights(votes) if votes else {}).items():
            score = scores.get(key, {}).get(category)
            if score is None:
                continue
            s_list, y_list = out.setdefault((split_item_key(key)[0], category), ([], []))
            s_list.append(float(score))
            y_list.append(soft)
        return {k: (np.array(s), np.array(y)) for k, (s, y) in out.items()}

    def aggregated(
        self, tenants: Collection[str] | None = None, since: float | None = None,
        aggregate: Aggregate = dawid_skene_weights, *, images: bool = False,
    ) -> list[LabelledItem]:
        """One row per labelled (item, category) of an item with text, ordered by (tenant,
        item_id, category): the soft target and sample weight retraining trains on.

        Args:
            tenants, since: as :meth:`votes`.
            aggregate: votes -> (soft, weight); default Dawid-Skene (``core.aggregation``).
            images: the labels of image items instead (what the image heads train on; an
                image's ``text`` is what it shows, "" for none).
        """
        votes, items = self._votes(tenants, since, with_text=not images, images=images)
        results = aggregate(votes) if votes else {}
        out: list[LabelledItem] = []
        for (key, category), vs in votes.items():
            r = items[key]
            soft, weight = results[(key, category)]
            out.append(LabelledItem(
                item_id=r.item_id, tenant=r.tenant, text=r.text or "", session_id=r.session_id,
                user_id=r.user_id, category=category, soft=soft, weight=weight,
                n_labels=len(vs), annotators=tuple(v.annotator for v in vs),
            ))
        return out

    def count_labels(self, since: float | None = None, tenant: str | None = None) -> int:
        """Current labels (revised ones count once), given after ``since`` if set."""
        q = select(func.count()).select_from(labels)
        if since is not None:
            q = q.where(labels.c.ts > since)
        if tenant is not None:
            q = q.where(labels.c.tenant == tenant)
        with self._read() as conn, conn.begin():
            return int(conn.execute(q).scalar_one())

    def stats(self) -> dict[str, Any]:
        """Counts of items, current labels and annotators, per tenant and per category."""
        with self._read() as conn, conn.begin():
            n_items = conn.execute(select(func.count()).select_from(label_items)).scalar_one()
            n_labels, n_annotators, last_ts = conn.execute(select(
                func.count(), func.count(labels.c.annotator.distinct()), func.max(labels.c.ts)
            )).one()
            per_item = (select(label_items.c.tenant, func.count().label("n"))
                        .group_by(label_items.c.tenant).subquery())
            per_label = (select(labels.c.tenant, func.count().label("n"))
                         .group_by(labels.c.tenant).subquery())
            by_tenant = conn.execute(
                select(per_item.c.tenant, per_item.c.n, func.coalesce(per_label.c.n, 0))
                .outerjoin(per_label, per_label.c.tenant == per_item.c.tenant)
                .order_by(per_item.c.tenant)).all()
            by_category = conn.execute(
                select(labels.c.category, func.count()).group_by(labels.c.category)
                .order_by(labels.c.category)).all()
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
        ``item_id`` becomes ``sha256:`` and 16 hex digits of the tenant and text. An item is
        ``(tenant, item_id)``, as the review queue names it.

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
        seen: set[tuple[str, str]] = set()
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
            seen.add((row.tenant, row.item_id))
            for outcome in outcomes.values():
                counts[outcome] += 1
        return ImportReport(len(seen), counts["added"], counts["unchanged"], counts["revised"],
                            errors)

    def _import_row(self, row: _Row) -> dict[str, str]:
        _check_item(row.item_id, row.tenant, row.text)
        for category, value in row.labels.items():
            _check_label(row.item_id, row.annotator, category, value, row.confidence)
        now = time.time()
        with self._engine.begin() as conn:
            put_item(conn, tenant=row.tenant, item_id=row.item_id, text=row.text,
                     text_sha256=self.digest(row.text), session_id=row.session_id,
                     user_id=row.user_id, source="import", ts=now)
            return {c: put_label(conn, tenant=row.tenant, item_id=row.item_id,
                                 annotator=row.annotator, category=c, value=float(v),
                                 confidence=float(row.confidence), ts=now)
                    for c, v in row.labels.items()}
