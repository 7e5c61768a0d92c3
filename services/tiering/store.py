"""What tiering stores: decisions (append-only), each customer's current
state, and the change feed.

The feed is gap-free for readers: feed cursors are dense integers assigned
as ``max(cursor) + 1 ...`` while holding a transaction-level lock that is
released only by the commit (PostgreSQL: an advisory lock; SQLite: the write
lock of BEGIN IMMEDIATE). Appends therefore commit in cursor order, and a
reader resuming after cursor C never misses a row committed later with a
smaller cursor.
"""
from __future__ import annotations

import datetime as dt
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import psycopg
from sqlalchemy import (BigInteger, Boolean, Column, DateTime, Index, Integer, MetaData, String, Table, Text, bindparam,
                        func, insert, select, update)
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from services.common.audit import audit_rows, audit_table

from .domain import CustomerState, Decision, Snapshot
from .inputs import encode as decision_input

metadata = MetaData()
_ID = String(100)
_CODE = String(64)
_BIGINT = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrement needs INTEGER

customers = Table(
    "tiering_customers", metadata,
    Column("customer_id", _ID, primary_key=True),
    Column("tier", _CODE, nullable=False),
    Column("segments", Text, nullable=False),   # JSON list, sorted
    Column("flags", Text, nullable=False),      # JSON list, sorted
    Column("home_branch_id", _ID, nullable=False),
    Column("below_count", Integer, nullable=False),
    Column("last_below_as_of", String(10), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("group_keys", Text, nullable=False, server_default="{}"),  # JSON object (TierChange.group_keys)
)

decisions = Table(
    "tiering_decisions", metadata,
    Column("seq", _BIGINT, primary_key=True, autoincrement=True),
    Column("decision_id", String(32), nullable=False, unique=True),
    Column("request_id", String(200), nullable=True, unique=True),
    Column("customer_id", _ID, nullable=False),
    Column("as_of", String(10), nullable=False),
    Column("tier", _CODE, nullable=False),
    Column("previous_tier", _CODE, nullable=False),
    Column("change", String(10), nullable=False),
    Column("segments", Text, nullable=False),
    Column("flags", Text, nullable=False),
    Column("home_branch_id", _ID, nullable=False),
    Column("next_tier", _CODE, nullable=False),
    Column("gap_fen", BigInteger, nullable=False),
    Column("downgrade_pending", Integer, nullable=False),
    Column("ruleset", String(100), nullable=False),
    Column("ruleset_version", Integer, nullable=False),
    Column("fired", Text, nullable=False),      # JSON [[rule_id, ruleset, version], ...]
    Column("decided_at", DateTime(timezone=True), nullable=False),
    Column("cursor", BigInteger, nullable=False),  # feed cursor it appended, 0 = none
    Column("input", Text, nullable=True),          # what it saw (inputs.py); null before tiering_0005
    Index("ix_tiering_decisions_customer_seq", "customer_id", "seq"),
)

changes = Table(
    "tiering_changes", metadata,
    Column("cursor", BigInteger, primary_key=True, autoincrement=False),
    Column("customer_id", _ID, nullable=False, index=True),
    Column("from_tier", _CODE, nullable=False),
    Column("to_tier", _CODE, nullable=False),
    Column("change", String(10), nullable=False),
    Column("segments", Text, nullable=False),
    Column("flags", Text, nullable=False),
    Column("home_branch_id", _ID, nullable=False),
    Column("previous_segments", Text, nullable=False),
    Column("previous_flags", Text, nullable=False),
    Column("previous_home_branch_id", _ID, nullable=False),
    Column("ruleset", String(100), nullable=False),
    Column("ruleset_version", Integer, nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False),
    Column("decision_id", String(32), nullable=False),
    Column("as_of", String(10), nullable=False),
    Column("annual_avg_aum_fen", BigInteger, nullable=False),
    Column("has_personal_loan", Boolean, nullable=False),
    Column("annual_card_spend_fen", BigInteger, nullable=False),
    Column("card_level", _CODE, nullable=False),
    Column("group_keys", Text, nullable=False, server_default="{}"),  # JSON object
    Column("traceparent", String(64), nullable=True),  # W3C trace context of the evaluation
)

audit_log = audit_table(metadata, "tiering_audit_log")

COPY_FROM_ROWS = 50
# Off only to measure what keeping decision inputs costs (bench/tiering_bench.py
# --inputs-overhead); without them ExplainDecision and SimulatePopulation have nothing to work on.
STORE_INPUTS = os.environ.get("KEQUN_TIERING_DECISION_INPUTS", "1") != "0"
FEED_LOCK_KEY = 0x7469657269  # "tieri": the advisory lock serialising feed appends


@dataclass(frozen=True)
class StoredDecision:
    decision: Decision
    decision_id: str
    decided_at: dt.datetime
    cursor: int
    # TierDecision.group_keys: the customer's current keys (reads) or the
    # evaluated snapshot's (evaluations); () when not known (a replay).
    group_keys: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Change:
    cursor: int
    customer_id: str
    from_tier: str
    to_tier: str
    change: str
    segments: tuple[str, ...]
    flags: tuple[str, ...]
    home_branch_id: str
    previous_segments: tuple[str, ...]
    previous_flags: tuple[str, ...]
    previous_home_branch_id: str
    ruleset: str
    ruleset_version: int
    changed_at: dt.datetime
    decision_id: str
    as_of: str
    annual_avg_aum_fen: int
    has_personal_loan: bool
    annual_card_spend_fen: int
    card_level: str
    group_keys: tuple[tuple[str, str], ...] = ()
    traceparent: str = ""


def _codes(text_value: str) -> tuple[str, ...]:
    return tuple(json.loads(text_value))


def _keys(text_value: str | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(json.loads(text_value or "{}").items()))


@lru_cache(maxsize=8192)
def _keys_json(pairs: tuple[tuple[str, str], ...]) -> str:
    return json.dumps(dict(pairs), separators=(",", ":"), ensure_ascii=False)


@lru_cache(maxsize=8192)
def _json(values: tuple) -> str:
    """Code lists repeat across millions of customers: encode each once."""
    return json.dumps(values, separators=(",", ":"))


@contextmanager
def _driver_errors():
    """psycopg used directly raises its own errors: wrap them as SQLAlchemy
    would, so a lost database is still UNAVAILABLE and a conflict is retried."""
    try:
        yield
    except psycopg.Error as exc:
        raise sa_exc.DBAPIError.instance(None, None, exc, psycopg.Error) from exc


def _state_json(state: CustomerState | None) -> dict | None:
    if state is None:
        return None
    out = {"tier": state.tier, "segments": list(state.segments), "flags": list(state.flags),
           "home_branch_id": state.home_branch_id, "below_count": state.below_count,
           "last_below_as_of": state.last_below_as_of}
    if state.group_keys:
        out["group_keys"] = dict(state.group_keys)
    return out


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _decision_from_row(row, group_keys: str | None = None) -> StoredDecision:
    d = Decision(
        customer_id=row.customer_id, as_of=row.as_of, tier=row.tier, previous_tier=row.previous_tier,
        change=row.change, segments=_codes(row.segments), flags=_codes(row.flags),
        home_branch_id=row.home_branch_id, next_tier=row.next_tier, gap_fen=row.gap_fen,
        downgrade_pending=row.downgrade_pending, ruleset=row.ruleset, ruleset_version=row.ruleset_version,
        fired=tuple(tuple(f) for f in json.loads(row.fired)),
    )
    return StoredDecision(d, row.decision_id, _aware(row.decided_at), row.cursor, _keys(group_keys))


# What a decision read returns: every column but its stored input, which only
# ExplainDecision and SimulatePopulation read (it is the widest column).
_DECISION_COLUMNS = tuple(c for c in decisions.columns if c.name != "input")

# The latest decision and, joined in the same statement, the group keys kept
# with the customer's state (written in the same transaction as that decision).
_LATEST_DECISION_SQL = ("SELECT " + ", ".join(f"d.{c.name}" for c in _DECISION_COLUMNS)
                        + ", c.group_keys AS customer_group_keys FROM tiering_decisions d"
                        " LEFT JOIN tiering_customers c ON c.customer_id = d.customer_id"
                        " WHERE d.customer_id = %s ORDER BY d.seq DESC LIMIT 1")


def latest_decision_pg(conn, customer_id: str) -> StoredDecision | None:
    """latest_decision on PostgreSQL through the driver, on an autocommit
    connection (db.read_connection): GetCustomerTier is the read benefits
    makes for every customer it has no fresh profile for, and SQLAlchemy's
    statement caching, result processing and the transaction round trips
    were most of its cost. One statement, prepared by psycopg after a few
    calls, one round trip; the customer's group keys come by a join in
    that same statement."""
    from psycopg.rows import namedtuple_row
    with _driver_errors(), conn.connection.driver_connection.cursor(row_factory=namedtuple_row) as cur:
        cur.execute(_LATEST_DECISION_SQL, (customer_id,))
        row = cur.fetchone()
    return _decision_from_row(row, row.customer_group_keys) if row else None


def _change_from_row(row) -> Change:
    return Change(
        cursor=row.cursor, customer_id=row.customer_id, from_tier=row.from_tier, to_tier=row.to_tier,
        change=row.change, segments=_codes(row.segments), flags=_codes(row.flags),
        home_branch_id=row.home_branch_id, previous_segments=_codes(row.previous_segments),
        previous_flags=_codes(row.previous_flags), previous_home_branch_id=row.previous_home_branch_id,
        ruleset=row.ruleset, ruleset_version=row.ruleset_version, changed_at=_aware(row.changed_at),
        decision_id=row.decision_id, as_of=row.as_of, annual_avg_aum_fen=row.annual_avg_aum_fen,
        has_personal_loan=row.has_personal_loan, annual_card_spend_fen=row.annual_card_spend_fen,
        card_level=row.card_level, group_keys=_keys(row.group_keys), traceparent=row.traceparent or "",
    )


@dataclass
class PendingWrite:
    """One evaluation to store: the decision, the state before and after."""

    snapshot: Snapshot
    decision: Decision
    decision_id: str
    request_id: str | None
    before: CustomerState | None
    after: CustomerState
    to_feed: bool
    origin: tuple[str, str] = ("system", "")   # (actor, x-request-id) of the caller, for the audit log
    cursor: int = 0
    traceparent: str = ""  # the evaluating call's trace context, kept with its feed entry
    groups: tuple[str, int] = ("", 0)          # the groups ruleset version that decided, for the stored input


class TieringRepository:
    """Queries and writes inside one session (one unit of work)."""

    def __init__(self, session: Session):
        self.session = session
        self.postgres = session.get_bind().dialect.name == "postgresql"

    # ------------------------------------------------------------ reads
    def states(self, customer_ids: Sequence[str], for_update: bool) -> dict[str, CustomerState]:
        if not customer_ids:
            return {}
        if self.postgres:  # the driver directly: this runs for every unary call and chunk
            # Sorted, so two batches sharing customers lock them in the same order.
            with _driver_errors(), self._raw().cursor() as cur:
                cur.execute("SELECT customer_id, tier, segments, flags, home_branch_id, below_count, last_below_as_of,"
                            " group_keys FROM tiering_customers WHERE customer_id = ANY(%s) ORDER BY customer_id"
                            + (" FOR UPDATE" if for_update else ""), (sorted(set(customer_ids)),))
                return {row[0]: CustomerState(row[0], row[1], _codes(row[2]), _codes(row[3]), row[4], row[5], row[6],
                                              _keys(row[7]))
                        for row in cur.fetchall()}
        query = select(customers).where(customers.c.customer_id.in_(sorted(set(customer_ids))))
        return {
            row.customer_id: CustomerState(row.customer_id, row.tier, _codes(row.segments), _codes(row.flags),
                                           row.home_branch_id, row.below_count, row.last_below_as_of,
                                           _keys(row.group_keys))
            for row in self.session.execute(query)
        }

    def decisions_by_request(self, request_ids: Sequence[str]) -> dict[str, StoredDecision]:
        if not request_ids:
            return {}
        rows = self.session.execute(select(*_DECISION_COLUMNS).where(decisions.c.request_id.in_(set(request_ids))))
        return {row.request_id: _decision_from_row(row) for row in rows}

    def latest_decision(self, customer_id: str) -> StoredDecision | None:
        row = self.session.execute(
            select(*_DECISION_COLUMNS, customers.c.group_keys.label("customer_group_keys"))
            .select_from(decisions.outerjoin(customers, customers.c.customer_id == decisions.c.customer_id))
            .where(decisions.c.customer_id == customer_id)
            .order_by(decisions.c.seq.desc()).limit(1)).first()
        return _decision_from_row(row, row.customer_group_keys) if row else None

    def changes(self, after_cursor: int, limit: int, customer_id: str = "") -> list[Change]:
        query = select(changes).where(changes.c.cursor > after_cursor)
        if customer_id:
            query = query.where(changes.c.customer_id == customer_id)
        rows = self.session.execute(query.order_by(changes.c.cursor).limit(limit))
        return [_change_from_row(row) for row in rows]

    def max_cursor(self) -> int:
        return int(self.session.execute(select(func.coalesce(func.max(changes.c.cursor), 0))).scalar_one())

    # ------------------------------------------------------------ writes
    def write(self, items: Sequence[PendingWrite], now: dt.datetime) -> None:
        """Stores a chunk: customer states, decisions, the feed entries and
        the audit records (last, so the feed and audit locks are held for as
        short a time as possible)."""
        if not items:
            return
        with _driver_errors():
            self._write(items, now)

    def _write(self, items: Sequence[PendingWrite], now: dt.datetime) -> None:
        final: dict[str, PendingWrite] = {}
        first_before: dict[str, CustomerState | None] = {}
        for item in items:
            first_before.setdefault(item.after.customer_id, item.before)
            final[item.after.customer_id] = item
        new_rows, changed_rows = [], []
        for customer_id, item in final.items():
            before, after = first_before[customer_id], item.after
            row = {"customer_id": customer_id, "tier": after.tier, "segments": _json(after.segments),
                   "flags": _json(after.flags), "home_branch_id": after.home_branch_id,
                   "below_count": after.below_count, "last_below_as_of": after.last_below_as_of,
                   "updated_at": now, "group_keys": _keys_json(after.group_keys)}
            if before is None:
                new_rows.append(row)
            elif before != after:  # an unchanged customer costs no UPDATE
                changed_rows.append({**row, "b_customer_id": customer_id})
        if new_rows:
            self._bulk_insert(customers, new_rows)
        if changed_rows:
            self.session.execute(
                update(customers).where(customers.c.customer_id == bindparam("b_customer_id")),
                changed_rows)
        feed = [item for item in items if item.to_feed]
        if feed:
            cursor = self._lock_feed_and_read_cursor()
            for item in feed:
                cursor += 1
                item.cursor = cursor
        self._bulk_insert(decisions, [self._decision_row(item, now) for item in items])
        if feed:
            self._bulk_insert(changes, [self._change_row(item, now) for item in feed])
        # Last: the audit append holds its chains' head-row locks until commit.
        audited = [self._audit_entry(item) for item in items if item.before != item.after]
        if audited:
            self._bulk_insert(audit_log, audit_rows(self.session, audit_log, audited, at=now))

    def _bulk_insert(self, table: Table, rows: list[dict]) -> None:
        """PostgreSQL: COPY for batch-sized writes (several times faster than
        multi-row INSERT; its set-up costs more than a small INSERT, so not for
        a unary call), else psycopg's pipelined executemany. SQLite: SQLAlchemy
        executemany. Same transaction either way."""
        if not self.postgres:
            self.session.execute(insert(table), rows)
            return
        columns = [c.name for c in table.columns if c.name in rows[0]]
        quoted = ", ".join(f'"{c}"' for c in columns)
        with self._raw().cursor() as cur:
            if len(rows) < COPY_FROM_ROWS:  # psycopg pipelines executemany: one round trip
                cur.executemany(f"INSERT INTO {table.name} ({quoted}) VALUES ({', '.join(['%s'] * len(columns))})",
                                [[row[c] for c in columns] for row in rows])
                return
            with cur.copy(f"COPY {table.name} ({quoted}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row([row[c] for c in columns])

    def _raw(self):
        """The psycopg connection under the session, in the session's transaction."""
        return self.session.connection().connection.driver_connection

    def _lock_feed_and_read_cursor(self) -> int:
        """Takes the feed lock, then reads the last cursor (a statement after
        the lock: its snapshot sees every append committed before)."""
        if not self.postgres:
            return self.max_cursor()
        with self._raw().cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (FEED_LOCK_KEY,))
            cur.execute("SELECT coalesce(max(cursor), 0) FROM tiering_changes")
            return int(cur.fetchone()[0])

    @staticmethod
    def _audit_entry(item: PendingWrite) -> dict:
        """One record per stored evaluation that changed the customer's
        state (new, tier, groups, flags, home branch or grace counter)."""
        d = item.decision
        return {"action": "customer_tier.update" if item.before else "customer_tier.create",
                "subject": f"customer/{d.customer_id}", "before": _state_json(item.before),
                "after": _state_json(item.after), "actor": item.origin[0], "request_id": item.origin[1],
                "reason": f"decision {item.decision_id} ({d.change}, as_of {d.as_of})"}

    @staticmethod
    def _decision_row(item: PendingWrite, now: dt.datetime) -> dict:
        d = item.decision
        return {"decision_id": item.decision_id, "request_id": item.request_id, "customer_id": d.customer_id,
                "as_of": d.as_of, "tier": d.tier, "previous_tier": d.previous_tier, "change": d.change,
                "segments": _json(d.segments), "flags": _json(d.flags), "home_branch_id": d.home_branch_id,
                "next_tier": d.next_tier, "gap_fen": d.gap_fen, "downgrade_pending": d.downgrade_pending,
                "ruleset": d.ruleset, "ruleset_version": d.ruleset_version, "fired": _json(d.fired),
                "decided_at": now, "cursor": item.cursor,
                "input": decision_input(item.snapshot, item.before, item.groups, item.after.group_keys) if STORE_INPUTS else None}

    @staticmethod
    def _change_row(item: PendingWrite, now: dt.datetime) -> dict:
        d, s, before = item.decision, item.snapshot, item.before
        return {"cursor": item.cursor, "customer_id": d.customer_id, "from_tier": d.previous_tier,
                "to_tier": d.tier, "change": d.change, "segments": _json(d.segments), "flags": _json(d.flags),
                "home_branch_id": d.home_branch_id,
                "previous_segments": _json(before.segments if before else ()),
                "previous_flags": _json(before.flags if before else ()),
                "previous_home_branch_id": before.home_branch_id if before else "",
                "ruleset": d.ruleset, "ruleset_version": d.ruleset_version, "changed_at": now,
                "decision_id": item.decision_id, "as_of": d.as_of, "annual_avg_aum_fen": s.annual_avg_aum_fen,
                "has_personal_loan": s.has_personal_loan, "annual_card_spend_fen": s.annual_card_spend_fen,
                "card_level": s.card_level, "group_keys": _keys_json(item.after.group_keys),
                "traceparent": item.traceparent or None}
