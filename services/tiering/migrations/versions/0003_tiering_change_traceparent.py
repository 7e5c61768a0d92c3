"""tiering: the trace context of the evaluation behind each feed entry

Revision ID: tiering_0003
Revises: tiering_audit_buckets
"""
import sqlalchemy as sa
from alembic import op

revision = "tiering_0003"
down_revision = "tiering_audit_buckets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: existing rows and untraced evaluations store NULL.
    op.add_column("tiering_changes", sa.Column("traceparent", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tiering_changes") as batch:
        batch.drop_column("traceparent")
