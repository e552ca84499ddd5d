"""The store layer: the database URL, the migrations against the tables, and the rule that a
shared database is upgraded by the operator, never behind their back."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import inspect

from bastion.cli import cli
from bastion.core.errors import ConfigError, StoreError
from bastion.core.events import EventLog
from bastion.core.policy import load_policy
from bastion.core.settings import load_settings
from bastion.core.store import (
    current_revision,
    ensure_schema,
    head_revision,
    normalise_url,
    open_engine,
)
from bastion.core.store.tables import metadata
from bastion.serving.config import serve_config
from tests._databases import postgres_schema, postgres_server


def test_the_default_is_a_sqlite_file_in_the_state_directory(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    monkeypatch.delenv("BASTION_DATABASE_URL", raising=False)
    assert load_settings(tmp_path).database_url == f"sqlite:///{tmp_path.resolve()}/bastion.db"
    monkeypatch.setenv("BASTION_DATABASE_URL", "postgresql://bob@db.internal:5432/bastion")
    assert load_settings(tmp_path).database_url == (
        "postgresql+psycopg://bob@db.internal:5432/bastion")


@pytest.mark.parametrize(("url", "message"), [
    ("mysql://u@h/db", r"unsupported scheme 'mysql'; give BASTION_DATABASE_URL \(or --url\) as "
                       r"sqlite:///<path> .* or postgresql://"),
    ("sqlite://", "in-memory SQLite database, which every connection sees empty"),
    ("postgresql+psycopg2://u@h/db", "asks for psycopg2, which is not installed"),
    ("not a url", "is not a URL"),
])
def test_an_unusable_url_says_how_to_fix_it(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        normalise_url(url)
    with pytest.raises(ConfigError, match=message):
        load_settings(database_url=url)


def test_postgres_urls_run_on_psycopg_3() -> None:
    for given in ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"):
        assert normalise_url(given).drivername == "postgresql+psycopg"


def _diff(url: str) -> list[object]:
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), metadata))
    finally:
        engine.dispose()


def test_the_migrations_create_exactly_the_tables(db_url: str) -> None:
    """db_url is migrated to head (on SQLite by the first store that opens it)."""
    EventLog(db_url).close()
    assert _diff(db_url) == []
    engine = open_engine(db_url)
    try:
        assert current_revision(engine) == head_revision()
        assert set(inspect(engine).get_table_names()) == set(metadata.tables) | {
            "alembic_version"}
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_shared_database_not_at_head_is_an_error_naming_the_command() -> None:
    with postgres_schema(postgres_server(), migrate=False) as url:
        with pytest.raises(StoreError, match=r"has no Bastion schema yet, this code needs "
                           r"revision \w+; run 'bastion db upgrade --url "):
            EventLog(url)
        engine = open_engine(url)
        try:
            assert inspect(engine).get_table_names() == []  # nothing created behind Alembic
        finally:
            engine.dispose()
        out = CliRunner().invoke(cli, ["db", "current", "--url", url])
        assert out.exit_code == 0 and "no schema yet: run 'bastion db upgrade'" in out.output
        out = CliRunner().invoke(cli, ["db", "upgrade", "--url", url])
        assert out.exit_code == 0 and f"to {head_revision()} (head)" in out.output
        EventLog(url).close()
        out = CliRunner().invoke(cli, ["db", "upgrade", "--url", url])
        assert "already at revision" in out.output
        assert _diff(url) == []


def test_the_embedded_default_upgrades_itself(tmp_path: Path) -> None:
    url = load_settings(tmp_path).database_url
    out = CliRunner().invoke(cli, ["db", "current", "--state-dir", str(tmp_path)])
    assert out.exit_code == 0 and "revision (none)" in out.output
    engine = open_engine(url)
    try:
        ensure_schema(engine)
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
    out = CliRunner().invoke(cli, ["db", "current", "--state-dir", str(tmp_path)])
    assert f"revision {head_revision()} (at head)" in out.output
    out = CliRunner().invoke(cli, ["db", "upgrade", "--url", "mysql://x/y"])
    assert out.exit_code == 2 and "unsupported scheme 'mysql'" in out.output


def test_the_serve_config_carries_only_a_url_that_is_not_the_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pods resolve the default themselves (BASTION_DATABASE_URL, else their state directory):
    the config must not pin the machine that wrote it."""
    monkeypatch.delenv("BASTION_DATABASE_URL", raising=False)
    policy = load_policy(Path(__file__).parents[1] / "integration" / "policy.yaml")

    def args(**kw: object) -> dict[str, object]:
        doc = serve_config(load_settings(tmp_path, **kw), policy, keys={})
        return dict(doc["applications"][0]["args"])

    assert args()["database_url"] is None
    url = "postgresql+psycopg://bastion@db:5432/bastion"
    assert args(database_url="postgresql://bastion@db:5432/bastion")["database_url"] == url


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres",
                                                            marks=pytest.mark.postgres)])
def test_upgrading_to_the_console_schema_counts_the_events_already_logged(
        tmp_path: Path, backend: str) -> None:
    from sqlalchemy import text

    from bastion.core.store import upgrade

    def run(url: str) -> None:
        engine = open_engine(url)
        try:
            upgrade(engine, "0002")
            with engine.begin() as conn:
                for ts, decision in ((120.5, "block"), (150.0, "block"), (3600.0, "allow")):
                    conn.execute(text(
                        "INSERT INTO events (ts, request_id, tenant, item_id, text_sha256, "
                        "text_len, decision, scores, reasons, model_version, policy_version) "
                        "VALUES (:ts, 'r', 'acme', :i, 'x', 1, :d, '{}', '[]', '1', 'p')"),
                        {"ts": ts, "i": f"i{ts}", "d": decision})
            upgrade(engine)
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT tenant, minute, decision, category, n FROM "
                                         "event_counts ORDER BY minute")).all()
            assert [tuple(r) for r in rows] == [("acme", 2, "block", "", 2),
                                                ("acme", 60, "allow", "", 1)]
        finally:
            engine.dispose()

    if backend == "sqlite":
        run(f"sqlite:///{tmp_path / 'old.db'}")
    else:
        with postgres_schema(postgres_server(), migrate=False) as url:
            run(url)
