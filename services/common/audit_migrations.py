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


GENESIS_V2 = "0" * 64
LEGACY_BUCKET_V2 = -1


def bucket_audit_log_v2(op, name: str) -> None:
    """Per-bucket chains (services.common.audit): every record gets a chain
    (`bucket`) and a position in it (`seq`); `<name>_heads` anchors each
    chain's end. Existing records become the legacy chain (bucket -1, seq in
    id order), verifiable as they were written; its head is recorded here,
    and every new chain starts from its last hash."""
    bind = op.get_bind()
    op.add_column(name, sa.Column("bucket", sa.Integer, nullable=True))
    op.add_column(name, sa.Column("seq", sa.BigInteger, nullable=True))
    op.execute(sa.text(
        f"UPDATE {name} SET bucket = {LEGACY_BUCKET_V2}, seq = n.rn "
        f"FROM (SELECT id, row_number() OVER (ORDER BY id) AS rn FROM {name}) AS n WHERE {name}.id = n.id"))
    with op.batch_alter_table(name) as batch:
        batch.alter_column("bucket", existing_type=sa.Integer, nullable=False)
        batch.alter_column("seq", existing_type=sa.BigInteger, nullable=False)
    op.create_index(f"ux_{name}_bucket_seq", name, ["bucket", "seq"], unique=True)
    heads = op.create_table(
        f"{name}_heads",
        sa.Column("bucket", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    count, last = bind.execute(sa.text(
        f"SELECT count(*), (SELECT hash FROM {name} ORDER BY id DESC LIMIT 1) FROM {name}")).one()
    op.bulk_insert(heads, [dict(bucket=LEGACY_BUCKET_V2, seq=int(count), hash=last or GENESIS_V2)])


def unbucket_audit_log_v2(op, name: str) -> None:
    """Back to one chain. Records appended since the upgrade chain per
    bucket, so `kequn audit verify` of the old code reports them broken."""
    op.drop_table(f"{name}_heads")
    op.drop_index(f"ux_{name}_bucket_seq", name)
    with op.batch_alter_table(name) as batch:
        batch.drop_column("seq")
        batch.drop_column("bucket")
