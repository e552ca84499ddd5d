"""``bastion moderate`` and ``bastion keys``: the moderation API from the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import httpx

from bastion.core.clikit import fail, guard, settings_for, state_dir_option
from bastion.core.keys import load_keys

__all__ = ["moderate", "keys"]


@click.command(help="Send text to a running server and print the JSON response.")
@state_dir_option
@click.option("--tenant", default="demo", show_default=True, help="Tenant whose policy applies.")
@click.option("--url", default=None, help="Server URL (default: the one 'bastion up' wrote).")
@click.option("--key", envvar="BASTION_API_KEY", default=None,
              help="Tenant API key (default: from the state directory).")
@click.option("--session-id", default=None, help="Session the texts belong to.")
@click.option("--user-id", default=None, help="Author of the texts.")
@click.argument("texts", nargs=-1, required=True)
@guard
def moderate(state_dir: Path | None, tenant: str, url: str | None, key: str | None,
             session_id: str | None, user_id: str | None, texts: tuple[str, ...]) -> None:

    settings = settings_for(state_dir)
    if url is None:
        if not settings.server_file.exists():
            fail(f"no running server found for state directory {settings.state_dir}; start "
                  "one with 'bastion up' (same --state-dir) or pass --url")
        url = json.loads(settings.server_file.read_text())["url"]
    if key is None:
        key = load_keys(settings.keys_file).get(tenant)
        if key is None:
            fail(f"no API key for tenant {tenant!r} in {settings.keys_file}; pass --key")
    ctx = {k: v for k, v in {"session_id": session_id, "user_id": user_id}.items() if v}
    body = {"tenant": tenant,
            "items": [{"id": str(i), "text": t, "context": ctx} for i, t in enumerate(texts)]}
    try:
        r = httpx.post(f"{url.rstrip('/')}/v1/moderate", json=body, timeout=60,
                       headers={"Authorization": f"Bearer {key}"})
    except httpx.TransportError as err:
        fail(f"cannot reach {url} ({err}); is 'bastion up' running?")
    click.echo(json.dumps(r.json(), indent=2))
    if r.status_code >= 400:
        sys.exit(1)


@click.command(help="Print tenants' API keys from the state directory.")
@state_dir_option
@click.argument("tenant", required=False)
@guard
def keys(state_dir: Path | None, tenant: str | None) -> None:
    settings = settings_for(state_dir)
    all_keys = load_keys(settings.keys_file)
    if tenant is not None:
        if tenant not in all_keys:
            fail(f"no key for tenant {tenant!r} in {settings.keys_file}")
        click.echo(all_keys[tenant])
        return
    for t, k in sorted(all_keys.items()):
        click.echo(f"{t}\t{k}")
