"""tiering: the tamper-evident audit log (services.common.audit)

Revision ID: tiering_0002
Revises: tiering_0001
"""
import sqlalchemy as sa
from alembic import op

revision = "tiering_0002"
down_revision = "tiering_0001"
branch_labels = None
depends_on = None

# The columns of services.common.audit.audit_table, frozen here as of this revision.
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "tiering_audit_log",
        sa.Column("id", BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("before_json", sa.Text, nullable=False),
        sa.Column("after_json", sa.Text, nullable=False),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_tiering_audit_log_subject", "tiering_audit_log", ["subject"])


def downgrade() -> None:
    op.drop_index("ix_tiering_audit_log_subject", "tiering_audit_log")
    op.drop_table("tiering_audit_log")
