"""Alembic operations for the audit log of services.common.audit.

Migrations must keep meaning what they meant when they ran, so each shape is
a versioned, frozen function: never edit one; a new column is a new function
used by a new revision.
"""
from __future__ import annotations

import sqlalchemy as sa

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def create_audit_log_v1(op, name: str) -> None:
    """The columns of audit_table as of its first release."""
    op.create_table(
        name,
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
    op.create_index(f"ix_{name}_subject", name, ["subject"])


def drop_audit_log_v1(op, name: str) -> None:
    op.drop_index(f"ix_{name}_subject", name)
    op.drop_table(name)
