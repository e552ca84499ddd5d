"""Retraining triggers: the policy's rules over what the drift monitor saw, and the Ray job
they start.

After each check the monitor gathers :class:`Signals` (which tenants drifted, whose precision
on reviewed items fell, how many data-validation expectations failed, how many human labels
arrived since the champion's training data was cut, how old the champion is) and evaluates
``retraining.triggers.rules``: a rule fires when every condition it sets holds, and any rule
firing is enough. :func:`maybe_retrain` then submits ``bastion retrain`` through the Ray Jobs
API, the same entry point as the Kubernetes RayJob (``k8s/base/retrain``), unless

- a retraining job Bastion submitted is still pending or running (dedupe), or
- a triggered run started less than ``cooldown_hours`` ago (one drift must not start ten
  runs: the retrained champion needs traffic before the next check can judge it).

Every decision, a submission or a skip, is recorded with its rule and reasons in
the shared database's ``drift_triggers`` table (``bastion drift triggers`` lists it); the job
carries the reason to the MLflow run (``--reason``, tag ``bastion.reason``). The record is
written in one transaction around the check and the submission, holding SQLite's write lock or
a PostgreSQL advisory lock, so two monitors (``bastion up``'s and an on-demand ``bastion drift
check``, or two pods) cannot both submit.
"""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select
from sqlalchemy.engine import URL

from bastion.core.jobs import active_jobs, jobs_client, submit
from bastion.core.labels import LabelStore
from bastion.core.model import ModelMetadata
from bastion.core.policy import PolicySet, TriggerRule
from bastion.core.settings import Settings
from bastion.core.store import is_postgres, open_store
from bastion.core.store.tables import drift_triggers
from bastion.core.store.triggers import trigger_rows
from bastion.drift.monitor import DriftReport
from bastion.registry.store import CHALLENGER, CHAMPION, ModelRegistry, RegistryEmptyError

__all__ = [
    "Signals",
    "TriggerOutcome",
    "TriggerLog",
    "fired",
    "gather_signals",
    "maybe_retrain",
]

Say = Callable[[str], None]

# Ray job metadata that marks Bastion's retraining jobs (dedupe looks for it).
JOB_KIND = {"bastion": "retrain"}  # one of core.jobs.JOB_KINDS
_TRIGGER_LOCK = 0x62617374_03  # pg_advisory_xact_lock key: one trigger evaluation at a time

@dataclass(frozen=True)
class Signals:
    """What one monitor pass saw, in the terms trigger rules use."""

    drifted: list[str] = field(default_factory=list)  # tenants
    precision_drops: list[str] = field(default_factory=list)  # "tenant/category"
    validation_failures: dict[str, int] = field(default_factory=dict)  # tenant -> failed
    new_labels: int = 0
    champion_age_hours: float | None = None
    model_version: str | None = None


