"""benefits: the tamper-evident audit log (services.common.audit)

Revision ID: benefits_0002
Revises: benefits_0001
"""
from alembic import op

from services.common.audit_migrations import create_audit_log_v1, drop_audit_log_v1

revision = "benefits_0002"
down_revision = "benefits_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_audit_log_v1(op, "benefits_audit_log")


def downgrade() -> None:
    drop_audit_log_v1(op, "benefits_audit_log")
