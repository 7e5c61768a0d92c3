"""A tamper-evident audit log: every record hashes the one before it.

    hash = sha256(prev_hash || canonical JSON of the record)

Services call `append_audit` inside the transaction of the mutation it
describes, so the record commits or rolls back with the change. Changing,
inserting or deleting a record breaks the chain at that point, which
`verify_chain` reports (the first bad id). Deleting records from the *end*
cannot be seen from the chain alone: keep the latest hash somewhere else
(`chain_head`) if that matters.

Appends are serialized per table (PostgreSQL: a transaction-level advisory
lock; SQLite: kequn's BEGIN IMMEDIATE already holds the write lock), so two
concurrent transactions never chain onto the same predecessor.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime, timezone
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, String, Table, Text, insert, select, text

GENESIS = "0" * 64
RECORD_FIELDS = ("at", "actor", "action", "subject", "before", "after", "request_id", "reason")


def default_table_name(service: str) -> str:
    """The audit table of a service, by convention (what `kequn audit verify` reads)."""
    return f"{service}_audit_log"


def audit_table(metadata: MetaData, name: str) -> Table:
    """The audit table definition; put it in the service's metadata so
    Alembic autogenerate / op.create_table see it like any other table."""
    return Table(
        name, metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("at", String(40), nullable=False),  # ISO 8601 UTC, hashed as stored
        Column("actor", String(200), nullable=False),
        Column("action", String(100), nullable=False),
        Column("subject", String(300), nullable=False),
        Column("before_json", Text, nullable=False),
        Column("after_json", Text, nullable=False),
        Column("request_id", String(200), nullable=False),
        Column("reason", Text, nullable=False),
        Column("prev_hash", String(64), nullable=False),
        Column("hash", String(64), nullable=False),
        Index(f"ix_{name}_subject", "subject"),
    )


def _default(value: Any):
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
    if isinstance(value, (date, Decimal)):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value, key=str) if isinstance(value, (set, frozenset)) else list(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot put {type(value).__name__} in an audit record")


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8 kept: the same value always gives the same text."""
    return json.dumps(value, default=_default, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_hash(prev_hash: str, record: dict[str, Any]) -> str:
    payload = canonical_json({k: record[k] for k in RECORD_FIELDS})
    return hashlib.sha256((prev_hash + payload).encode("utf-8")).hexdigest()


def _dialect(conn) -> str:
    bind = conn.get_bind() if hasattr(conn, "get_bind") else conn  # Session or Connection
    return bind.dialect.name


def _lock(conn, table: Table) -> None:
    if _dialect(conn) == "postgresql":
        # Held until the caller's transaction ends: the next appender reads
        # our row as its predecessor only after we commit (or roll back).
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"kequn-audit:{table.name}"})


def _last_hash(conn, table: Table) -> str:
    row = conn.execute(select(table.c.hash).order_by(table.c.id.desc()).limit(1)).first()
    return row[0] if row else GENESIS


def _context_defaults(actor: str | None, request_id: str | None) -> tuple[str, str]:
    if actor is None:
        from services.common.auth import current_principal  # only inside an RPC
        try:
            actor = current_principal().name
        except Exception:  # noqa: BLE001 - outside an RPC: a system action
            actor = "system"
    if request_id is None:
        from services.common.logging import current_request_id
        request_id = current_request_id() or ""
    return actor, request_id


def audit_context() -> tuple[str, str]:
    """(actor, request id) of the current call, as append_audit would default
    them: capture it on the caller's thread when the write happens on another."""
    return _context_defaults(None, None)


def _record(actor: str, request_id: str, action: str, subject: str, before: Any, after: Any, reason: str,
            at: datetime | None) -> dict[str, Any]:
    return {
        "at": (at or datetime.now(timezone.utc)).astimezone(timezone.utc).isoformat(timespec="microseconds"),
        "actor": str(actor), "action": str(action), "subject": str(subject),
        "before": json.loads(canonical_json(before)), "after": json.loads(canonical_json(after)),
        "request_id": str(request_id or ""), "reason": str(reason or ""),
    }


