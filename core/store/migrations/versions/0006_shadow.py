"""Shadow challengers: a challenger's verdicts on a sample of live traffic, beside the
champion's that decided it (``bastion shadow``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 19:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('shadow_events',
    sa.Column('seq', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('ts', sa.Double(), nullable=False),
    sa.Column('request_id', sa.String(length=128), nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('item_id', sa.String(length=256), nullable=False),
    sa.Column('text', sa.Text(), nullable=True),
    sa.Column('text_sha256', sa.String(length=64), nullable=False),
    sa.Column('language', sa.String(length=8), nullable=True),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('decision', sa.String(length=32), nullable=False),
    sa.Column('scores', sa.Text(), nullable=False),
    sa.Column('bands', sa.Text(), nullable=False),
    sa.Column('champion_version', sa.String(length=64), nullable=False),
    sa.Column('champion_decision', sa.String(length=32), nullable=False),
    sa.Column('champion_scores', sa.Text(), nullable=False),
    sa.Column('champion_bands', sa.Text(), nullable=False),
    sa.Column('champion_ms', sa.Double(), nullable=True),
    sa.Column('shadow_ms', sa.Double(), nullable=True),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_shadow_events')),
    sqlite_autoincrement=True,
    )
    op.create_index(op.f('ix_shadow_events_version_tenant_ts'), 'shadow_events',
                    ['version', 'tenant', 'ts'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_shadow_events_version_tenant_ts'), table_name='shadow_events')
    op.drop_table('shadow_events')
