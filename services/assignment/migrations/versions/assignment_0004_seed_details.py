"""what the seeds ask of assignment: group keys, local group claims, honest
requests, unplaced since/tried, lock period ends

- assignment_customers: group_keys (JSON), change_cause
- assignment_unplaced: since, tried
- assignment_lock_periods: ended_at
- assignment_change_requests: cause, superseded_by
- assignment_group_claims: scope_branch_id (filled with the claimer's unit);
  unique per (group, scope, selector) instead of per (group, selector)

Revision ID: assignment_0004
Revises: assignment_audit_buckets
"""
from alembic import op
import sqlalchemy as sa

revision = 'assignment_0004'
down_revision = 'assignment_audit_buckets'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('assignment_customers') as batch:
        batch.add_column(sa.Column('group_keys', sa.Text(), nullable=False, server_default='{}'))
        batch.add_column(sa.Column('change_cause', sa.String(length=32), nullable=False, server_default=''))
    with op.batch_alter_table('assignment_unplaced') as batch:
        batch.add_column(sa.Column('since', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('tried', sa.Text(), nullable=False, server_default=''))
    with op.batch_alter_table('assignment_lock_periods') as batch:
        batch.add_column(sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('assignment_change_requests') as batch:
        batch.add_column(sa.Column('cause', sa.String(length=32), nullable=False, server_default=''))
        batch.add_column(sa.Column('superseded_by', sa.String(length=64), nullable=True))
    with op.batch_alter_table('assignment_group_claims') as batch:
        batch.add_column(sa.Column('scope_branch_id', sa.String(length=64), nullable=False, server_default=''))
        batch.drop_constraint('uq_assignment_group_claim', type_='unique')
    op.execute("UPDATE assignment_group_claims SET scope_branch_id = coalesce((SELECT s.branch_id FROM "
               "assignment_staff s WHERE s.staff_id = assignment_group_claims.staff_id), '')")
    with op.batch_alter_table('assignment_group_claims') as batch:
        batch.create_unique_constraint('uq_assignment_group_claim_scope',
                                       ['group_code', 'scope_branch_id', 'selector_json'])


def downgrade() -> None:
    with op.batch_alter_table('assignment_group_claims') as batch:
        batch.drop_constraint('uq_assignment_group_claim_scope', type_='unique')
        batch.create_unique_constraint('uq_assignment_group_claim', ['group_code', 'selector_json'])
        batch.drop_column('scope_branch_id')
    with op.batch_alter_table('assignment_change_requests') as batch:
        batch.drop_column('superseded_by')
        batch.drop_column('cause')
    with op.batch_alter_table('assignment_lock_periods') as batch:
        batch.drop_column('ended_at')
    with op.batch_alter_table('assignment_unplaced') as batch:
        batch.drop_column('tried')
        batch.drop_column('since')
    with op.batch_alter_table('assignment_customers') as batch:
        batch.drop_column('change_cause')
        batch.drop_column('group_keys')
