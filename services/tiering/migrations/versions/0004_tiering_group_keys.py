"""tiering: group keys on the customer state and the change feed
(TierChange.group_keys: payroll employer, merchant market, declared attributes)

Revision ID: tiering_0004
Revises: tiering_0003
"""
import sqlalchemy as sa
from alembic import op

revision = "tiering_0004"
down_revision = "tiering_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("tiering_customers", "tiering_changes"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("group_keys", sa.Text(), nullable=False, server_default="{}"))


def downgrade() -> None:
    for table in ("tiering_changes", "tiering_customers"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("group_keys")
