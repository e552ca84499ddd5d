"""Decisions counted per tenant, minute, decision and category (``event_counts``), and per
tenant, minute, language and decision (``language_counts``), kept beside
the event log in the same transaction, so that the dashboards read a few thousand counters
instead of scanning a day's events (``bastion.review.dashboards``). Counts are aggregates, not
personal data: they stay when the retention purge deletes the events they counted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, Integer, cast, delete, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bastion.core.store.engine import is_postgres
from bastion.core.store.tables import event_counts, events, language_counts

__all__ = ["add_event_counts", "rebuild_event_counts"]


def add_event_counts(conn: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
    """Count event ``rows`` (as inserted into ``events``) into ``event_counts``."""
    counted = Counter((r["tenant"], int(r["ts"] // 60), r["decision"], r.get("category") or "")
                      for r in rows)
    if not counted:
        return
    values = [{"tenant": t, "minute": m, "decision": d, "category": c, "n": n}
              for (t, m, d, c), n in counted.items()]
    stmt = (pg_insert if is_postgres(conn) else sqlite_insert)(event_counts)
    stmt = stmt.on_conflict_do_update(
        index_elements=["tenant", "minute", "decision", "category"],
        set_={"n": event_counts.c.n + stmt.excluded.n})
    conn.execute(stmt, values)
    by_language = Counter((r["tenant"], int(r["ts"] // 60), r.get("language") or "",
                           r["decision"]) for r in rows)
    lstmt = (pg_insert if is_postgres(conn) else sqlite_insert)(language_counts)
    lstmt = lstmt.on_conflict_do_update(
        index_elements=["tenant", "minute", "language", "decision"],
        set_={"n": language_counts.c.n + lstmt.excluded.n})
    conn.execute(lstmt, [{"tenant": t, "minute": m, "language": lang, "decision": d, "n": n}
                         for (t, m, lang, d), n in by_language.items()])


def rebuild_event_counts(conn: Connection) -> None:
    """Recount every event still in the log (after an import of old events)."""
    minute = (cast(func.floor(events.c.ts / 60), Integer) if is_postgres(conn)
              else cast(events.c.ts / 60, Integer))
    category = func.coalesce(events.c.category, "")
    conn.execute(delete(event_counts))
    conn.execute(insert(event_counts).from_select(
        ["tenant", "minute", "decision", "category", "n"],
        select(events.c.tenant, minute, events.c.decision, category, func.count())
        .group_by(events.c.tenant, minute, events.c.decision, category)))
    language = func.coalesce(events.c.language, "")
    conn.execute(delete(language_counts))
    conn.execute(insert(language_counts).from_select(
        ["tenant", "minute", "language", "decision", "n"],
        select(events.c.tenant, minute, language, events.c.decision, func.count())
        .group_by(events.c.tenant, minute, language, events.c.decision)))
