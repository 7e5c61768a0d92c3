"""A tamper-evident audit log: per-bucket hash chains with anchored heads.

    hash = sha256(prev_hash || canonical JSON of the record)

Services call `append_audit` inside the transaction of the mutation it
describes, so the record commits or rolls back with the change.

One chain per table would make every commit of a service wait for the one
before it (the chain's head is a single point everybody appends to). So the
log is split into BUCKETS chains: a record goes to bucket crc32(subject) mod
BUCKETS and carries its bucket and its position `seq` in that chain. Each
bucket's head (seq, hash of its last record) is a row of `<table>_heads`,
locked FOR UPDATE from append to commit: appends to one bucket are
serialized, appends to different buckets run in parallel, and the unique
(bucket, seq) index refuses a fork even if the lock were bypassed.

The heads table anchors the chains: `verify_audit` checks each chain link
by link *and* that it ends exactly at its head, so changing, inserting or
deleting a record anywhere, or cutting records off the end of a chain, is
reported. (Whoever can rewrite both the log and its heads can forge
anything; publish `chain_head`'s digest elsewhere to defend against that.)

Records written before the buckets existed form the legacy chain (bucket
LEGACY_BUCKET = -1, verified as before); every bucket chain starts from the
legacy chain's last hash, so cutting its tail is detected too.

SQLite has no row locks: kequn's BEGIN IMMEDIATE already serializes writers.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any

from sqlalchemy import (BigInteger, Column, Index, Integer, MetaData, String, Table, Text, bindparam, func, insert,
                        select, update)

GENESIS = "0" * 64
# Chains per audit table. Changing it re-buckets subjects: only with a
# migration that closes the old buckets (their heads stay, verifiable).
BUCKETS = 16
LEGACY_BUCKET = -1  # records from before the buckets: one chain, as they were written
RECORD_FIELDS = ("at", "actor", "action", "subject", "before", "after", "request_id", "reason")


def default_table_name(service: str) -> str:
    """The audit table of a service, by convention (what `kequn audit verify` reads)."""
    return f"{service}_audit_log"


def audit_table(metadata: MetaData, name: str) -> Table:
    """The audit table definition (and its heads table, `<name>_heads`, in
    the same metadata); put it in the service's metadata so Alembic
    autogenerate / op.create_table see it like any other table."""
    table = Table(
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
        Column("bucket", Integer, nullable=False),
        Column("seq", BigInteger, nullable=False),  # 1, 2, ... within the bucket
        Index(f"ix_{name}_subject", "subject"),
        Index(f"ux_{name}_bucket_seq", "bucket", "seq", unique=True),
    )
    heads_table(metadata, name)
    return table


def heads_table(metadata: MetaData, name: str) -> Table:
    """One row per chain: its length and the hash of its last record."""
    heads = f"{name}_heads"
    if heads in metadata.tables:
        return metadata.tables[heads]
    return Table(
        heads, metadata,
        Column("bucket", Integer, primary_key=True, autoincrement=False),
        Column("seq", BigInteger, nullable=False),
        Column("hash", String(64), nullable=False),
    )


def _heads_of(table: Table) -> Table:
    return heads_table(table.metadata, table.name)


def bucket_of(subject: str) -> int:
    return zlib.crc32(subject.encode("utf-8")) % BUCKETS


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


def _genesis(conn, heads: Table) -> str:
    """Where a new bucket chain starts: the legacy chain's last hash."""
    row = conn.execute(select(heads.c.hash).where(heads.c.bucket == LEGACY_BUCKET)).first()
    return row[0] if row else GENESIS


def _driver(conn):
    """The psycopg connection under a PostgreSQL Session/Connection, else None.
    Every unary write appends: the heads' lock and update go through the
    driver directly (SQLAlchemy's statement handling was ~40 % of an append)."""
    if _dialect(conn) != "postgresql":
        return None
    connection = conn.connection() if callable(getattr(conn, "connection", None)) else conn
    return connection.connection.driver_connection


def _pg_call(fn):
    """Driver errors as SQLAlchemy would raise them: a lost database stays
    UNAVAILABLE and a lost race is still retried."""
    import psycopg
    from sqlalchemy import exc as sa_exc
    try:
        return fn()
    except psycopg.Error as exc:
        raise sa_exc.DBAPIError.instance(None, None, exc, psycopg.Error) from exc


