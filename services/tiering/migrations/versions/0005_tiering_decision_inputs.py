"""tiering: each decision keeps the input it saw (explain, population simulation)

Revision ID: tiering_0005
Revises: tiering_0004
"""
import sqlalchemy as sa
from alembic import op

revision = "tiering_0005"
down_revision = "tiering_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tiering_decisions") as batch:
        batch.add_column(sa.Column("input", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tiering_decisions") as batch:
        batch.drop_column("input")
