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
from bastion.registry.store import ModelRegistry

__all__ = ["models", "models_list", "models_show", "models_audit", "rollback"]


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
