"""rule store: four-eyes releases with effective dates, per-ruleset release policy

Revision ID: rules_0002
Revises: rules_0001
"""
import sqlalchemy as sa
from alembic import op

revision = "rules_0002"
down_revision = "rules_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rules_releases",
        sa.Column("release_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True)),
        sa.Column("decided_by", sa.String(200)),
        sa.Column("decided_at", sa.DateTime(timezone=True)),
        sa.Column("decision_comment", sa.Text),
        sa.Column("activated_at", sa.DateTime(timezone=True)),
        sa.Column("request_id", sa.String(200), unique=True),
        sa.ForeignKeyConstraint(["name", "version"], ["rules_versions.name", "rules_versions.version"]),
    )
    op.create_index("ix_rules_releases_status_effective", "rules_releases", ["status", "effective_from"])
    op.create_index("ix_rules_releases_name", "rules_releases", ["name"])
    op.create_table(
        "rules_policies",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("four_eyes", sa.Boolean, nullable=False),
        sa.Column("set_by", sa.String(200), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rules_policies")
    op.drop_index("ix_rules_releases_name", "rules_releases")
    op.drop_index("ix_rules_releases_status_effective", "rules_releases")
    op.drop_table("rules_releases")
