"""scoring: results flag the required values that were missing (scored 0)

Revision ID: scoring_0003
Revises: scoring_audit_buckets
"""
import sqlalchemy as sa
from alembic import op

revision = "scoring_0003"
down_revision = "scoring_audit_buckets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Comma-separated indicator ids; "" = nothing missing (every older result).
    with op.batch_alter_table("scoring_results") as batch:
        batch.add_column(sa.Column("missing", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("scoring_results") as batch:
        batch.drop_column("missing")
