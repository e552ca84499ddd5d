"""The ``bastion`` command line. Commands are verbs; every one takes ``--state-dir``.

Each stage owns its command group (``bastion.serving.cli``, ``bastion.training.cli``,
``bastion.registry.cli``, ``bastion.review.cli``, ``bastion.drift.cli``); the application adds
``up`` and ``policy`` (``bastion.commands``). They are imported when a command runs, not when
the program starts: ``bastion --help`` stays quick, and Ray's environment is set before
anything imports Ray.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any

import click

from bastion.core.runtime import ray_env

__all__ = ["COMMANDS", "cli", "main"]

# command name -> "module:attribute" of its click command or group
COMMANDS = {
    "up": "bastion.commands:up",
    "policy": "bastion.commands:policy",
    "moderate": "bastion.serving.cli:moderate",
    "keys": "bastion.serving.cli:keys",
    "media": "bastion.serving.cli:media",
    "models": "bastion.registry.cli:models",
    "rollback": "bastion.registry.cli:rollback",
    "shadow": "bastion.registry.cli:shadow",
    "promote": "bastion.training.cli:promote",
    "retrain": "bastion.training.cli:retrain",
    "starter": "bastion.training.cli:starter",
    "category": "bastion.training.category_cli:category",
    "review": "bastion.review.cli:review",
    "labels": "bastion.review.cli:labels",
    "drift": "bastion.drift.cli:drift",
    "db": "bastion.core.store.cli:db",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported by name when used (click's lazy-loading
    pattern)."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module, _, attr = self.lazy[cmd_name].partition(":")
        command = getattr(importlib.import_module(module), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.lazy[cmd_name]} is not a click command")
        return command


@click.group(cls=LazyGroup, lazy=COMMANDS, help="Bastion: Trust & Safety moderation on Ray.")
def cli() -> None:
    pass


def main() -> None:
    # Before anything imports ray: some of its settings are read at import time.
    for k, v in ray_env().items():
        os.environ.setdefault(k, v)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    cli(prog_name="bastion")


if __name__ == "__main__":
    main()
