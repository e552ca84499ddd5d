"""``bastion models`` and ``bastion rollback``: the versions in the MLflow registry."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
from mlflow.exceptions import MlflowException

from bastion.core.clikit import guard, settings_for, state_dir_option
from bastion.core.modelcard import category_lines
from bastion.core.policy import ensure_policy_file, load_policy
from bastion.registry.image_gate import ImageLifecycle
from bastion.registry.lifecycle import Lifecycle
from bastion.registry.shadow import shadow_report, start_shadow, stop_shadow
from bastion.registry.store import ModelRegistry

__all__ = ["models", "models_list", "models_show", "models_audit", "rollback", "shadow"]


def lifecycle_for(state_dir: Path | None) -> Any:
    settings = settings_for(state_dir)
    return Lifecycle(settings, load_policy(ensure_policy_file(settings)))


@click.group(help="Model versions in the MLflow registry.")
def models() -> None:
    pass


@models.command("list", help="Every version with its aliases and gate verdict.")
@state_dir_option
@guard
def models_list(state_dir: Path | None) -> None:
    registry = ModelRegistry(settings_for(state_dir))
    registry.ensure_reachable()
    click.echo(f"{'version':<8} {'aliases':<22} {'validation':<11} {'kind':<10} created (UTC)")
    for v in registry.list_versions():
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(v.created / 1000))
        click.echo(f"{v.version:<8} {','.join('@' + a for a in v.aliases):<22} "
                   f"{v.tags.get('validation_status', '-'):<11} "
                   f"{v.tags.get('bastion.kind', '-'):<10} {created}")


@models.command("show", help="A version's tags and its latest gate report.")
@state_dir_option
@click.argument("version")
@guard
def models_show(state_dir: Path | None, version: str) -> None:
    lc = lifecycle_for(state_dir)
    info = lc.registry.get(version)
    click.echo(f"{lc.name} version {info.version}  aliases: "
               f"{', '.join('@' + a for a in info.aliases) or '-'}  run: {info.run_id}")
    for k, v in sorted(info.tags.items()):
        click.echo(f"  {k}: {v}")
    meta = lc.registry.metadata(info.version)
    click.echo("\nCategories (held-out, from the version's metadata):")
    for line in category_lines(meta):
        click.echo(f"  {line}")
    try:
        text = lc.client.download_artifacts(info.run_id, "gate/latest.txt")
        click.echo("\nLatest gate report:\n" + Path(text).read_text())
    except (MlflowException, OSError):
        click.echo("\nNo gate report yet: run 'bastion promote " + info.version + "'.")


@models.command("audit", help="Who promoted, forced, was refused or rolled back, when, why.")
@state_dir_option
@guard
def models_audit(state_dir: Path | None) -> None:
    for e in lifecycle_for(state_dir).audit():
        click.echo(json.dumps(e, sort_keys=True))


@click.command(help="Move @champion back to the previous champion.")
@state_dir_option
@click.option("--reason", default=None, help="Why: kept in the audit trail.")
@click.option("--actor", default=None, help="Who asks, for the audit trail (default: the OS user).")
@click.option("--modality", type=click.Choice(["text", "image"]), default="text",
              show_default=True, help="Roll back the text model or the image heads.")
@guard
def rollback(state_dir: Path | None, reason: str | None, actor: str | None,
             modality: str) -> None:
    if modality == "image":
        settings = settings_for(state_dir)
        lc: Lifecycle = ImageLifecycle(settings, load_policy(ensure_policy_file(settings)))
    else:
        lc = lifecycle_for(state_dir)
    old, new = lc.rollback(reason=reason, actor=actor)
    what = "the image model's " if modality == "image" else ""
    click.echo(f"Rolled back {what}@champion from version {old} to version {new}. Serving "
               "follows within seconds.")


@click.group(help="Shadow runs: a candidate scores a sample of live traffic beside @champion "
             "and never decides (or, as a canary, decides a share of one tenant's).")
def shadow() -> None:
    pass


@shadow.command("start", help="Shadow VERSION on a sample of live items. Serving follows "
                "within seconds; its verdicts go to the shadow log, never to a caller.")
@state_dir_option
@click.argument("version")
@click.option("--sample", type=float, default=0.1, show_default=True,
              help="Share of live items the challenger scores in the shadow.")
@click.option("--canary", type=float, default=None,
              help="Also let it decide this share of --tenant's requests (e.g. 0.05); rolled "
              "back by itself when its reviewed precision falls below the champion's.")
@click.option("--tenant", default=None, help="The canary's tenant.")
@click.option("--min-reviewed", type=int, default=10, show_default=True,
              help="Reviewed flagged items each version needs before the canary guard "
              "compares their precision.")
@click.option("--reason", default=None, help="Why: kept in the audit trail.")
@click.option("--actor", default=None, help="Who asks, for the audit trail (default: the OS user).")
@guard
def shadow_start(state_dir: Path | None, version: str, sample: float, canary: float | None,
                 tenant: str | None, min_reviewed: int, reason: str | None,
                 actor: str | None) -> None:
    settings = settings_for(state_dir)
    registry = ModelRegistry(settings)
    registry.ensure_reachable()
    pol = load_policy(ensure_policy_file(settings))
    config = start_shadow(registry, version, sample=sample, canary=canary, tenant=tenant,
                          tenants=list(pol.tenants), min_reviewed=min_reviewed, actor=actor,
                          reason=reason)
    click.echo(f"Shadowing version {config.version} on {config.sample:g} of live items"
               + (f"; as a canary it decides {config.canary:g} of {config.canary_tenant}'s "
                  "requests" if config.canary else "")
               + ". Serving follows within seconds; 'bastion shadow report' compares it with "
               "@champion.")


@shadow.command("stop", help="End the shadow run (and its canary).")
@state_dir_option
@click.option("--reason", default=None, help="Why: kept in the audit trail.")
@click.option("--actor", default=None, help="Who asks, for the audit trail (default: the OS user).")
@guard
def shadow_stop(state_dir: Path | None, reason: str | None, actor: str | None) -> None:
    registry = ModelRegistry(settings_for(state_dir))
    registry.ensure_reachable()
    config = stop_shadow(registry, actor=actor, reason=reason)
    if config is None:
        click.echo("No shadow run was going.")
    else:
        click.echo(f"Stopped shadowing version {config.version}; its verdicts stay in the "
                   f"shadow log ('bastion shadow report --version {config.version}').")


@shadow.command("report", help="The challenger against @champion on the live items it "
                "shadowed: per tenant and category agreement, what it would decide "
                "differently, precision on reviewed items, latency.")
@state_dir_option
@click.option("--version", default=None, help="The challenger (default: the one shadowing now).")
@click.option("--min-reviewed", type=int, default=10, show_default=True,
              help="Reviewed flagged items a version needs before its precision is shown.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@guard
def shadow_report_cmd(state_dir: Path | None, version: str | None, min_reviewed: int,
                      as_json: bool) -> None:
    settings = settings_for(state_dir)
    registry = ModelRegistry(settings)
    registry.ensure_reachable()
    report = shadow_report(settings, registry, version, min_reviewed)
    click.echo(json.dumps(report.to_json(), indent=2, sort_keys=True) if as_json
               else report.to_table())