def _lock_heads_pg(raw, heads: Table, buckets: list[int]) -> dict[int, tuple[int, str]]:
    sql = f"SELECT bucket, seq, hash FROM {heads.name} WHERE bucket = ANY(%s) ORDER BY bucket FOR UPDATE"

    def run():
        with raw.cursor() as cur:
            cur.execute(sql, (buckets,))
            found = {b: (seq, h) for b, seq, h in cur.fetchall()}
            missing = [b for b in buckets if b not in found]
            if missing:  # a chain's first record ever: create its head, then lock it
                cur.execute(f"SELECT hash FROM {heads.name} WHERE bucket = %s", (LEGACY_BUCKET,))
                legacy = cur.fetchone()
                cur.executemany(f"INSERT INTO {heads.name} (bucket, seq, hash) VALUES (%s, 0, %s) "
                                "ON CONFLICT (bucket) DO NOTHING", [(b, legacy[0] if legacy else GENESIS)
                                                                    for b in missing])
                cur.execute(sql, (buckets,))
                found = {b: (seq, h) for b, seq, h in cur.fetchall()}
            return found
    return _pg_call(run)


def _move_heads(conn, raw, heads: Table, state: dict[int, tuple[int, str]], moved: list[int]) -> None:
    if raw is None:
        conn.execute(update(heads).where(heads.c.bucket == bindparam("b"))
                     .values(seq=bindparam("s"), hash=bindparam("h")),
                     [dict(b=b, s=state[b][0], h=state[b][1]) for b in moved])
        return

    def run():
        with raw.cursor() as cur:
            cur.execute(f"UPDATE {heads.name} AS h SET seq = v.seq, hash = v.hash FROM "
                        "unnest(%s::int[], %s::bigint[], %s::text[]) AS v(bucket, seq, hash) WHERE h.bucket = v.bucket",
                        ([b for b in moved], [state[b][0] for b in moved], [state[b][1] for b in moved]))
    _pg_call(run)


def _lock_heads(conn, heads: Table, buckets: list[int]) -> dict[int, tuple[int, str]]:
    """{bucket: (seq, hash)} of `buckets`, their rows locked until the
    transaction ends (in bucket order, so two appenders never deadlock)."""
    raw = _driver(conn)
    if raw is not None:
        return _lock_heads_pg(raw, heads, buckets)
    q = select(heads.c.bucket, heads.c.seq, heads.c.hash).where(heads.c.bucket.in_(buckets)) \
        .order_by(heads.c.bucket).with_for_update()
    found = {b: (seq, h) for b, seq, h in conn.execute(q)}
    missing = [b for b in buckets if b not in found]
    if missing:  # a chain's first record ever: create its head, then lock it
        genesis = _genesis(conn, heads)
        if _dialect(conn) == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as upsert
        else:
            from sqlalchemy.dialects.sqlite import insert as upsert
        conn.execute(upsert(heads).on_conflict_do_nothing(index_elements=["bucket"]),
                     [dict(bucket=b, seq=0, hash=genesis) for b in missing])
        found = {b: (seq, h) for b, seq, h in conn.execute(q)}
    return found


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
    Call it last before commit: on PostgreSQL it holds the lock of the
    record's chain (bucket) until the transaction ends."""
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
        return ""
    rows = audit_rows(conn, table, entries, actor=actor, request_id=request_id, at=at)
    conn.execute(insert(table), rows)
    return rows[-1]["hash"]


def audit_rows(conn, table: Table, entries: list[dict[str, Any]], *, actor: str | None = None,
               request_id: str | None = None, at: datetime | None = None) -> list[dict[str, Any]]:
    """What append_audit_many inserts, for a caller that inserts the rows
    itself in the same transaction (e.g. with PostgreSQL COPY for a big
    batch): locks the heads of the chains the entries go to, moves them on
    and returns the chained rows (column name -> value) in order. Insert
    them all before the transaction ends."""
    actor, request_id = _context_defaults(actor, request_id)
    records = [_record(e.get("actor", actor), e.get("request_id", request_id), e["action"], e["subject"],
                       e.get("before"), e.get("after"), e.get("reason", ""), at) for e in entries]
    buckets = [bucket_of(r["subject"]) for r in records]
    heads = _heads_of(table)
    state = _lock_heads(conn, heads, sorted(set(buckets)))
    rows = []
    for record, bucket in zip(records, buckets):
        seq, prev = state[bucket]
        before_json, after_json = canonical_json(record["before"]), canonical_json(record["after"])
        digest = _hash_of(prev, record, before_json, after_json)
        rows.append(dict(at=record["at"], actor=record["actor"], action=record["action"], subject=record["subject"],
                         before_json=before_json, after_json=after_json, request_id=record["request_id"],
                         reason=record["reason"], prev_hash=prev, hash=digest, bucket=bucket, seq=seq + 1))
        state[bucket] = (seq + 1, digest)
    _move_heads(conn, _driver(conn), heads, state, sorted(set(buckets)))
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


