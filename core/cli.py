"""The ``bastion`` command line. Commands are verbs; every one takes ``--state-dir``."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from core.errors import BastionError

__all__ = ["main", "cli"]

_state_dir_option = click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path), envvar="BASTION_STATE_DIR",
    default=None, help="Folder holding everything Bastion keeps (env BASTION_STATE_DIR; "
    "default ~/.local/share/bastion).",
)


def _settings(state_dir: Path | None, **kw: Any) -> Any:
    from core.settings import load_settings

    return load_settings(state_dir, **kw)


def _fail(message: str) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(2)


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BastionError as err:
            _fail(str(err))

    return wrapper


@click.group(help="Bastion: Trust & Safety moderation on Ray.")
def cli() -> None:
    pass


@cli.command(help="Start the platform locally (Ray, MLflow registry, moderation API) and stay "
             "in the foreground until Ctrl-C.")
@_state_dir_option
@click.option("--port", type=int, default=None, help="HTTP port (default 8000).")
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--policy", "policy_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Tenant policy YAML (default <state-dir>/policy.yaml).")
@_guard
def up(state_dir: Path | None, port: int | None, host: str | None,
       policy_file: Path | None) -> None:
    from core.launcher import run_platform

    settings = _settings(state_dir, port=port, host=host, policy_file=policy_file)
    run_platform(settings, say=click.echo)


@cli.command(help="Send text to a running server and print the JSON response.")
@_state_dir_option
@click.option("--tenant", default="demo", show_default=True, help="Tenant whose policy applies.")
@click.option("--url", default=None, help="Server URL (default: the one 'bastion up' wrote).")
@click.option("--key", envvar="BASTION_API_KEY", default=None,
              help="Tenant API key (default: from the state directory).")
@click.option("--session-id", default=None, help="Session the texts belong to.")
@click.option("--user-id", default=None, help="Author of the texts.")
@click.argument("texts", nargs=-1, required=True)
@_guard
def moderate(state_dir: Path | None, tenant: str, url: str | None, key: str | None,
             session_id: str | None, user_id: str | None, texts: tuple[str, ...]) -> None:
    import httpx

    from core.keys import load_keys

    settings = _settings(state_dir)
    if url is None:
        if not settings.server_file.exists():
            _fail(f"no running server found for state directory {settings.state_dir}; start "
                  "one with 'bastion up' (same --state-dir) or pass --url")
        url = json.loads(settings.server_file.read_text())["url"]
    if key is None:
        key = load_keys(settings.keys_file).get(tenant)
        if key is None:
            _fail(f"no API key for tenant {tenant!r} in {settings.keys_file}; pass --key")
    ctx = {k: v for k, v in {"session_id": session_id, "user_id": user_id}.items() if v}
    body = {"tenant": tenant,
            "items": [{"id": str(i), "text": t, "context": ctx} for i, t in enumerate(texts)]}
    try:
        r = httpx.post(f"{url.rstrip('/')}/v1/moderate", json=body, timeout=60,
                       headers={"Authorization": f"Bearer {key}"})
    except httpx.TransportError as err:
        _fail(f"cannot reach {url} ({err}); is 'bastion up' running?")
    click.echo(json.dumps(r.json(), indent=2))
    if r.status_code >= 400:
        sys.exit(1)


@cli.group(help="Tenant policy files.")
def policy() -> None:
    pass


@policy.command("validate", help="Validate a policy file; with a registered champion model in "
                "the state directory, also check it fits that model and show the thresholds.")
@_state_dir_option
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_guard
def policy_validate(state_dir: Path | None, file: Path) -> None:
    from core.launcher import champion_metadata, check_policy
    from core.policy import load_policy

    pol = load_policy(file)
    n_cats = sum(len(t.categories) for t in pol.tenants.values())
    click.echo(f"{file}: valid ({len(pol.tenants)} tenant(s), {n_cats} category rule(s))")
    settings = _settings(state_dir)
    if not (settings.state_dir / "mlflow.db").exists() and settings.mlflow_tracking_uri is None:
        click.echo("No registry in the state directory: not checked against a model.")
        return
    try:
        meta = champion_metadata(settings)
    except BastionError as err:
        click.echo(f"Not checked against a model: {err}")
        return
    resolved = check_policy(pol, meta)
    click.echo(f"Fits model version {meta['version']}:")
    for t, rt in resolved.items():
        click.echo(f"  {t} (policy version {rt.version})")
        for c in rt.categories:
            rev = "-" if c.review_threshold is None else f"{c.review_threshold:.3f}"
            click.echo(f"    {c.name:<15} block>={c.block_threshold:.3f} review>={rev} "
                       f"action={c.action.value} ({c.source})")


@cli.command(help="Print tenants' API keys from the state directory.")
@_state_dir_option
@click.argument("tenant", required=False)
@_guard
def keys(state_dir: Path | None, tenant: str | None) -> None:
    from core.keys import load_keys

    settings = _settings(state_dir)
    all_keys = load_keys(settings.keys_file)
    if tenant is not None:
        if tenant not in all_keys:
            _fail(f"no key for tenant {tenant!r} in {settings.keys_file}")
        click.echo(all_keys[tenant])
        return
    for t, k in sorted(all_keys.items()):
        click.echo(f"{t}\t{k}")


def _lifecycle(state_dir: Path | None) -> Any:
    from core.launcher import ensure_policy_file
    from core.policy import load_policy
    from registry.lifecycle import Lifecycle

    settings = _settings(state_dir)
    return Lifecycle(settings, load_policy(ensure_policy_file(settings)))


@cli.group(help="Model versions in the MLflow registry.")
def models() -> None:
    pass


@models.command("list", help="Every version with its aliases and gate verdict.")
@_state_dir_option
@_guard
def models_list(state_dir: Path | None) -> None:
    from registry.store import ModelRegistry

    registry = ModelRegistry(_settings(state_dir))
    click.echo(f"{'version':<8} {'aliases':<22} {'validation':<11} {'kind':<10} created (UTC)")
    for v in registry.list_versions():
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(v.created / 1000))
        click.echo(f"{v.version:<8} {','.join('@' + a for a in v.aliases):<22} "
                   f"{v.tags.get('validation_status', '-'):<11} "
                   f"{v.tags.get('bastion.kind', '-'):<10} {created}")


@models.command("show", help="A version's tags and its latest gate report.")
@_state_dir_option
@click.argument("version")
@_guard
def models_show(state_dir: Path | None, version: str) -> None:
    from mlflow.exceptions import MlflowException

    lc = _lifecycle(state_dir)
    info = lc.registry.get(version)
    click.echo(f"{lc.name} version {info.version}  aliases: "
               f"{', '.join('@' + a for a in info.aliases) or '-'}  run: {info.run_id}")
    for k, v in sorted(info.tags.items()):
        click.echo(f"  {k}: {v}")
    try:
        text = lc.client.download_artifacts(info.run_id, "gate/latest.txt")
        click.echo("\nLatest gate report:\n" + Path(text).read_text())
    except (MlflowException, OSError):
        click.echo("\nNo gate report yet: run 'bastion promote " + info.version + "'.")


@models.command("audit", help="Who promoted, forced, was refused or rolled back, when, why.")
@_state_dir_option
@_guard
def models_audit(state_dir: Path | None) -> None:
    for e in _lifecycle(state_dir).audit():
        click.echo(json.dumps(e, sort_keys=True))


@cli.command(help="Run the gate on VERSION against @champion and promote it if it passes.")
@_state_dir_option
@click.argument("version")
@click.option("--force", is_flag=True, help="Promote even if the gate fails (recorded).")
@click.option("--reason", default=None, help="Why: kept in the audit trail.")
@_guard
def promote(state_dir: Path | None, version: str, force: bool, reason: str | None) -> None:
    from registry.lifecycle import GateRefused

    lc = _lifecycle(state_dir)
    try:
        result = lc.promote(version, force=force, reason=reason)
    except GateRefused as err:
        click.echo(str(err))
        sys.exit(1)
    click.echo(result.report.to_table())
    how = "FORCED past a failing gate" if result.forced else "gate passed"
    click.echo(f"Promoted version {result.version} to @champion ({how}); previous champion: "
               f"{result.previous}. Serving follows within seconds.")


@cli.command(help="Move @champion back to the previous champion.")
@_state_dir_option
@click.option("--reason", default=None, help="Why: kept in the audit trail.")
@_guard
def rollback(state_dir: Path | None, reason: str | None) -> None:
    old, new = _lifecycle(state_dir).rollback(reason=reason)
    click.echo(f"Rolled back @champion from version {old} to version {new}. Serving follows "
               "within seconds.")


def main() -> None:
    import os

    from core.runtime import ray_env

    # Before anything imports ray: some of its settings are read at import time.
    for k, v in ray_env().items():
        os.environ.setdefault(k, v)
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    cli(prog_name="bastion")


if __name__ == "__main__":
    main()
