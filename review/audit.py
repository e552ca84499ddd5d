"""The audit log: every action a reviewer takes (sign-in, claim, reveal, submit, release,
promote, rollback), who took it, when and on what. Written in the database every store
shares (``audit_log``), read by ML ops in the console. A moderator's exposure (items revealed
today, UTC) is counted from it, for the daily cap of the wellness rules."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, insert, or_, select

from bastion.core.store.tables import audit_log

__all__ = ["ACTIONS", "AuditEntry", "AuditLog", "day_start"]

ACTIONS = ("sign_in", "claim", "reveal", "submit", "release", "promote", "rollback",
           "exposure_cap", "category_add")


@dataclass(frozen=True)
class AuditEntry:
    id: int
    ts: float
    actor: str
    role: str
    tenant: str | None
    action: str
    target: str | None
    detail: dict[str, Any]


def day_start(now: float) -> float:
    """The start of ``now``'s UTC day: exposure counts reset there."""
    return now - now % 86400.0


class AuditLog:
    """Append and read audit entries on ``engine`` (the shared store's)."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self._clock = clock

    def record(self, actor: str, role: str, action: str, *, tenant: str | None = None,
               target: str | None = None, **detail: Any) -> None:
        if action not in ACTIONS:
            raise ValueError(f"unknown audit action {action!r}; one of {', '.join(ACTIONS)}")
        with self.engine.begin() as conn:
            conn.execute(insert(audit_log).values(
                ts=self._clock(), actor=actor[:256], role=role[:16], tenant=tenant,
                action=action, target=target, detail=json.dumps(detail, default=str)))

    def exposure_today(self, actor: str) -> int:
        """Items ``actor`` revealed since the start of today (UTC)."""
        since = day_start(self._clock())
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(audit_log).where(
                audit_log.c.actor == actor, audit_log.c.action == "reveal",
                audit_log.c.ts >= since)).scalar_one())

    def revealed(self, actor: str, target: str) -> bool:
        """Whether ``actor`` already revealed ``target`` today (a second look costs nothing)."""
        since = day_start(self._clock())
        with self.engine.connect() as conn:
            return conn.execute(select(audit_log.c.id).where(
                audit_log.c.actor == actor, audit_log.c.action == "reveal",
                audit_log.c.target == target, audit_log.c.ts >= since).limit(1)).first() \
                is not None

    def recent(self, tenants: Collection[str], actors: Collection[str], *,
               limit: int = 200) -> list[AuditEntry]:
        """The newest entries about ``tenants``, and those about no tenant (sign-ins) of
        ``actors`` (the reviewers who work for those tenants)."""
        q = select(audit_log).where(or_(
            audit_log.c.tenant.in_(list(tenants)),
            audit_log.c.tenant.is_(None) & audit_log.c.actor.in_(list(actors))))
        q = q.order_by(audit_log.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [AuditEntry(id=r.id, ts=r.ts, actor=r.actor, role=r.role, tenant=r.tenant,
                               action=r.action, target=r.target, detail=json.loads(r.detail))
                    for r in conn.execute(q)]
