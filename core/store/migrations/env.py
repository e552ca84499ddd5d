"""Alembic's environment: runs the migrations on the engine the caller put in the config
(``bastion.core.store.schema.alembic_config``), or on ``sqlalchemy.url`` for the alembic CLI."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from bastion.core.store.engine import open_engine
from bastion.core.store.tables import metadata

config = context.config
engine: Engine | None = config.attributes.get("engine")
owned = engine is None
if engine is None:
    engine = open_engine(config.get_main_option("sqlalchemy.url") or "")
try:
    # A write transaction: on SQLite that is BEGIN IMMEDIATE, one migrating process at a time.
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # concurrent upgraders (two pods starting) wait for each other
                connection.exec_driver_sql("SELECT pg_advisory_xact_lock(6426997172490502401)")
            context.run_migrations()
finally:
    if owned:
        engine.dispose()
