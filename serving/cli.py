"""``bastion moderate``, ``bastion keys`` and ``bastion media``: the moderation API from the
command line."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import click
import httpx

from bastion.core.clikit import fail, guard, settings_for, state_dir_option
from bastion.core.keys import load_keys
from bastion.core.media import MediaError, decode_image, pdq_hash

__all__ = ["moderate", "keys", "media"]


@click.command(help="Send texts, images (--image) or voice clips (--audio) to a running server "
                    "and print the JSON response.")
@state_dir_option
@click.option("--tenant", default="demo", show_default=True, help="Tenant whose policy applies.")
@click.option("--url", default=None, help="Server URL (default: the one 'bastion up' wrote).")
@click.option("--key", envvar="BASTION_API_KEY", default=None,
              help="Tenant API key (default: from the state directory).")
@click.option("--session-id", default=None, help="Session the texts belong to.")
@click.option("--user-id", default=None, help="Author of the texts.")
@click.option("--image", "images", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="An image file (PNG, JPEG or WebP) to moderate; repeatable.")
@click.option("--audio", "clips", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A voice clip (WAV, FLAC or OGG) to moderate; repeatable.")
@click.option("--consent", is_flag=True, help="The speakers consented to their audio being "
              "kept for review (context.metadata.consent).")
@click.argument("texts", nargs=-1)
@guard
def moderate(state_dir: Path | None, tenant: str, url: str | None, key: str | None,
             session_id: str | None, user_id: str | None, images: tuple[Path, ...],
             clips: tuple[Path, ...], consent: bool, texts: tuple[str, ...]) -> None:
    if not (texts or images or clips):
        fail("nothing to moderate: give texts, --image FILE or --audio FILE")

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
    ctx: dict[str, object] = {k: v for k, v in {"session_id": session_id,
                                                 "user_id": user_id}.items() if v}
    if consent:
        ctx["metadata"] = {"consent": True}
    items: list[dict[str, object]] = [{"id": str(i), "text": t, "context": ctx}
                                      for i, t in enumerate(texts)]
    for field, paths in (("image_base64", images), ("audio_base64", clips)):
        for p in paths:
            try:
                data = p.read_bytes()
            except OSError as err:
                fail(f"cannot read {p}: {err}")
            items.append({"id": p.name, field: base64.b64encode(data).decode(), "context": ctx})
    body = {"tenant": tenant, "items": items}
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


@click.group(help="Images and voice clips: perceptual hashes for a tenant's known-bad lists.")
def media() -> None:
    pass


@media.command("hash", help="Print the PDQ hash (64 hex digits) and quality of each image: the "
                            "entries of a policy's media.image.hash_lists.")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@guard
def media_hash(files: tuple[Path, ...]) -> None:
    for path in files:
        try:
            img = decode_image(path.read_bytes(), max_bytes=1 << 30, max_pixels=1 << 28)
        except MediaError as err:
            fail(f"{path}: {err}")
        digest, quality = pdq_hash(img.rgb)
        click.echo(f"{digest}  quality={quality}  {path}")
