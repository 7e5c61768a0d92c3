"""scoring tables: periods, staff, values, role state, results, requests

Revision ID: scoring_0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "scoring_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scoring_periods",
        sa.Column("period_id", sa.String(64), primary_key=True),
        sa.Column("starts_on", sa.String(10), nullable=False),
        sa.Column("ends_on", sa.String(10), nullable=False),
        sa.Column("due_on", sa.String(10), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("finalized_at", sa.DateTime(timezone=True)),
        sa.Column("finalized_by", sa.String(128)),
    )
    op.create_table(
        "scoring_staff",
        sa.Column("period_id", sa.String(64), primary_key=True),
        sa.Column("staff_id", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(64), nullable=False),
        sa.Column("branch_id", sa.String(64), nullable=False),
    )
    op.create_index("ix_scoring_staff_role", "scoring_staff", ["period_id", "role", "branch_id"])
    op.create_table(
        "scoring_values",
        sa.Column("period_id", sa.String(64), primary_key=True),
        sa.Column("staff_id", sa.String(64), primary_key=True),
        sa.Column("input_key", sa.String(130), primary_key=True),
        sa.Column("value", sa.String(40), nullable=False),
        sa.Column("is_rating", sa.Boolean, nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("entered_by", sa.String(128), nullable=False),
        sa.Column("entered_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "scoring_role_state",
        sa.Column("period_id", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(64), primary_key=True),
        sa.Column("stale", sa.Boolean, nullable=False),
        sa.Column("calculated_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "scoring_results",
        sa.Column("period_id", sa.String(64), primary_key=True),
        sa.Column("staff_id", sa.String(64), primary_key=True),
        sa.Column("revision", sa.Integer, primary_key=True),
        sa.Column("is_latest", sa.Boolean, nullable=False),
        sa.Column("role", sa.String(64), nullable=False),
        sa.Column("branch_id", sa.String(64), nullable=False),
        sa.Column("peer_group", sa.String(64), nullable=False),
        sa.Column("total", sa.String(40), nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("peer_group_size", sa.Integer, nullable=False),
        sa.Column("scorecard_name", sa.String(100), nullable=False),
        sa.Column("scorecard_version", sa.Integer, nullable=False),
        sa.Column("breakdown", sa.Text, nullable=False),
        sa.Column("book_size", sa.Integer),
        sa.Column("corrections", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("revised_by", sa.String(128), nullable=False),
        sa.Column("calculated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_scoring_results_page", "scoring_results",
                    ["period_id", "is_latest", "role", "branch_id", "staff_id"])
    op.create_table(
        "scoring_peer_stats",
        sa.Column("period_id", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(64), primary_key=True),
        sa.Column("peer_group", sa.String(64), primary_key=True),
        sa.Column("indicator_id", sa.String(64), primary_key=True),
        sa.Column("mean", sa.String(80), nullable=False),
        sa.Column("stddev", sa.String(80), nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
    )
    op.create_table(
        "scoring_requests",
        sa.Column("method", sa.String(64), primary_key=True),
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("response", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    for table in ("scoring_requests", "scoring_peer_stats", "scoring_results", "scoring_role_state", "scoring_values",
                  "scoring_staff", "scoring_periods"):
        op.drop_table(table)