def _champion_age_hours(meta: ModelMetadata, now: float) -> float | None:
    created = meta.get("created_at")
    if not created:
        return None
    try:
        t = calendar.timegm(time.strptime(str(created), "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return None
    return max(0.0, (now - t) / 3600.0)


def gather_signals(settings: Settings, reports: Sequence[DriftReport | None],
                   now: float | None = None) -> Signals:
    """Signals from one pass's reports, the label store and the champion's metadata."""
    now = time.time() if now is None else now
    done = [r for r in reports if r is not None]
    registry = ModelRegistry(settings)
    metas: dict[str, ModelMetadata] = {}
    for alias in (CHAMPION, CHALLENGER):
        try:
            metas[alias] = registry.metadata(registry.by_alias(alias).version)
        except RegistryEmptyError:
            pass
    meta = metas.get(CHAMPION, ModelMetadata())
    # New labels: since the newest training data cut, the champion's or a challenger's that
    # did not pass the gate (retraining on the very same labels again would learn nothing).
    cuts = [m.get("data", {}).get("labels_through") for m in metas.values()]
    since = max((float(c) for c in cuts if c is not None), default=None)
    store = LabelStore(settings.database_url)
    try:
        new_labels = store.count_labels(since=since)
    finally:
        store.close()
    drops = [f"{r.tenant}/{t['name'].split(':', 1)[1]}" for r in done for t in r.tests
             if t["name"].startswith("precision:") and t["drift"]]
    return Signals(
        # the text heads' retraining answers drift in what they read, not in images or voice
        drifted=[r.tenant for r in done if r.drift and r.modality == "text"],
        precision_drops=drops,
        validation_failures={r.tenant: len(r.validation["failures"]) for r in done
                             if r.validation["failures"] and r.modality == "text"},
        new_labels=new_labels,
        champion_age_hours=_champion_age_hours(meta, now),
        model_version=meta.get("version"),
    )


def _reasons(rule: TriggerRule, s: Signals) -> list[str] | None:
    """Why the rule fires (one reason per condition), or None if some condition fails."""
    why: list[str] = []
    if rule.drift is not None:
        if bool(s.drifted) != rule.drift:
            return None
        why.append(f"drift in {', '.join(s.drifted)}" if rule.drift else "no drift")
    if rule.performance is not None:
        if bool(s.precision_drops) != rule.performance:
            return None
        why.append(f"precision on reviewed items fell for {', '.join(s.precision_drops)}"
                   if rule.performance else "precision holds")
    if rule.validation_failures is not None:
        bad = {t: n for t, n in s.validation_failures.items() if n >= rule.validation_failures}
        if not bad:
            return None
        why.append("failed data validation: " + ", ".join(
            f"{t} ({n} expectation(s))" for t, n in sorted(bad.items())))
    if rule.new_labels is not None:
        if s.new_labels < rule.new_labels:
            return None
        why.append(f"{s.new_labels} new label(s) (rule: {rule.new_labels})")
    if rule.every_hours is not None:
        if s.champion_age_hours is None or s.champion_age_hours < rule.every_hours:
            return None
        why.append(f"champion is {s.champion_age_hours:.1f} h old (rule: every "
                   f"{rule.every_hours:g} h)")
    return why


def fired(rules: Sequence[TriggerRule], signals: Signals) -> list[tuple[str, list[str]]]:
    """The rules that fire on these signals, each with its reasons, in the policy's order."""
    out = []
    for rule in rules:
        why = _reasons(rule, signals)
        if why is not None:
            out.append((rule.name, why))
    return out


@dataclass(frozen=True)
class TriggerOutcome:
    """What one evaluation did: ``none`` (no rule fired), ``submitted``, or a skip:
    ``running`` (a retraining job is still going), ``cooldown``; ``failed`` when the
    submission itself failed."""

    action: str
    rule: str | None
    reasons: list[str]
    message: str
    job_id: str | None = None
    at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class TriggerLog:
    """The record of every trigger decision, in the shared database (``drift_triggers``)."""

    def __init__(self, url: str | URL | Engine) -> None:
        self._engine, self._owned = open_store(url)
        self._conn: Connection | None = None

    @contextmanager
    def exclusive(self) -> Iterator[Connection]:
        """One writer at a time across processes and machines, for the check-then-submit: on
        SQLite the file's write lock (``BEGIN IMMEDIATE``), on PostgreSQL an advisory lock."""
        with self._engine.begin() as conn:
            if is_postgres(conn):
                conn.execute(select(func.pg_advisory_xact_lock(_TRIGGER_LOCK)))
            self._conn = conn
            try:
                yield conn
            finally:
                self._conn = None

    def _run(self, fn: Callable[[Connection], Any]) -> Any:
        if self._conn is not None:  # inside exclusive(): its transaction
            return fn(self._conn)
        with self._engine.begin() as conn:
            return fn(conn)

    def last_submitted(self) -> tuple[float, str | None] | None:
        q = (select(drift_triggers.c.at, drift_triggers.c.job_id)
             .where(drift_triggers.c.action == "submitted")
             .order_by(drift_triggers.c.at.desc()).limit(1))
        row = self._run(lambda conn: conn.execute(q).first())
        return (float(row.at), row.job_id) if row else None

    def record(self, outcome: TriggerOutcome, model_version: str | None) -> None:
        self._run(lambda conn: conn.execute(insert(drift_triggers).values(
            at=outcome.at, action=outcome.action, rule=outcome.rule or "",
            reasons=json.dumps(outcome.reasons), job_id=outcome.job_id,
            model_version=model_version, message=outcome.message)))

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        return self._run(lambda conn: trigger_rows(conn, limit))  # type: ignore[no-any-return]

    def close(self) -> None:
        if self._owned:
            self._engine.dispose()


def maybe_retrain(settings: Settings, policy: PolicySet, signals: Signals, dashboard_url: str,
                  *, now: float | None = None, say: Say = lambda _m: None,
                  client: Any = None) -> TriggerOutcome:
    """Evaluate the policy's trigger rules and, if one fires, submit ``bastion retrain`` as a
    Ray job unless a retraining job is still going or the cooldown holds. The outcome is
    recorded (except ``none``) and returned."""
    rules = policy.retraining.triggers.rules
    hits = fired(rules, signals)
    if not hits:
        return TriggerOutcome("none", None, [], "no trigger rule fired")
    rule, reasons = hits[0]
    reason = f"trigger {rule}: " + "; ".join(reasons)
    cooldown_s = policy.retraining.triggers.cooldown_hours * 3600.0
    if client is None:
        client = jobs_client(dashboard_url)
    log = TriggerLog(settings.database_url)
    try:
        with log.exclusive():
            now_ = time.time() if now is None else now
            active = active_jobs(client, JOB_KIND["bastion"])
            last = log.last_submitted()
            if active:
                outcome = TriggerOutcome(
                    "running", rule, reasons,
                    f"{reason}; not submitted: retraining job {', '.join(active)} is still "
                    "running", at=now_)
            elif last is not None and now_ - last[0] < cooldown_s:
                left = (cooldown_s - (now_ - last[0])) / 3600.0
                outcome = TriggerOutcome(
                    "cooldown", rule, reasons,
                    f"{reason}; not submitted: job {last[1]} started "
                    f"{(now_ - last[0]) / 3600.0:.2f} h ago, cooldown "
                    f"{policy.retraining.triggers.cooldown_hours:g} h ({left:.2f} h left)",
                    at=now_)
            else:
                try:
                    job_id = submit(client, settings, JOB_KIND["bastion"], "retrain",
                                    "--reason", reason, metadata={"rule": rule}, now=now_)
                    outcome = TriggerOutcome("submitted", rule, reasons,
                                             f"{reason}; submitted Ray job {job_id}",
                                             job_id=job_id, at=now_)
                except Exception as err:  # noqa: BLE001 - recorded and retried next pass
                    outcome = TriggerOutcome("failed", rule, reasons,
                                             f"{reason}; submission failed: {err}", at=now_)
            log.record(outcome, signals.model_version)
    finally:
        log.close()
    say(outcome.message)
    return outcome
