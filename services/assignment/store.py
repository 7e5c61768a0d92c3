"""The tables assignment owns, and the few SQL helpers that need the dialect.

Lock order everywhere (so PostgreSQL never deadlocks us): the rows of
`assignment_staff` in staff-id order, then the customer row.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone

from sqlalchemy import (
    BigInteger, Boolean, Column, Connection, DateTime, Index, Integer, MetaData, String, Table, Text,
    UniqueConstraint, func, select, text,
)
from sqlalchemy.dialects import postgresql, sqlite

from services.common.audit import audit_table
from services.common.db import is_postgres

metadata = MetaData()

branches = Table(
    "assignment_branches", metadata,
    Column("branch_id", String(64), primary_key=True),
    Column("parent_branch_id", String(64), nullable=True),
    Column("name", String(200), nullable=False, server_default=""),
    Column("level", String(16), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

staff = Table(
    "assignment_staff", metadata,
    Column("staff_id", String(64), primary_key=True),
    Column("branch_id", String(64), nullable=False),
    Column("role", String(64), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("name", String(200), nullable=False, server_default=""),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_assignment_staff_branch_role", "branch_id", "role"),
)

# What the tiering feed told us, plus the roles the policy asks for.
# `cursor` = feed position of the last change applied; the customer still needs
# an assignment pass while cursor > assigned_cursor.
customers = Table(
    "assignment_customers", metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("tier", String(64), nullable=False),
    Column("segments", Text, nullable=False, server_default=""),  # ",A,B," for LIKE '%,A,%'
    Column("flags", Text, nullable=False, server_default=""),
    Column("home_branch_id", String(64), nullable=False),
    Column("has_personal_loan", Boolean, nullable=False),
    Column("annual_card_spend_fen", BigInteger, nullable=False),
    Column("annual_avg_aum_fen", BigInteger, nullable=False),
    Column("card_level", String(32), nullable=False),
    Column("roles", Text, nullable=False),  # comma-joined, sorted
    Column("policy_version", Integer, nullable=False),
    Column("cursor", BigInteger, nullable=False),
    Column("assigned_cursor", BigInteger, nullable=False, server_default="0"),
    Column("changed_at", DateTime(timezone=True), nullable=True),
    # The keys the customer's groups are claimed by (TierChange.group_keys), JSON.
    Column("group_keys", Text, nullable=False, server_default="{}"),
    # What the last feed entry changed (domain causes: TIER_CHANGE, GROUP_CHANGE,
    # HOME_BRANCH_CHANGE; PERIOD_END after a lock period ended): a suggestion names it.
    Column("change_cause", String(32), nullable=False, server_default=""),
    Index("ix_assignment_customers_home", "home_branch_id"),
)

# One row per (customer, role): a customer can never be in two books of one role.
books = Table(
    "assignment_books", metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("role", String(64), primary_key=True),
    Column("staff_id", String(64), nullable=False),
    Column("since", DateTime(timezone=True), nullable=False),
    Index("ix_assignment_books_staff", "staff_id", "customer_id"),
)

unplaced = Table(
    "assignment_unplaced", metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("role", String(64), primary_key=True),
    Column("reason", String(32), nullable=False),
    Column("branch_id", String(64), nullable=False),
    Column("tier", String(64), nullable=False),
    Column("since", DateTime(timezone=True), nullable=True),  # unplaced without a break since
    Column("tried", Text, nullable=False, server_default=""),  # units tried, comma-joined, nearest first
    Index("ix_assignment_unplaced_reason", "reason"),
)

feed_state = Table(
    "assignment_feed_state", metadata,
    Column("feed", String(64), primary_key=True),
    Column("cursor", BigInteger, nullable=False),
    Column("last_change_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

lock_periods = Table(
    "assignment_lock_periods", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("period_id", String(64), nullable=False),
    Column("branch_id", String(64), nullable=False),
    Column("starts_on", String(10), nullable=False),
    Column("ends_on", String(10), nullable=False),
    Column("status", String(16), nullable=False),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("closed_at", DateTime(timezone=True), nullable=True),
    Column("opened_by", String(200), nullable=False),
    Column("closed_by", String(200), nullable=True),
    # When the end of the period was handled (its pending suggestions expired).
    Column("ended_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("period_id", "branch_id", name="uq_assignment_lock_period_branch"),
)

change_requests = Table(
    "assignment_change_requests", metadata,
    Column("change_request_id", String(40), primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("role", String(64), nullable=False),
    Column("action", String(16), nullable=False),
    Column("from_staff_id", String(64), nullable=True),
    Column("to_staff_id", String(64), nullable=True),
    Column("reason", Text, nullable=False, server_default=""),
    Column("status", String(16), nullable=False),
    Column("requested_by", String(200), nullable=False),
    Column("decided_by", String(200), nullable=True),
    Column("decision_comment", Text, nullable=True),
    Column("decision_request_id", String(200), nullable=True),
    Column("suggested", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("branch_id", String(64), nullable=False),
    Column("period_id", String(64), nullable=True),
    Column("request_id", String(200), nullable=True),
    Column("cause", String(32), nullable=False, server_default=""),
    Column("superseded_by", String(64), nullable=True),
    UniqueConstraint("requested_by", "request_id", name="uq_assignment_cr_request"),
    Index("ix_assignment_cr_status", "status", "created_at"),
    Index("ix_assignment_cr_customer", "customer_id", "role"),
)

# The one audit trail: hash-chained (services.common.audit). Revision
# assignment_0002 moved the rows of the old `assignment_audit_events` here.
audit_log = audit_table(metadata, "assignment_audit_log")

runs = Table(
    "assignment_runs", metadata,
    Column("run_id", String(40), primary_key=True),
    Column("branch_id", String(64), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("request_id", String(200), nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Column("result_json", Text, nullable=False),
    UniqueConstraint("actor", "request_id", name="uq_assignment_run_request"),
)

group_claims = Table(
    "assignment_group_claims", metadata,
    Column("claim_id", String(40), primary_key=True),
    Column("staff_id", String(64), nullable=False),
    Column("group_code", String(64), nullable=False),
    Column("selector_json", Text, nullable=False),
    Column("claimed_at", DateTime(timezone=True), nullable=False),
    Column("claimed_by", String(200), nullable=False),
    Column("request_id", String(200), nullable=True),
    # The unit the claim covers, with everything below it. Claims of one group
    # may not overlap (checked under a per-group lock); this is the last guard.
    Column("scope_branch_id", String(64), nullable=False, server_default=""),
    UniqueConstraint("group_code", "scope_branch_id", "selector_json", name="uq_assignment_group_claim_scope"),
)


def utc(dt: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything here is UTC."""
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def join_codes(codes: Iterable[str]) -> str:
    codes = sorted(set(codes))
    return "," + ",".join(codes) + "," if codes else ""