def append_audit(conn, table: Table, *, actor: str | None = None, action: str, subject: str,
                 before: Any = None, after: Any = None, request_id: str | None = None,
                 reason: str = "", at: datetime | None = None) -> str:
    """Append one record inside the caller's transaction; returns its hash.

    `conn` is a SQLAlchemy Connection or Session in an open transaction.
    `actor` defaults to the current principal, `request_id` to the current
    x-request-id. `before`/`after` are JSON-able values (Decimal, datetime ok).
    Call it last before commit: on PostgreSQL it holds the table's append
    lock until the transaction ends."""
    return append_audit_many(conn, table, [dict(action=action, subject=subject, before=before, after=after,
                                                reason=reason)], actor=actor, request_id=request_id, at=at)


def append_audit_many(conn, table: Table, entries: list[dict[str, Any]], *, actor: str | None = None,
                      request_id: str | None = None, at: datetime | None = None) -> str:
    """Append several records (dicts with action, subject, before, after,
    reason) in one statement, chained in order; returns the last hash. For
    batches: one lock, one predecessor read and one insert for all of them.
    An entry may carry its own ``actor`` / ``request_id`` (a batch that
    serves several callers at once); the arguments are the default."""
    if not entries:
        return _last_hash(conn, table)
    rows = audit_rows(conn, table, entries, actor=actor, request_id=request_id, at=at)
    conn.execute(insert(table), rows)
    return rows[-1]["hash"]


def audit_rows(conn, table: Table, entries: list[dict[str, Any]], *, actor: str | None = None,
               request_id: str | None = None, at: datetime | None = None) -> list[dict[str, Any]]:
    """What append_audit_many inserts, for a caller that inserts the rows
    itself in the same transaction (e.g. with PostgreSQL COPY for a big
    batch): takes the table's append lock, reads the predecessor and returns
    the chained rows (column name -> value) in order. Insert them all, in
    this order, before the transaction ends."""
    actor, request_id = _context_defaults(actor, request_id)
    records = [_record(e.get("actor", actor), e.get("request_id", request_id), e["action"], e["subject"],
                       e.get("before"), e.get("after"), e.get("reason", ""), at) for e in entries]
    _lock(conn, table)
    prev = _last_hash(conn, table)
    rows = []
    for record in records:
        before_json, after_json = canonical_json(record["before"]), canonical_json(record["after"])
        digest = _hash_of(prev, record, before_json, after_json)
        rows.append(dict(at=record["at"], actor=record["actor"], action=record["action"], subject=record["subject"],
                         before_json=before_json, after_json=after_json, request_id=record["request_id"],
                         reason=record["reason"], prev_hash=prev, hash=digest))
        prev = digest
    return rows


def _hash_of(prev_hash: str, record: dict[str, Any], before_json: str, after_json: str) -> str:
    """record_hash(prev_hash, record), with the already encoded before/after
    spliced in (the same bytes canonical_json gives: keys in sorted order)."""
    s = encode_basestring  # = canonical_json of a str, without json.dumps' set-up per call
    payload = (f'{{"action":{s(record["action"])},"actor":{s(record["actor"])},"after":{after_json},'
               f'"at":{s(record["at"])},"before":{before_json},"reason":{s(record["reason"])},'
               f'"request_id":{s(record["request_id"])},"subject":{s(record["subject"])}}}')
    return hashlib.sha256((prev_hash + payload).encode("utf-8")).hexdigest()


def _record_of(row) -> dict[str, Any]:
    return {"at": row.at, "actor": row.actor, "action": row.action, "subject": row.subject,
            "before": json.loads(row.before_json), "after": json.loads(row.after_json),
            "request_id": row.request_id, "reason": row.reason}


def verify_chain(conn, table: Table, batch: int = 5000) -> tuple[bool, int | None]:
    """(True, None) if every record hashes its predecessor; else (False, id of the first bad record)."""
    prev, last_id = GENESIS, None
    while True:
        q = select(table).order_by(table.c.id).limit(batch)
        if last_id is not None:
            q = q.where(table.c.id > last_id)
        rows = conn.execute(q).fetchall()
        if not rows:
            return True, None
        for row in rows:
            try:
                ok = row.prev_hash == prev and row.hash == record_hash(prev, _record_of(row))
            except (ValueError, TypeError):  # before/after no longer JSON
                ok = False
            if not ok:
                return False, row.id
            prev, last_id = row.hash, row.id


def chain_head(conn, table: Table) -> tuple[int, str]:
    """(number of records, hash of the latest): anchor it elsewhere to detect truncation."""
    count = conn.execute(select(text("count(*)")).select_from(table)).scalar_one()
    return int(count), _last_hash(conn, table)
