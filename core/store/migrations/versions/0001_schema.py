"""The first schema: every store's tables (events, review queue, labels, trigger log,
embedding cache).

Revision ID: 0001
Revises: (none)
Create Date: 2026-12-02 01:50:54.040439
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('drift_triggers',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', sa.Double(), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('rule', sa.Text(), nullable=False),
    sa.Column('reasons', sa.Text(), nullable=False),
    sa.Column('job_id', sa.Text(), nullable=True),
    sa.Column('model_version', sa.Text(), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_drift_triggers')),
    sqlite_autoincrement=True
    )
    op.create_index(op.f('ix_drift_triggers_action_at'), 'drift_triggers', ['action', 'at'], unique=False)
    op.create_table('embedding_encoders',
    sa.Column('fingerprint', sa.String(length=128), nullable=False),
    sa.Column('dim', sa.Integer(), nullable=False),
    sa.Column('identity', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('fingerprint', name=op.f('pk_embedding_encoders'))
    )
    op.create_table('events',
    sa.Column('seq', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('ts', sa.Double(), nullable=False),
    sa.Column('request_id', sa.String(length=128), nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('item_id', sa.String(length=256), nullable=False),
    sa.Column('session_id', sa.Text(), nullable=True),
    sa.Column('user_id', sa.Text(), nullable=True),
    sa.Column('text', sa.Text(), nullable=True),
    sa.Column('text_sha256', sa.String(length=64), nullable=False),
    sa.Column('text_len', sa.Integer(), nullable=False),
    sa.Column('decision', sa.String(length=32), nullable=False),
    sa.Column('scores', sa.Text(), nullable=False),
    sa.Column('reasons', sa.Text(), nullable=False),
    sa.Column('model_version', sa.Text(), nullable=False),
    sa.Column('policy_version', sa.Text(), nullable=False),
    sa.Column('embedding', sa.LargeBinary(), nullable=True),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_events')),
    sqlite_autoincrement=True
    )
    op.create_index(op.f('ix_events_tenant_session_id'), 'events', ['tenant', 'session_id'], unique=False)
    op.create_index(op.f('ix_events_tenant_ts'), 'events', ['tenant', 'ts'], unique=False)
    op.create_table('label_history',
    sa.Column('seq', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('item_id', sa.String(length=256), nullable=False),
    sa.Column('annotator', sa.String(length=256), nullable=False),
    sa.Column('category', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Double(), nullable=False),
    sa.Column('confidence', sa.Double(), nullable=False),
    sa.Column('ts', sa.Double(), nullable=False),
    sa.Column('submission_id', sa.String(length=128), nullable=True),
    sa.Column('replaced_ts', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_label_history')),
    sqlite_autoincrement=True
    )
    op.create_index(op.f('ix_label_history_tenant_item_id'), 'label_history', ['tenant', 'item_id'], unique=False)
    op.create_table('label_items',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('item_id', sa.String(length=256), nullable=False),
    sa.Column('text', sa.Text(), nullable=True),
    sa.Column('text_sha256', sa.String(length=64), nullable=False),
    sa.Column('session_id', sa.Text(), nullable=True),
    sa.Column('user_id', sa.Text(), nullable=True),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('ts', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('tenant', 'item_id', name=op.f('pk_label_items'))
    )
    op.create_table('review_claims',
    sa.Column('token', sa.String(length=64), nullable=False),
    sa.Column('task_id', sa.String(length=32), nullable=False),
    sa.Column('slot', sa.Integer(), nullable=False),
    sa.Column('moderator', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('leased_until', sa.Double(), nullable=False),
    sa.Column('claimed_ts', sa.Double(), nullable=False),
    sa.Column('submission_id', sa.String(length=128), nullable=True),
    sa.Column('submitted_ts', sa.Double(), nullable=True),
    sa.PrimaryKeyConstraint('token', name=op.f('pk_review_claims')),
    sa.UniqueConstraint('submission_id', name=op.f('uq_review_claims_submission_id')),
    sa.UniqueConstraint('task_id', 'moderator', name=op.f('uq_review_claims_task_id_moderator'))
    )
    op.create_table('review_events',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('event_id', sa.String(length=256), nullable=False),
    sa.Column('task_id', sa.String(length=32), nullable=False),
    sa.Column('session_id', sa.Text(), nullable=False),
    sa.Column('user_id', sa.Text(), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('target_user', sa.Text(), nullable=True),
    sa.Column('ts', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('tenant', 'event_id', name=op.f('pk_review_events'))
    )
    op.create_index(op.f('ix_review_events_task_id'), 'review_events', ['task_id'], unique=False)
    op.create_table('review_items',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('item_id', sa.String(length=256), nullable=False),
    sa.Column('task_id', sa.String(length=32), nullable=False),
    sa.Column('text', sa.Text(), nullable=True),
    sa.Column('text_sha256', sa.String(length=64), nullable=False),
    sa.Column('session_id', sa.Text(), nullable=True),
    sa.Column('user_id', sa.Text(), nullable=True),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('scores', sa.Text(), nullable=False),
    sa.Column('keyword_hits', sa.Text(), nullable=False),
    sa.Column('decision', sa.String(length=32), nullable=True),
    sa.Column('model_version', sa.Text(), nullable=True),
    sa.Column('policy_version', sa.Text(), nullable=True),
    sa.Column('ts', sa.Double(), nullable=False),
    sa.Column('gold', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('tenant', 'item_id', name=op.f('pk_review_items'))
    )
    op.create_index(op.f('ix_review_items_task_id'), 'review_items', ['task_id'], unique=False)
    op.create_index(op.f('ix_review_items_tenant_user_id_ts'), 'review_items', ['tenant', 'user_id', 'ts'], unique=False)
    op.create_table('review_reports',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('report_id', sa.String(length=256), nullable=False),
    sa.Column('task_id', sa.String(length=32), nullable=False),
    sa.Column('reporter', sa.Text(), nullable=False),
    sa.Column('reported_user', sa.Text(), nullable=True),
    sa.Column('reported_item', sa.Text(), nullable=True),
    sa.Column('session_id', sa.Text(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('ts', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('tenant', 'report_id', name=op.f('pk_review_reports'))
    )
    op.create_index(op.f('ix_review_reports_task_id'), 'review_reports', ['task_id'], unique=False)
    op.create_table('review_slots',
    sa.Column('task_id', sa.String(length=32), nullable=False),
    sa.Column('slot', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=8), nullable=False),
    sa.Column('token', sa.String(length=64), nullable=True),
    sa.Column('moderator', sa.Text(), nullable=True),
    sa.Column('leased_until', sa.Double(), nullable=True),
    sa.PrimaryKeyConstraint('task_id', 'slot', name=op.f('pk_review_slots'))
    )
    op.create_table('review_tasks',
    sa.Column('task_id', sa.String(length=32), nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('group_key', sa.Text(), nullable=False),
    sa.Column('priority', sa.Double(), nullable=False),
    sa.Column('reasons', sa.Text(), nullable=False),
    sa.Column('slots', sa.Integer(), nullable=False),
    sa.Column('slots_done', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=8), nullable=False),
    sa.Column('n_items', sa.Integer(), nullable=False),
    sa.Column('created_ts', sa.Double(), nullable=False),
    sa.Column('updated_ts', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('task_id', name=op.f('pk_review_tasks')),
    sa.UniqueConstraint('tenant', 'group_key', name=op.f('uq_review_tasks_tenant_group_key'))
    )
    op.create_index(op.f('ix_review_tasks_status_priority'), 'review_tasks', ['status', 'priority'], unique=False)
    op.create_table('embeddings',
    sa.Column('fingerprint', sa.String(length=128), nullable=False),
    sa.Column('sha', sa.LargeBinary(length=32), nullable=False),
    sa.Column('vec', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['fingerprint'], ['embedding_encoders.fingerprint'], name=op.f('fk_embeddings_fingerprint_embedding_encoders')),
    sa.PrimaryKeyConstraint('fingerprint', 'sha', name=op.f('pk_embeddings'))
    )
    op.create_table('labels',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('item_id', sa.String(length=256), nullable=False),
    sa.Column('annotator', sa.String(length=256), nullable=False),
    sa.Column('category', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Double(), nullable=False),
    sa.Column('confidence', sa.Double(), nullable=False),
    sa.Column('ts', sa.Double(), nullable=False),
    sa.Column('submission_id', sa.String(length=128), nullable=True),
    sa.ForeignKeyConstraint(['tenant', 'item_id'], ['label_items.tenant', 'label_items.item_id'], name=op.f('fk_labels_tenant_item_id_label_items')),
    sa.PrimaryKeyConstraint('tenant', 'item_id', 'annotator', 'category', name=op.f('pk_labels'))
    )
    op.create_index(op.f('ix_labels_submission_id'), 'labels', ['submission_id'], unique=False)
    op.create_index(op.f('ix_labels_ts'), 'labels', ['ts'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_labels_ts'), table_name='labels')
    op.drop_index(op.f('ix_labels_submission_id'), table_name='labels')
    op.drop_table('labels')
    op.drop_table('embeddings')
    op.drop_index(op.f('ix_review_tasks_status_priority'), table_name='review_tasks')
    op.drop_table('review_tasks')
    op.drop_table('review_slots')
    op.drop_index(op.f('ix_review_reports_task_id'), table_name='review_reports')
    op.drop_table('review_reports')
    op.drop_index(op.f('ix_review_items_tenant_user_id_ts'), table_name='review_items')
    op.drop_index(op.f('ix_review_items_task_id'), table_name='review_items')
    op.drop_table('review_items')
    op.drop_index(op.f('ix_review_events_task_id'), table_name='review_events')
    op.drop_table('review_events')
    op.drop_table('review_claims')
    op.drop_table('label_items')
    op.drop_index(op.f('ix_label_history_tenant_item_id'), table_name='label_history')
    op.drop_table('label_history')
    op.drop_index(op.f('ix_events_tenant_ts'), table_name='events')
    op.drop_index(op.f('ix_events_tenant_session_id'), table_name='events')
    op.drop_table('events')
    op.drop_table('embedding_encoders')
    op.drop_index(op.f('ix_drift_triggers_action_at'), table_name='drift_triggers')
    op.drop_table('drift_triggers')