def split_codes(value: str | None) -> tuple[str, ...]:
    return tuple(c for c in (value or "").split(",") if c)


def upsert(conn: Connection, table: Table, rows: Sequence[Mapping], keys: Sequence[str]) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE, on SQLite and PostgreSQL."""
    if not rows:
        return
    dialect = postgresql if is_postgres(conn) else sqlite
    stmt = dialect.insert(table)
    updates = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys and c.name in rows[0]}
    conn.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_=updates), list(rows))


def lock_staff(conn: Connection, staff_ids: Iterable[str] | None = None) -> None:
    """Row locks on staff (all of them when None), in id order. SQLite's
    BEGIN IMMEDIATE already serializes writers, so this is PostgreSQL only."""
    if not is_postgres(conn):
        return
    q = select(staff.c.staff_id).order_by(staff.c.staff_id).with_for_update()
    if staff_ids is not None:
        q = q.where(staff.c.staff_id.in_(sorted(set(staff_ids))))
    conn.execute(q).all()


def lock_customer(conn: Connection, customer_id: str):
    return conn.execute(select(customers).where(customers.c.customer_id == customer_id).with_for_update()).first()


def serialize_claims(conn: Connection, group: str) -> None:
    """One claim of a group at a time (PostgreSQL: a transaction advisory lock),
    so two overlapping claims cannot both pass the overlap check."""
    if is_postgres(conn):
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('kequn-group-claim:' || :g))"), {"g": group})


def serialize_lock_periods(conn: Connection) -> None:
    """One OpenLockPeriod at a time, so two overlapping periods cannot both pass the check."""
    if is_postgres(conn):
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('kequn-lock-period'))"))


def serialize_runs(conn: Connection) -> None:
    """One assignment run at a time (PostgreSQL: a transaction advisory lock)."""
    if is_postgres(conn):
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('kequn-assignment-run'))"))


def book_loads(conn: Connection) -> dict[str, int]:
    return dict(conn.execute(select(books.c.staff_id, func.count()).group_by(books.c.staff_id)).all())


def book_size(conn: Connection, staff_id: str) -> int:
    return conn.execute(select(func.count()).select_from(books).where(books.c.staff_id == staff_id)).scalar_one()
