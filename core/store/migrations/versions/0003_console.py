"""The console: the audit log, and the deciding category of each event for the dashboards.

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


def downgrade() -> None:
    op.drop_index(op.f('ix_events_ts'), table_name='events')
    with op.batch_alter_table('events') as batch:
        batch.drop_column('category')
    op.drop_index(op.f('ix_audit_log_ts'), table_name='audit_log')
    op.drop_index(op.f('ix_audit_log_actor_action_ts'), table_name='audit_log')
    op.drop_table('audit_log')
