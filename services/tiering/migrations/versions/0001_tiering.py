"""tiering: customers, decisions, change feed

Revision ID: tiering_0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "tiering_0001"
down_revision = None
branch_labels = None
depends_on = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "tiering_customers",
        sa.Column("customer_id", sa.String(100), primary_key=True),
        sa.Column("tier", sa.String(64), nullable=False),
        sa.Column("segments", sa.Text, nullable=False),
        sa.Column("flags", sa.Text, nullable=False),
        sa.Column("home_branch_id", sa.String(100), nullable=False),
        sa.Column("below_count", sa.Integer, nullable=False),
        sa.Column("last_below_as_of", sa.String(10), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "tiering_decisions",
        sa.Column("seq", BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("decision_id", sa.String(32), nullable=False, unique=True),
        sa.Column("request_id", sa.String(200), nullable=True, unique=True),
        sa.Column("customer_id", sa.String(100), nullable=False),
        sa.Column("as_of", sa.String(10), nullable=False),
        sa.Column("tier", sa.String(64), nullable=False),
        sa.Column("previous_tier", sa.String(64), nullable=False),
        sa.Column("change", sa.String(10), nullable=False),
        sa.Column("segments", sa.Text, nullable=False),
        sa.Column("flags", sa.Text, nullable=False),
        sa.Column("home_branch_id", sa.String(100), nullable=False),
        sa.Column("next_tier", sa.String(64), nullable=False),
        sa.Column("gap_fen", sa.BigInteger, nullable=False),
        sa.Column("downgrade_pending", sa.Integer, nullable=False),
        sa.Column("ruleset", sa.String(100), nullable=False),
        sa.Column("ruleset_version", sa.Integer, nullable=False),
        sa.Column("fired", sa.Text, nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cursor", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_tiering_decisions_customer_seq", "tiering_decisions", ["customer_id", "seq"])
    op.create_table(
        "tiering_changes",
        sa.Column("cursor", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.String(100), nullable=False),
        sa.Column("from_tier", sa.String(64), nullable=False),
        sa.Column("to_tier", sa.String(64), nullable=False),
        sa.Column("change", sa.String(10), nullable=False),
        sa.Column("segments", sa.Text, nullable=False),
        sa.Column("flags", sa.Text, nullable=False),
        sa.Column("home_branch_id", sa.String(100), nullable=False),
        sa.Column("previous_segments", sa.Text, nullable=False),
        sa.Column("previous_flags", sa.Text, nullable=False),
        sa.Column("previous_home_branch_id", sa.String(100), nullable=False),
        sa.Column("ruleset", sa.String(100), nullable=False),
        sa.Column("ruleset_version", sa.Integer, nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decision_id", sa.String(32), nullable=False),
        sa.Column("as_of", sa.String(10), nullable=False),
        sa.Column("annual_avg_aum_fen", sa.BigInteger, nullable=False),
        sa.Column("has_personal_loan", sa.Boolean, nullable=False),
        sa.Column("annual_card_spend_fen", sa.BigInteger, nullable=False),
        sa.Column("card_level", sa.String(64), nullable=False),
    )
    op.create_index("ix_tiering_changes_customer_id", "tiering_changes", ["customer_id"])


def downgrade() -> None:
    op.drop_table("tiering_changes")
    op.drop_index("ix_tiering_decisions_customer_seq", "tiering_decisions")
    op.drop_table("tiering_decisions")
    op.drop_table("tiering_customers")
