"""one audit trail: the hash-chained assignment_audit_log

The rows of assignment_audit_events move into the chain in their order (their
actor, request id and time kept), then the old table goes: ListAuditEvents
and `kequn audit verify --service assignment` read the same table.

Revision ID: assignment_0002
Revises: assignment_0001
"""
from datetime import datetime, timezone
import json

from alembic import op
import sqlalchemy as sa

from services.common.audit import GENESIS, canonical_json, record_hash

revision = 'assignment_0002'
down_revision = 'assignment_0001'
branch_labels = None
depends_on = None

BATCH = 5000


def _log_table():
    return sa.table('assignment_audit_log', *(sa.column(c) for c in (
        'id', 'at', 'actor', 'action', 'subject', 'before_json', 'after_json', 'request_id', 'reason',
        'prev_hash', 'hash')))


def _old_table(at_type=None):
    return sa.table('assignment_audit_events', sa.column('at', at_type), *(sa.column(c) for c in (
        'event_id', 'actor', 'action', 'subject', 'before_json', 'after_json', 'reason', 'request_id')))


def _iso(at) -> str:
    if isinstance(at, str):  # SQLite without type affinity
        at = datetime.fromisoformat(at)
    at = at if at.tzinfo else at.replace(tzinfo=timezone.utc)
    return at.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _batches(conn, table, key):
    last = None
    while True:
        q = sa.select(table).order_by(key).limit(BATCH)
        if last is not None:
            q = q.where(key > last)
        rows = conn.execute(q).fetchall()
        if not rows:
            return
        yield rows
        last = rows[-1]._mapping[key.name]


def upgrade() -> None:
    op.create_table('assignment_audit_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', sa.String(length=40), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('action', sa.String(length=100), nullable=False),
    sa.Column('subject', sa.String(length=300), nullable=False),
    sa.Column('before_json', sa.Text(), nullable=False),
    sa.Column('after_json', sa.Text(), nullable=False),
    sa.Column('request_id', sa.String(length=200), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('assignment_audit_log', schema=None) as batch_op:
        batch_op.create_index('ix_assignment_audit_log_subject', ['subject'], unique=False)

    conn, old, log = op.get_bind(), _old_table(), _log_table()
    prev = GENESIS
    for rows in _batches(conn, old, old.c.event_id):
        out = []
        for r in rows:
            record = {"at": _iso(r.at), "actor": r.actor, "action": r.action, "subject": r.subject,
                      "before": json.loads(r.before_json) if r.before_json else None,
                      "after": json.loads(r.after_json) if r.after_json else None,
                      "request_id": r.request_id or "", "reason": r.reason or ""}
            digest = record_hash(prev, record)
            out.append({"at": record["at"], "actor": record["actor"], "action": record["action"],
                        "subject": record["subject"], "before_json": canonical_json(record["before"]),
                        "after_json": canonical_json(record["after"]), "request_id": record["request_id"],
                        "reason": record["reason"], "prev_hash": prev, "hash": digest})
            prev = digest
        conn.execute(sa.insert(log), out)

    with op.batch_alter_table('assignment_audit_events', schema=None) as batch_op:
        batch_op.drop_index('ix_assignment_audit_subject')
    op.drop_table('assignment_audit_events')


def downgrade() -> None:
    op.create_table('assignment_audit_events',
    sa.Column('event_id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.String(length=200), nullable=False),
    sa.Column('before_json', sa.Text(), server_default='', nullable=False),
    sa.Column('after_json', sa.Text(), server_default='', nullable=False),
    sa.Column('reason', sa.Text(), server_default='', nullable=False),
    sa.Column('request_id', sa.String(length=200), server_default='', nullable=False),
    sa.PrimaryKeyConstraint('event_id')
    )
    with op.batch_alter_table('assignment_audit_events', schema=None) as batch_op:
        batch_op.create_index('ix_assignment_audit_subject', ['subject'], unique=False)

    conn, old, log = op.get_bind(), _old_table(sa.DateTime(timezone=True)), _log_table()
    for rows in _batches(conn, log, log.c.id):
        conn.execute(sa.insert(old), [
            {"at": datetime.fromisoformat(r.at), "actor": r.actor, "action": r.action[:64],
             "subject": r.subject[:200], "before_json": "" if r.before_json == "null" else r.before_json,
             "after_json": "" if r.after_json == "null" else r.after_json, "reason": r.reason,
             "request_id": r.request_id} for r in rows])

    with op.batch_alter_table('assignment_audit_log', schema=None) as batch_op:
        batch_op.drop_index('ix_assignment_audit_log_subject')
    op.drop_table('assignment_audit_log')
