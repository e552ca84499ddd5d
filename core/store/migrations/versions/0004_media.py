"""Images and voice: the modality and media facts of each event and review item, the raw
media a tenant's policy keeps for its moderators, and the modality of each labelled item.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 08:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('events') as batch:
        batch.add_column(sa.Column('modality', sa.String(length=8), server_default='text', nullable=False))
        batch.add_column(sa.Column('media', sa.Text(), nullable=True))
    with op.batch_alter_table('review_items') as batch:
        batch.add_column(sa.Column('modality', sa.String(length=8), server_default='text', nullable=False))
        batch.add_column(sa.Column('media', sa.Text(), nullable=True))
        batch.add_column(sa.Column('media_type', sa.String(length=32), nullable=True))
        batch.add_column(sa.Column('media_blob', sa.LargeBinary(), nullable=True))
    with op.batch_alter_table('label_items') as batch:
        batch.add_column(sa.Column('modality', sa.String(length=8), server_default='text', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('label_items') as batch:
        batch.drop_column('modality')
    with op.batch_alter_table('review_items') as batch:
        batch.drop_column('media_blob')
        batch.drop_column('media_type')
        batch.drop_column('media')
        batch.drop_column('modality')
    with op.batch_alter_table('events') as batch:
        batch.drop_column('media')
        batch.drop_column('modality')
