"""The console: the audit log, the deciding category of each event, and the per-minute counts
of decisions the dashboards read (backfilled from the events already logged).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 19:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('ts', sa.Double(), nullable=False),
    sa.Column('actor', sa.String(length=256), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=True),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('target', sa.Text(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log')),
    sqlite_autoincrement=True
    )
    op.create_index(op.f('ix_audit_log_actor_action_ts'), 'audit_log',
                    ['actor', 'action', 'ts'], unique=False)
    op.create_index(op.f('ix_audit_log_ts'), 'audit_log', ['ts'], unique=False)
    with op.batch_alter_table('events') as batch:
        batch.add_column(sa.Column('category', sa.String(length=64), nullable=True))
    op.create_index(op.f('ix_events_ts'), 'events', ['ts'], unique=False)
    op.create_table('event_counts',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('minute', sa.Integer(), nullable=False),
    sa.Column('decision', sa.String(length=32), nullable=False),
    sa.Column('category', sa.String(length=64), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('tenant', 'minute', 'decision', 'category',
                            name=op.f('pk_event_counts'))
    )
    op.create_index(op.f('ix_event_counts_minute'), 'event_counts', ['minute'], unique=False)
    minute = ("CAST(floor(ts / 60) AS INTEGER)" if op.get_bind().dialect.name == "postgresql"
              else "CAST(ts / 60 AS INTEGER)")
    op.execute(f"INSERT INTO event_counts (tenant, minute, decision, category, n) "
               f"SELECT tenant, {minute}, decision, '', count(*) FROM events "
               f"GROUP BY tenant, {minute}, decision")


def downgrade() -> None:
    op.drop_index(op.f('ix_event_counts_minute'), table_name='event_counts')
    op.drop_table('event_counts')
    op.drop_index(op.f('ix_events_ts'), table_name='events')
    with op.batch_alter_table('events') as batch:
        batch.drop_column('category')
    op.drop_index(op.f('ix_audit_log_ts'), table_name='audit_log')
    op.drop_index(op.f('ix_audit_log_actor_action_ts'), table_name='audit_log')
    op.drop_table('audit_log')
