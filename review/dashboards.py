"""What the console's dashboards show, aggregated in the database (never row by row in Python):

- :func:`overview`: decisions per category and tenant over time (block / review / allow),
  from the per-minute counts kept with the event log (``event_counts``), user reports, the
  review queue's depth and age, and the moderator minutes that automatic decisions saved;
- :func:`monitor`: the last 15 minutes in 30-second buckets and the newest decisions, for the
  monitor screen that polls it.

Every query is limited to the tenants the reader may see.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Collection
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Integer, cast, func, select

from bastion.core.store import is_postgres
from bastion.core.store.tables import (
    event_counts,
    events,
    language_counts,
    review_claims,
    review_reports,
    review_tasks,
)

__all__ = ["DEFAULT_REVIEW_S", "monitor", "overview"]

#: Seconds a moderator spends on one item, until the claims give a measured figure.
DEFAULT_REVIEW_S = 30.0
#: The open tasks' ages, binned: (from, to, label) in seconds.
_AGE_BINS = ((0, 300, "< 5 min"), (300, 3600, "5-60 min"), (3600, 6 * 3600, "1-6 h"),
             (6 * 3600, 86400, "6-24 h"), (86400, float("inf"), "> 24 h"))


def _bucket(conn: Connection, ts: Any, start: float, size: float) -> ColumnElement[Any]:
    """The bucket index of ``ts`` (``floor((ts - start) / size)``) on either database: a cast
    truncates on SQLite and rounds on PostgreSQL."""
    x = (ts - start) / size
    return func.floor(x) if is_postgres(conn) else cast(x, Integer)


def overview(engine: Engine, tenants: Collection[str], *, hours: float = 24.0,
             bucket_s: float = 3600.0, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    start = now - hours * 3600.0
    start -= start % bucket_s  # buckets on round hours
    n = int((now - start) // bucket_s) + 1
    scope = list(tenants)
    with engine.connect() as conn:
        # the per-minute counts kept with the events (core.store.counts), not the events
        counts = event_counts.c
        b = _bucket(conn, counts.minute * 60, start, bucket_s).label("b")
        rows = conn.execute(
            select(counts.tenant, counts.decision, counts.category, b,
                   func.sum(counts.n).label("n"))
            .where(counts.minute >= int(start // 60), counts.tenant.in_(scope))
            .group_by(counts.tenant, counts.decision, counts.category, b)).all()
        lc = language_counts.c
        langs = conn.execute(
            select(lc.language, lc.decision, func.sum(lc.n).label("n"))
            .where(lc.minute >= int(start // 60), lc.tenant.in_(scope))
            .group_by(lc.language, lc.decision)).all()
        rb = _bucket(conn, review_reports.c.ts, start, bucket_s).label("b")
        reports = conn.execute(
            select(rb, func.count().label("n")).where(
                review_reports.c.ts >= start, review_reports.c.tenant.in_(scope))
            .group_by(rb)).all()
        open_tasks = conn.execute(
            select(review_tasks.c.created_ts).where(
                review_tasks.c.status == "open", review_tasks.c.n_items > 0,
                review_tasks.c.tenant.in_(scope))).scalars().all()
        spans = conn.execute(
            select(review_claims.c.submitted_ts - review_claims.c.claimed_ts,
                   review_tasks.c.n_items)
            .join(review_tasks, review_tasks.c.task_id == review_claims.c.task_id)
            .where(review_claims.c.submitted_ts.is_not(None),
                   review_claims.c.submitted_ts >= now - 7 * 86400,
                   review_tasks.c.tenant.in_(scope))
            .order_by(review_claims.c.submitted_ts.desc()).limit(1000)).all()
    series: dict[str, list[int]] = {d: [0] * n for d in ("block", "review", "allow")}
    by_category: dict[str, dict[str, int]] = defaultdict(lambda: {"block": 0, "review": 0})
    by_tenant: dict[str, dict[str, int]] = defaultdict(
        lambda: {"block": 0, "review": 0, "allow": 0})
    for r in rows:
        i = min(max(int(r.b), 0), n - 1)
        series.setdefault(r.decision, [0] * n)[i] += int(r.n)
        by_tenant[r.tenant][r.decision] = by_tenant[r.tenant].get(r.decision, 0) + int(r.n)
        if r.category and r.decision in ("block", "review"):
            by_category[r.category][r.decision] += int(r.n)
    by_language: dict[str, dict[str, int]] = defaultdict(
        lambda: {"block": 0, "review": 0, "allow": 0})
    for lang, decision, k in langs:  # "": no language to tell (and events before 0005)
        by_language[lang or "none"][decision] = by_language[lang or "none"].get(decision, 0) + \
            int(k)
    report_series = [0] * n
    for r in reports:
        report_series[min(max(int(r.b), 0), n - 1)] += r.n
    ages = [now - t for t in open_tasks]
    per_item = [s / max(k, 1) for s, k in spans if s is not None and s >= 0]
    review_s = statistics.median(per_item) if per_item else DEFAULT_REVIEW_S
    automatic = sum(v for d, v in ((d, sum(s)) for d, s in series.items()) if d != "review")
    return {
        "start": start, "bucket_s": bucket_s, "now": now,
        "buckets": [start + i * bucket_s for i in range(n)],
        "decisions": series,
        "reports": report_series,
        "by_category": dict(sorted(by_category.items(),
                                   key=lambda kv: -(kv[1]["block"] + kv[1]["review"]))),
        "by_tenant": dict(sorted(by_tenant.items())),
        "by_language": dict(sorted(by_language.items(), key=lambda kv: -sum(kv[1].values()))),
        "queue": {
            "open": len(ages), "oldest_s": max(ages, default=0.0),
            "age_histogram": [{"label": label, "n": sum(1 for a in ages if lo <= a < hi)}
                              for lo, hi, label in _AGE_BINS],
        },
        "minutes_saved": {
            "automatic_decisions": automatic,
            "seconds_per_item": round(review_s, 1),
            "measured_from_claims": len(per_item),
            "minutes": round(automatic * review_s / 60.0, 1),
        },
    }


def monitor(engine: Engine, tenants: Collection[str], *, minutes: float = 15.0,
            bucket_s: float = 30.0, now: float | None = None, latest: int = 20
            ) -> dict[str, Any]:
    now = time.time() if now is None else now
    start = now - minutes * 60.0
    start -= start % bucket_s
    n = int((now - start) // bucket_s) + 1
    scope = list(tenants)
    with engine.connect() as conn:
        b = _bucket(conn, events.c.ts, start, bucket_s).label("b")
        rows = conn.execute(
            select(events.c.decision, b, func.count().label("n"))
            .where(events.c.ts >= start, events.c.tenant.in_(scope))
            .group_by(events.c.decision, b)).all()
        newest = conn.execute(
            select(events.c.seq, events.c.ts, events.c.tenant, events.c.item_id,
                   events.c.decision, events.c.category)
            .where(events.c.ts >= start, events.c.tenant.in_(scope))
            .order_by(events.c.seq.desc()).limit(latest)).all()
    series: dict[str, list[int]] = {d: [0] * n for d in ("block", "review", "allow")}
    for r in rows:
        series.setdefault(r.decision, [0] * n)[min(max(int(r.b), 0), n - 1)] += r.n
    return {
        "start": start, "bucket_s": bucket_s, "now": now,
        "buckets": [start + i * bucket_s for i in range(n)],
        "decisions": series,
        "total": sum(sum(s) for s in series.values()),
        "latest": [{"seq": r.seq, "ts": r.ts, "tenant": r.tenant, "item_id": r.item_id,
                    "decision": r.decision, "category": r.category} for r in newest],
    }


def moderator_throughput(engine: Engine, tenants: Collection[str], *, days: float = 7.0,
                         now: float | None = None) -> dict[str, dict[str, Any]]:
    """Per moderator, over the last ``days``: sessions submitted, items in them, the median
    seconds per item (claim to submission) and when they last submitted."""
    now = time.time() if now is None else now
    with engine.connect() as conn:
        rows = conn.execute(
            select(review_claims.c.moderator, review_claims.c.claimed_ts,
                   review_claims.c.submitted_ts, review_tasks.c.n_items)
            .join(review_tasks, review_tasks.c.task_id == review_claims.c.task_id)
            .where(review_claims.c.submitted_ts.is_not(None),
                   review_claims.c.submitted_ts >= now - days * 86400,
                   review_tasks.c.tenant.in_(list(tenants)))).all()
    per: dict[str, list[Any]] = defaultdict(list)
    for r in rows:
        per[r.moderator].append(r)
    out = {}
    for who, rs in per.items():
        spans = [(r.submitted_ts - r.claimed_ts) / max(r.n_items, 1) for r in rs]
        out[who] = {"sessions": len(rs), "items": sum(r.n_items for r in rs),
                    "items_per_hour_of_work": round(3600 * sum(r.n_items for r in rs) / max(
                        sum(r.submitted_ts - r.claimed_ts for r in rs), 1e-9), 1),
                    "median_s_per_item": round(statistics.median(spans), 1),
                    "last_submitted": max(r.submitted_ts for r in rs)}
    return out