@dataclass(frozen=True)
class Verdict:
    ok: bool
    bad_id: int | None = None  # the first record that does not chain (None: a chain's end is missing)
    bucket: int | None = None
    problem: str = ""


def verify_audit(conn, table: Table, batch: int = 5000) -> Verdict:
    """Check every chain record by record and that it ends at its anchored
    head; the first broken chain's verdict (verify_chains, unbounded)."""
    if conn.execute(select(table.c.id).where(table.c.bucket.is_(None)).limit(1)).first():
        bad = conn.execute(select(func.min(table.c.id)).where(table.c.bucket.is_(None))).scalar_one()
        return Verdict(False, bad, None, f"record {bad} belongs to no chain")
    broken = next((c for c in verify_chains(conn, table, batch=batch).chains if c.state == BROKEN), None)
    return Verdict(True) if broken is None else Verdict(False, broken.bad_id, broken.bucket, broken.problem)


def verify_chain(conn, table: Table, batch: int = 5000) -> tuple[bool, int | None]:
    """(True, None) if every chain is intact and ends at its head; else
    (False, id of the first bad record, or of the last record before a cut
    end, or None when a whole chain is gone). verify_audit says more."""
    v = verify_audit(conn, table, batch)
    return v.ok, v.bad_id


def chain_head(conn, table: Table) -> tuple[int, str]:
    """(number of records, digest of every chain's head): publish it
    elsewhere to detect a rewrite of the log together with its heads."""
    count = conn.execute(select(func.count()).select_from(table)).scalar_one()
    return int(count), heads_digest(conn, table)[1]


def events_query(table: Table, before_id: int | None = None, subject: str = "", actor: str = "",
                 action: str = "", start_iso: str = "", end_iso: str = ""):
    """A page of the log for ListAuditEvents, newest first: equal to the
    given subject/actor/action, ``start_iso`` <= at < ``end_iso`` (``at`` is
    ISO 8601 UTC text, which sorts like time), ids below ``before_id``."""
    q = select(table)
    for col, value in ((table.c.subject, subject), (table.c.actor, actor), (table.c.action, action)):
        if value:
            q = q.where(col == value)
    if start_iso:
        q = q.where(table.c.at >= start_iso)
    if end_iso:
        q = q.where(table.c.at < end_iso)
    if before_id is not None:
        q = q.where(table.c.id < before_id)
    return q.order_by(table.c.id.desc())


# --- per-chain verification, bounded (AuditService.VerifyAuditChain) -------------------------

OK, BROKEN, NOT_CHECKED = "ok", "broken", "not_checked"


@dataclass(frozen=True)
class ChainResult:
    bucket: int
    state: str  # OK, BROKEN or NOT_CHECKED
    checked: int  # records of this chain looked at
    head_seq: int  # the chain's length according to its anchored head
    bad_id: int | None = None  # BROKEN: first bad record, or the last one before a cut end
    problem: str = ""


@dataclass(frozen=True)
class ChainsReport:
    chains: list[ChainResult]
    checked: int

    @property
    def complete(self) -> bool:
        return all(c.state != NOT_CHECKED for c in self.chains)

    @property
    def ok(self) -> bool:
        return all(c.state == OK for c in self.chains)


