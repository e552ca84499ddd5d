"""The application's own commands: ``bastion up`` (the whole platform) and ``bastion policy``
(a policy checked against the champion model). Each stage brings its own command group
(``bastion.<stage>.cli``); ``bastion.cli`` puts them together."""

from __future__ import annotations

from pathlib import Path

import click

from bastion.core.clikit import guard, settings_for, state_dir_option
from bastion.core.decision import fit_problems
from bastion.core.errors import BastionError
from bastion.core.policy import load_policy
from bastion.platform import champion_metadata, check_policy, run_platform

__all__ = ["up", "policy"]


@click.command(help="Start the platform locally (Ray, MLflow registry, moderation API) and stay "
             "in the foreground until Ctrl-C.")
@state_dir_option
@click.option("--port", type=int, default=None, help="HTTP port (default 8000).")
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--policy", "policy_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Tenant policy YAML (default <state-dir>/policy.yaml).")
@guard
def up(state_dir: Path | None, port: int | None, host: str | None,
       policy_file: Path | None) -> None:
    settings = settings_for(state_dir, port=port, host=host, policy_file=policy_file)
    run_platform(settings, say=click.echo)


@click.group(help="Tenant policy files.")
def policy() -> None:
    pass


@policy.command("validate", help="Validate a policy file; with a registered champion model in "
                "the state directory, also check it fits that model and show the thresholds.")
@state_dir_option
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@guard
def policy_validate(state_dir: Path | None, file: Path) -> None:
    pol = load_policy(file)
    n_cats = sum(len(t.categories) for t in pol.tenants.values())
    click.echo(f"{file}: valid ({len(pol.tenants)} tenant(s), {n_cats} category rule(s))")
    settings = settings_for(state_dir)
    if not (settings.state_dir / "mlflow.db").exists() and settings.mlflow_tracking_uri is None:
        click.echo("No registry in the state directory: not checked against a model.")
        return
    try:
        meta = champion_metadata(settings)
    except BastionError as err:
        click.echo(f"Not checked against a model: {err}")
        return
    resolved = check_policy(pol, meta)
    problems = fit_problems(resolved)
    click.echo(f"Fits model version {meta['version']}" + (
        f", with {len(problems)} category(ies) served otherwise than written:" if problems
        else ":"))
    for line in problems:
        click.echo(f"  ! {line}")
    for t, rt in resolved.items():
        click.echo(f"  {t} (policy version {rt.version})")
        for c in rt.categories:
            rev = "-" if c.review_threshold is None else f"{c.review_threshold:.3f}"
            block = ("never (review only)" if c.block_threshold is None
                     else f"{c.block_threshold:.3f}")
            click.echo(f"    {c.name:<15} block>={block} review>={rev} "
                       f"action={c.action.value} ({c.source})")
