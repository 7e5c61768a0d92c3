"""tiering: per-bucket audit chains with anchored heads (services.common.audit)

Existing records stay one chain (the legacy bucket -1), verifiable as written.

Revision ID: tiering_audit_buckets
Revises: tiering_0002
"""
from alembic import op

from services.common.audit_migrations import bucket_audit_log_v2, unbucket_audit_log_v2

revision = "tiering_audit_buckets"
down_revision = "tiering_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bucket_audit_log_v2(op, "tiering_audit_log")


def downgrade() -> None:
    unbucket_audit_log_v2(op, "tiering_audit_log")
