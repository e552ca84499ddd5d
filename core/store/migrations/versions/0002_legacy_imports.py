"""The record of the pre-database SQLite files imported from a state directory.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 03:25:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('legacy_imports',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('imported_ts', sa.Double(), nullable=False),
    sa.Column('counts', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('name', 'sha256', name=op.f('pk_legacy_imports'))
    )


def downgrade() -> None:
    op.drop_table('legacy_imports')