@contextmanager
def snapshot(engine) -> Iterator[Any]:
    """A connection that sees the log and its heads as of one instant for a
    whole walk: records a live service appends meanwhile would otherwise lie
    "beyond the head" read at the start. PostgreSQL: a REPEATABLE READ
    transaction; SQLite (WAL): a deferred read transaction."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
            yield conn
    else:
        with engine.connect().execution_options(sqlite_readonly=True) as conn, conn.begin():
            yield conn


def _headless_buckets(conn, table: Table, heads: dict) -> set[int]:
    """Chains that have records but no head (a forgery, or a head deleted):
    one index probe per possible bucket and one range probe for any other
    number, never a scan of the log."""
    found = {b for b in range(LEGACY_BUCKET, BUCKETS) if b not in heads and conn.execute(
        select(table.c.id).where(table.c.bucket == b).limit(1)).first()}
    strays = conn.execute(select(table.c.bucket).where((table.c.bucket < LEGACY_BUCKET) | (table.c.bucket >= BUCKETS))
                          .order_by(table.c.bucket).limit(100)).scalars()
    return found | set(strays)


def heads_digest(conn, table: Table) -> tuple[int, str]:
    """(records the heads account for, digest of every chain's head), from
    the heads table only: the digest chain_head gives, without counting."""
    heads = conn.execute(select(_heads_of(table)).order_by(_heads_of(table).c.bucket)).fetchall()
    digest = hashlib.sha256("".join(f"{b}:{seq}:{h};" for b, seq, h in heads).encode()).hexdigest()
    return sum(seq for _, seq, _ in heads), digest


def verify_chains(conn, table: Table, *, out_of_time=lambda: False, max_records: int | None = None,
                  batch: int = 2000) -> ChainsReport:
    """Every chain on its own, legacy first: each record must follow its
    predecessor and the chain must end exactly at its anchored head. Unlike
    verify_audit it goes on past a broken chain, so each gets its verdict.
    Bounded for a server: between batches it stops when `out_of_time()` or
    after `max_records`, and the chains it did not finish are NOT_CHECKED."""
    heads = {b: (seq, h) for b, seq, h in conn.execute(select(_heads_of(table)))}
    buckets = sorted(set(heads) | _headless_buckets(conn, table, heads))
    # A bucket chain starts where the legacy chain's anchored head ends (see _lock_heads).
    genesis = heads.get(LEGACY_BUCKET, (0, GENESIS))[1]
    results: list[ChainResult] = []
    total = 0
    for bucket in buckets:
        head_seq, head_hash = heads.get(bucket, (0, GENESIS if bucket == LEGACY_BUCKET else genesis))
        if out_of_time() or (max_records is not None and total >= max_records):
            results.append(ChainResult(bucket, NOT_CHECKED, 0, head_seq))
            continue
        prev, seq, last_id, checked, verdict = (GENESIS if bucket == LEGACY_BUCKET else genesis), 0, None, 0, None
        while verdict is None:
            size = batch if max_records is None else max(0, min(batch, max_records - total))
            if size == 0 or (checked and out_of_time()):
                verdict = ChainResult(bucket, NOT_CHECKED, checked, head_seq)
                break
            rows = conn.execute(select(table).where(table.c.bucket == bucket, table.c.seq > seq)
                                .order_by(table.c.seq).limit(size)).fetchall()
            if not rows:
                break
            for row in rows:
                checked += 1
                total += 1
                if bucket not in heads:
                    verdict = ChainResult(bucket, BROKEN, checked, 0, row.id, f"record {row.id} is in chain {bucket}, "
                                          "which has no anchored head")
                    break
                if row.seq > head_seq:
                    verdict = ChainResult(bucket, BROKEN, checked, head_seq, row.id,
                                          f"record {row.id} (#{row.seq}) lies beyond the head of chain {bucket}, "
                                          f"which ends at #{head_seq}")
                    break
                try:
                    ok = row.seq == seq + 1 and row.prev_hash == prev and row.hash == record_hash(prev, _record_of(row))
                except (ValueError, TypeError):  # before/after no longer JSON
                    ok = False
                if not ok:
                    why = ("a record before it is missing" if row.seq != seq + 1
                           else "its content or hash was changed" if row.prev_hash == prev
                           else "it does not follow the record before it")
                    verdict = ChainResult(bucket, BROKEN, checked, head_seq, row.id,
                                          f"record {row.id} (#{row.seq}) of chain {bucket} does not verify: {why}")
                    break
                prev, seq, last_id = row.hash, row.seq, row.id
            if len(rows) < size:  # the chain's last batch
                break
        if verdict is None:
            if (seq, prev) == (head_seq, head_hash):
                verdict = ChainResult(bucket, OK, checked, head_seq)
            else:
                cut = seq < head_seq
                where = f"after record {last_id} (#{seq})" if last_id is not None else "with no record left"
                verdict = ChainResult(bucket, BROKEN, checked, head_seq, last_id,
                                      f"chain {bucket} ends {where} but its anchored head says #{head_seq}"
                                      + (": records were removed from its end" if cut else
                                         ": its last record is not the one anchored"))
        results.append(verdict)
    return ChainsReport(results, total)
