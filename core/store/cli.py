"""``bastion db``: the operator's commands for the database: its schema, its retention purge."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import click
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from bastion.core.clikit import fail, guard, settings_for, state_dir_option
from bastion.core.policy import ensure_policy_file, load_policy
from bastion.core.retention import purge
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
    """The database every store shares: its schema revision, upgrades and retention purge."""


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


@db.command("purge")
@state_dir_option
@_URL
@click.option("--policy", "policy_file", default=None, type=click.Path(dir_okay=False,
              path_type=Path), help="Policy file whose tenants' retention_days apply "
              "(default: the state directory's).")
@guard
def db_purge(state_dir: Path | None, url: str | None, policy_file: Path | None) -> None:
    """Purge raw text and embeddings older than each tenant's retention_days (as 'bastion up'
    does every hour); rows, scores and digests stay, labelled items are kept."""
    settings = settings_for(state_dir)
    policy = load_policy(policy_file or ensure_policy_file(settings))
    engine = open_engine(url or settings.database_url)
    try:
        report = purge(engine, policy)
    except SQLAlchemyError as err:
        fail(f"cannot purge {display_url(engine)}: {err}; check the URL (--url or "
             "BASTION_DATABASE_URL), that the server answers and that the schema is at head "
             "('bastion db upgrade')")
    finally:
        engine.dispose()
    click.echo(f"{display_url(engine)}: {report.summary()}")
