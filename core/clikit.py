"""What every ``bastion`` command shares: the ``--state-dir`` option, settings from it, and
one way to fail (a message that says how to fix it, exit status 2)."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from bastion.core.errors import BastionError
from bastion.core.settings import Settings, load_settings

__all__ = ["state_dir_option", "settings_for", "fail", "guard", "exit_if_rejected",
           "platform_dashboard"]

state_dir_option = click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path), envvar="BASTION_STATE_DIR",
    default=None, help="Folder holding everything Bastion keeps (env BASTION_STATE_DIR; "
    "default ~/.local/share/bastion).",
)


def settings_for(state_dir: Path | None, **kw: Any) -> Settings:
    return load_settings(state_dir, **kw)


def fail(message: str) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(2)


def guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A command whose BastionError is printed as ``error: ...`` (exit 2), not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BastionError as err:
            fail(str(err))

    return wrapper


def exit_if_rejected(file: Path, problems: list[str]) -> None:
    """List the lines of an import file that were rejected ("line N: why") and exit 1."""
    if problems:
        click.secho(f"{len(problems)} line(s) of {file} rejected:", fg="red", err=True)
        for line in problems:
            click.echo(f"  {line}", err=True)
        sys.exit(1)


def platform_dashboard(settings: Settings) -> str | None:
    """The Ray dashboard of the running ``bastion up`` of this state directory, if any."""
    if not settings.server_file.exists():
        return None
    try:
        info = json.loads(settings.server_file.read_text())
        os.kill(int(info["pid"]), 0)
    except (ValueError, KeyError, OSError):
        return None
    dash = info.get("dashboard")
    return str(dash) if dash else None
