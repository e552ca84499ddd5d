"""Reading the retraining-trigger record (``drift_triggers``): what each evaluation of the
policy's trigger rules did. The drift monitor writes it (``bastion.drift.triggers``); the CLI
and the console read it."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, select

from bastion.core.store.tables import drift_triggers

__all__ = ["trigger_rows"]


def trigger_rows(conn: Connection, limit: int = 50) -> list[dict[str, Any]]:
    """The last ``limit`` trigger decisions, newest first."""
    q = select(drift_triggers).order_by(drift_triggers.c.id.desc()).limit(limit)
    return [{"at": r.at, "action": r.action, "rule": r.rule, "reasons": json.loads(r.reasons),
             "job_id": r.job_id, "model_version": r.model_version, "message": r.message}
            for r in conn.execute(q).all()]
