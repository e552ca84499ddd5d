"""The shadow log: what a challenger would have decided on a sample of live traffic, beside
what the champion decided (``bastion shadow``).

Shadow verdicts never reach a caller, the event log's decisions, the review queue, drift or
training: they have a table of their own (``shadow_events``) in the shared database, written
off the request path like the event log. The shadow report (``registry.shadow``) reads them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Engine, func, insert, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import DataError, IntegrityError

from bastion.core.store import READ, open_store
from bastion.core.store.tables import shadow_events
from bastion.core.writer import BackgroundWriter

__all__ = ["ShadowConfig", "ShadowEvent", "ShadowLog", "ShadowWriter", "bands_of"]


def bands_of(reasons: list[dict[str, Any]]) -> dict[str, str]:
    """Per category, the band its score crossed ("block" or "review") in a decision's reasons
    (``core.decision.decide``); a category absent from it was allowed."""
    out: dict[str, str] = {}
    for r in reasons:
        if r.get("kind") == "model" and r.get("category"):
            band = str(r.get("band") or "review")
            if out.get(str(r["category"])) != "block":
                out[str(r["category"])] = band
    return out


@dataclass(frozen=True)
class ShadowConfig:
    """What ``bastion shadow start`` set (``registry.shadow`` keeps it in the registry; serving
    reads it from the shadow Scorer): the version, its sample of live traffic and, for a
    canary, the share of one tenant's traffic it decides."""

    version: str
    sample: float  # share of items scored in the shadow (never deciding)
    started_at: float
    canary: float | None = None  # share of canary_tenant's requests it decides
    canary_tenant: str | None = None
    min_reviewed: int = 10  # reviewed flagged items per version before the guard compares
    canary_stopped: dict[str, Any] | None = None  # why the guard (or a person) took it off

    @property
    def canary_active(self) -> bool:
        return bool(self.canary) and self.canary_tenant is not None \
            and self.canary_stopped is None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ShadowConfig:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class ShadowEvent:
    """One item a challenger scored in the shadow of the champion that decided it."""

    ts: float
    request_id: str
    tenant: str
    item_id: str
    text: str | None  # only where the tenant's policy keeps raw text
    text_sha256: str
    language: str | None
    version: str  # the challenger
    decision: str
    scores: dict[str, float]
    bands: dict[str, str]
    champion_version: str
    champion_decision: str
    champion_scores: dict[str, float]
    champion_bands: dict[str, str]
    champion_ms: float | None = None
    shadow_ms: float | None = None
    seq: int = 0

    def row(self) -> dict[str, Any]:
        return {
            "ts": self.ts, "request_id": self.request_id, "tenant": self.tenant,
            "item_id": self.item_id, "text": self.text, "text_sha256": self.text_sha256,
            "language": self.language, "version": self.version, "decision": self.decision,
            "scores": json.dumps(self.scores), "bands": json.dumps(self.bands),
            "champion_version": self.champion_version,
            "champion_decision": self.champion_decision,
            "champion_scores": json.dumps(self.champion_scores),
            "champion_bands": json.dumps(self.champion_bands),
            "champion_ms": self.champion_ms, "shadow_ms": self.shadow_ms,
        }


def _event(m: Any) -> ShadowEvent:
    return ShadowEvent(
        ts=m["ts"], request_id=m["request_id"], tenant=m["tenant"], item_id=m["item_id"],
        text=m["text"], text_sha256=m["text_sha256"], language=m["language"],
        version=m["version"], decision=m["decision"], scores=json.loads(m["scores"]),
        bands=json.loads(m["bands"]), champion_version=m["champion_version"],
        champion_decision=m["champion_decision"],
        champion_scores=json.loads(m["champion_scores"]),
        champion_bands=json.loads(m["champion_bands"]), champion_ms=m["champion_ms"],
        shadow_ms=m["shadow_ms"], seq=m["seq"])


class ShadowLog:
    """Reader/writer of the shadow verdicts in the database at ``url`` (or an engine)."""

    def __init__(self, url: str | URL | Engine) -> None:
        self._engine, self._owned = open_store(url)

    def append(self, batch: list[ShadowEvent]) -> None:
        if batch:
            with self._engine.begin() as conn:
                conn.execute(insert(shadow_events), [e.row() for e in batch])

    def count(self, version: str | None = None) -> int:
        q = select(func.count()).select_from(shadow_events)
        if version is not None:
            q = q.where(shadow_events.c.version == str(version))
        with self._engine.connect().execution_options(**READ) as conn, conn.begin():
            return int(conn.execute(q).scalar_one())

    def read(self, version: str | None = None, tenant: str | None = None,
             since: float | None = None) -> Iterator[ShadowEvent]:
        """Shadow verdicts in arrival order; ``version``: of that challenger only; ``since``
        inclusive."""
        q = select(shadow_events)
        if version is not None:
            q = q.where(shadow_events.c.version == str(version))
        if tenant is not None:
            q = q.where(shadow_events.c.tenant == tenant)
        if since is not None:
            q = q.where(shadow_events.c.ts >= since)
        with self._engine.connect().execution_options(**READ) as conn, conn.begin():
            rows = conn.execute(q.order_by(shadow_events.c.seq)).mappings().all()
        for m in rows:
            yield _event(m)

    def reset(self) -> None:
        self._engine.dispose()

    def close(self) -> None:
        if self._owned:
            self._engine.dispose()


class ShadowWriter(BackgroundWriter[ShadowEvent]):
    """Batches shadow verdicts off the request path (``core.writer``). Its queue is small:
    when the store is down for long, shadow verdicts are refused (and counted) rather than
    held, since a decision never waits on them."""

    def __init__(self, log: ShadowLog, capacity: int = 20_000) -> None:
        self.log = log
        super().__init__("shadow log", log.append, reset=log.reset, capacity=capacity,
                         permanent=lambda e: isinstance(e, (IntegrityError, DataError)))
