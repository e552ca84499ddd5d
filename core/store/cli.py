"""``bastion db``: the operator's commands for the database's schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import click
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from bastion.core.clikit import fail, guard, settings_for, state_dir_option
from bastion.core.store.engine import display_url, open_engine
from bastion.core.store.legacy import import_legacy, legacy_files, summary
from bastion.core.store.schema import current_revision, head_revision, upgrade

__all__ = ["db"]

_URL = click.option("--url", default=None,
                    help="Database URL (default: BASTION_DATABASE_URL, else the SQLite file "
                         "in the state directory).")


def _engine(state_dir: Path | None, url: str | None) -> Engine:
    return open_engine(url or settings_for(state_dir).database_url)


@click.group()
def db() -> None:
    """The database every store shares: its schema revision and upgrades."""


@db.command("upgrade")
@state_dir_option
@_URL
@guard
def db_upgrade(state_dir: Path | None, url: str | None) -> None:
    """Bring the database's schema to the newest revision (run after an upgrade of Bastion),
    then import the state directory's store files from before the database (once)."""
    settings = settings_for(state_dir)
    engine = open_engine(url or settings.database_url)
    where = display_url(engine)
    try:
        before, after = upgrade(engine)
        if before == after:
            click.echo(f"{where}: already at revision {after} (head).")
        else:
            click.echo(f"{where}: upgraded from {before or 'an empty database'} to {after} "
                       "(head).")
        if legacy_files(settings.state_dir):
            imported = import_legacy(settings.state_dir, engine)
            click.echo(f"{summary(imported)} (the files are renamed to *.imported).")
    except SQLAlchemyError as err:
        fail(f"cannot upgrade {where}: {err}; check the URL (--url or BASTION_DATABASE_URL) "
             "and that the server answers")
    except sqlite3.DatabaseError as err:
        fail(f"cannot import the old store files of {settings.state_dir}: {err}; the file "
             "named is left as it was, fix or move it and run 'bastion db upgrade' again")
    finally:
        engine.dispose()


@db.command("current")
@state_dir_option
@_URL
@guard
def db_current(state_dir: Path | None, url: str | None) -> None:
    """Show the database's schema revision and whether it is the newest (head)."""
    engine = _engine(state_dir, url)
    try:
        rev = current_revision(engine)
    except SQLAlchemyError as err:
        fail(f"cannot read {display_url(engine)}: {err}; check "
             "the URL (--url or BASTION_DATABASE_URL) and that the server answers")
    finally:
        engine.dispose()
    head = head_revision()
    where = display_url(engine)
    state = ("at head" if rev == head else
             "no schema yet: run 'bastion db upgrade'" if rev is None else
             f"behind head {head}: run 'bastion db upgrade'")
    click.echo(f"{where}: revision {rev or '(none)'} ({state})")
