"""Languages: the ISO 639-1 language of each event and review item (core.language), and the
decisions counted per tenant, minute, language and decision for the dashboards.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 15:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('events') as batch:
        batch.add_column(sa.Column('language', sa.String(length=8), nullable=True))
    with op.batch_alter_table('review_items') as batch:
        batch.add_column(sa.Column('language', sa.String(length=8), nullable=True))
    op.create_table('language_counts',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('minute', sa.Integer(), nullable=False),
    sa.Column('language', sa.String(length=8), nullable=False),
    sa.Column('decision', sa.String(length=32), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('tenant', 'minute', 'language', 'decision',
                            name=op.f('pk_language_counts'))
    )
    op.create_index(op.f('ix_language_counts_minute'), 'language_counts', ['minute'],
                    unique=False)
    # events logged before this revision have no language: counted under ""
    minute = ("CAST(floor(ts / 60) AS INTEGER)" if op.get_bind().dialect.name == "postgresql"
              else "CAST(ts / 60 AS INTEGER)")
    op.execute(f"INSERT INTO language_counts (tenant, minute, language, decision, n) "
               f"SELECT tenant, {minute}, '', decision, count(*) FROM events "
               f"GROUP BY tenant, {minute}, decision")


def downgrade() -> None:
    op.drop_index(op.f('ix_language_counts_minute'), table_name='language_counts')
    op.drop_table('language_counts')
    with op.batch_alter_table('review_items') as batch:
        batch.drop_column('language')
    with op.batch_alter_table('events') as batch:
        batch.drop_column('language')
