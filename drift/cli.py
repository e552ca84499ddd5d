"""``bastion drift``: drift checks and the retraining triggers."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
from ray.job_submission import JobSubmissionClient

from bastion.core.clikit import fail, guard, platform_dashboard, settings_for, state_dir_option
from bastion.core.policy import ensure_policy_file, load_policy
from bastion.core.runtime import dashboard_http
from bastion.drift.check import monitor_pass
from bastion.drift.triggers import TriggerLog, fired

__all__ = ["drift", "drift_check", "drift_triggers"]


@click.group(help="Drift: recent traffic against what the champion was trained on.")
def drift() -> None:
    pass


@drift.command("check", help="Validate and test each tenant's recent traffic for drift; "
               "writes JSON and HTML reports under <state-dir>/drift and logs them to MLflow. "
               "While 'bastion up' runs, the policy's trigger rules may start a retraining "
               "job on its Ray cluster. Window, size and rate default to the policy's 'drift' "
               "section. Exits 1 when a tenant drifted.")
@state_dir_option
@click.option("--tenant", "tenants", multiple=True, help="Only these tenants.")
@click.option("--hours", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Window: the last HOURS of traffic (policy default: 24).")
@click.option("--min-items", type=click.IntRange(min=10), default=None,
              help="Fewest items a window needs to be checked (policy default: 100).")
@click.option("--false-alarm-rate", type=click.FloatRange(0.0001, 0.2), default=None,
              help="Of the whole family of tests of one window (policy default: 0.01).")
@click.option("--trigger/--no-trigger", default=True, show_default=True,
              help="Evaluate the policy's retraining triggers (needs 'bastion up' running).")
@guard
def drift_check(state_dir: Path | None, tenants: tuple[str, ...], hours: float | None,
                min_items: int | None, false_alarm_rate: float | None, trigger: bool) -> None:
    settings = settings_for(state_dir)
    pol = load_policy(ensure_policy_file(settings))
    unknown = sorted(set(tenants) - set(pol.tenants))
    if unknown:
        fail(f"unknown tenant(s) {unknown}; the policy has {sorted(pol.tenants)}")
    dashboard = platform_dashboard(settings) if trigger else None
    results, signals, outcome = monitor_pass(
        settings, pol, dashboard_url=dashboard, tenants=list(tenants) or None, hours=hours,
        min_items=min_items, false_alarm_rate=false_alarm_rate, say=click.echo)
    if trigger and outcome is None:
        hits = fired(pol.retraining.triggers.rules, signals)
        if hits:
            click.echo(f"Trigger {hits[0][0]} fires ({'; '.join(hits[0][1])}), but no "
                       "'bastion up' runs for this state directory: start it, or run "
                       "'bastion retrain'.")
    elif outcome is not None and outcome.action == "none":
        click.echo("No retraining trigger fired.")
    if any(r is not None and r.drift for r, _m in results):
        sys.exit(1)


@drift.command("triggers", help="Recent retraining-trigger decisions: what fired, why, and "
               "whether a job was submitted or skipped (cooldown, a job still running).")
@state_dir_option
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@guard
def drift_triggers(state_dir: Path | None, limit: int, as_json: bool) -> None:
    settings = settings_for(state_dir)
    log = TriggerLog(settings.database_url)
    try:
        rows = log.recent(limit)
    finally:
        log.close()
    if not rows:
        click.echo("No trigger has fired yet.")
        return
    dashboard = platform_dashboard(settings)
    if dashboard is not None:  # the platform runs: say how each submitted job ended
        try:
            client = JobSubmissionClient(dashboard_http(dashboard))
            for r in rows:
                if r["job_id"]:
                    r["job_status"] = str(client.get_job_status(r["job_id"]))
        except Exception as err:  # noqa: BLE001 - the record is still worth showing
            click.echo(f"(job states unavailable: {err})", err=True)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["at"]))
        state = f" [{r['job_status']}]" if r.get("job_status") else ""
        click.echo(f"{when}Z  {r['action']:<9} {r['rule']:<20} {r['message']}{state}")
