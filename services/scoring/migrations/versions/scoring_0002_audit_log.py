"""scoring: the tamper-evident audit log (services.common.audit)

Revision ID: scoring_0002
Revises: scoring_0001
"""
from alembic import op

from services.common.audit_migrations import create_audit_log_v1, drop_audit_log_v1

revision = "scoring_0002"
down_revision = "scoring_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_audit_log_v1(op, "scoring_audit_log")


def downgrade() -> None:
    drop_audit_log_v1(op, "scoring_audit_log")
