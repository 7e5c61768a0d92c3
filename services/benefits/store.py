"""Tables benefits owns and the queries on them (SQLAlchemy Core).

Balances (stock, budget, points) are columns updated only by conditional
UPDATEs that cannot go below their floor, and every change also writes a
ledger row in the same transaction: the balance always equals the ledger sum,
which `reconcile_rows` lets the service prove.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Iterable

from sqlalchemy import (
    BigInteger, Boolean, CheckConstraint, Column, DateTime, ForeignKey, Index, Integer, MetaData, String, Table,
    Text, UniqueConstraint, bindparam, case, func, insert, or_, select, update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeDecorator

from services.common.audit import append_audit_many, audit_table
from services.common.limits import MAX_POINTS_BALANCE, MAX_STOCK

metadata = MetaData()


class UtcDateTime(TypeDecorator):
    """Timezone-aware UTC on both SQLite (which drops the zone) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


definitions = Table(
    "benefits_definitions", metadata,
    Column("benefit_id", String(64), primary_key=True),
    Column("definition", Text, nullable=False),   # JSON: a catalog entry
    Column("updated_at", UtcDateTime, nullable=False),
    Column("updated_by", String(128), nullable=False),
)

claims = Table(
    "benefits_claims", metadata,
    Column("claim_id", String(40), primary_key=True),
    Column("request_id", String(128), nullable=False, unique=True),
    Column("customer_id", String(64), nullable=False),
    Column("benefit_id", String(64), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("period_key", String(16), nullable=False),     # quota period the claim counts in
    Column("points_spent", BigInteger, nullable=False, default=0),
    Column("physical", Boolean, nullable=False, default=False),
    Column("budget_group", String(64), nullable=False, default=""),
    Column("budget_period", String(16), nullable=False, default=""),
    Column("budget_spent_fen", BigInteger, nullable=False, default=0),
    Column("rule_id", String(200), nullable=False, default=""),
    Column("ruleset_version", Integer, nullable=False, default=0),
    Column("claimed_by", String(128), nullable=False, default=""),
    Column("claimed_at", UtcDateTime, nullable=False),
    Column("fulfilled_at", UtcDateTime),
    Column("cancelled_at", UtcDateTime),
    Column("cancel_reason", Text, nullable=False, default=""),
    CheckConstraint("status IN ('CLAIMED','FULFILLED','CANCELLED')", name="ck_benefits_claims_status"),
    Index("ix_benefits_claims_customer", "customer_id", "claimed_at"),
    Index("ix_benefits_claims_customer_benefit", "customer_id", "benefit_id", "status"),
)

# One row per (customer, benefit): the lock every claim of that pair takes, so
# quota and cool-down are decided one claim at a time, whatever the channel.
claim_locks = Table(
    "benefits_claim_locks", metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("benefit_id", String(64), primary_key=True),
)

inventory = Table(
    "benefits_inventory", metadata,
    Column("benefit_id", String(64), primary_key=True),
    Column("on_hand", BigInteger, nullable=False, default=0),
    Column("reserved", BigInteger, nullable=False, default=0),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint("reserved >= 0 AND on_hand >= reserved", name="ck_benefits_inventory_floor"),
)

inventory_ledger = Table(
    "benefits_inventory_ledger", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("benefit_id", String(64), nullable=False, index=True),
    # IN / ADJUST (出入库登记), OUT_CLAIM (reserved), BACK_CANCEL, OUT_FULFILL (handed out)
    Column("movement", String(16), nullable=False),
    Column("on_hand_delta", BigInteger, nullable=False, default=0),
    Column("reserved_delta", BigInteger, nullable=False, default=0),
    Column("claim_id", String(40)),
    Column("reason", Text, nullable=False, default=""),
    Column("actor", String(128), nullable=False, default=""),
    Column("at", UtcDateTime, nullable=False),
)

budgets = Table(
    "benefits_budgets", metadata,
    Column("group_code", String(64), primary_key=True),
    Column("period", String(16), primary_key=True),
    Column("amount_fen", BigInteger, nullable=False),
    Column("spent_fen", BigInteger, nullable=False, default=0),
    CheckConstraint("spent_fen >= 0 AND spent_fen <= amount_fen", name="ck_benefits_budgets_floor"),
)

budget_ledger = Table(
    "benefits_budget_ledger", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("group_code", String(64), nullable=False),
    Column("period", String(16), nullable=False),
    Column("movement", String(16), nullable=False),  # SET, SPEND, REFUND
    Column("amount_delta", BigInteger, nullable=False, default=0),
    Column("spent_delta", BigInteger, nullable=False, default=0),
    Column("claim_id", String(40)),
    Column("actor", String(128), nullable=False, default=""),
    Column("at", UtcDateTime, nullable=False),
    Index("ix_benefits_budget_ledger_group", "group_code", "period"),
)

points = Table(
    "benefits_points", metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("balance", BigInteger, nullable=False, default=0),
    CheckConstraint("balance >= 0", name="ck_benefits_points_floor"),
)

points_ledger = Table(
    "benefits_points_ledger", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("customer_id", String(64), nullable=False, index=True),
    Column("movement", String(16), nullable=False),  # CREDIT, DEBIT, CLAIM, REFUND
    Column("delta", BigInteger, nullable=False),
    Column("claim_id", String(40)),
    Column("reason", Text, nullable=False, default=""),
    Column("actor", String(128), nullable=False, default=""),
    Column("at", UtcDateTime, nullable=False),
)

# Results of idempotent mutations other than claims (claims carry their own
# request_id): the same (method, request_id) answers the stored result.
requests = Table(
    "benefits_requests", metadata,
    Column("method", String(64), primary_key=True),
    Column("request_id", String(128), primary_key=True),
    Column("result", Text, nullable=False),
    Column("at", UtcDateTime, nullable=False),
)


# The tamper-evident trail of every mutation (services.common.audit).
audit_log = audit_table(metadata, "benefits_audit_log")


# ---- statements of the hot paths (ListEntitlements, ClaimBenefit), built
# once: building a SQLAlchemy expression and its cache key on every call costs
# more Python time than PostgreSQL takes to answer it.
_p = bindparam
_LOCK_PG = postgresql.insert(claim_locks).values(customer_id=_p("p_customer"), benefit_id=_p("p_benefit"))
_LOCK_PG = _LOCK_PG.on_conflict_do_update(index_elements=[claim_locks.c.customer_id, claim_locks.c.benefit_id],
                                          set_={"benefit_id": _LOCK_PG.excluded.benefit_id})
_CLAIM_STATE = select(claims).where(or_(
    claims.c.request_id == _p("p_request"),
    (claims.c.customer_id == _p("p_customer")) & (claims.c.benefit_id == _p("p_benefit"))
    & (claims.c.status != "CANCELLED")))
_CLAIM_BY_REQUEST = select(claims).where(claims.c.request_id == _p("p_request"))
_INSERT_CLAIM = insert(claims)
_INSERT_STOCK_MOVE = insert(inventory_ledger)
_INSERT_BUDGET_MOVE = insert(budget_ledger)
_INSERT_POINTS_MOVE = insert(points_ledger)
_RESERVE_UNIT = (update(inventory)
                 .where(inventory.c.benefit_id == _p("p_benefit"), inventory.c.on_hand - inventory.c.reserved >= 1)
                 .values(reserved=inventory.c.reserved + 1, updated_at=_p("p_now"))
                 .returning(inventory.c.on_hand, inventory.c.reserved))
_DEBIT_POINTS = (update(points).where(points.c.customer_id == _p("p_customer"), points.c.balance >= _p("p_amount"))
                 .values(balance=points.c.balance - _p("p_amount")).returning(points.c.balance))
_SPEND_BUDGET = (update(budgets)
                 .where(budgets.c.group_code == _p("p_group"), budgets.c.period == _p("p_period"),
                        budgets.c.amount_fen - budgets.c.spent_fen >= _p("p_fen"))
                 .values(spent_fen=budgets.c.spent_fen + _p("p_fen"))
                 .returning(budgets.c.amount_fen, budgets.c.spent_fen))
# the most specific of (month, quarter, year) that has a budget
_FIRST_BUDGET_PERIOD = (select(budgets.c.period)
                        .where(budgets.c.group_code == _p("p_group"),
                               budgets.c.period.in_([_p("p0"), _p("p1"), _p("p2")]))
                        .order_by(case((budgets.c.period == _p("p0"), 0), (budgets.c.period == _p("p1"), 1),
                                       else_=2)).limit(1))
_USAGE_SUMMARY = (
    select(claims.c.benefit_id, claims.c.period_key, func.count().label("claims"),
           func.max(claims.c.claimed_at).label("last_at"))
    .where(claims.c.customer_id == bindparam("customer_id"), claims.c.status != "CANCELLED")
    .group_by(claims.c.benefit_id, claims.c.period_key))
# The same, for the driver directly (PostgreSQL): ListEntitlements runs it per
# call, and SQLAlchemy's execution and result processing cost more CPU than
# the query's own round trip.
_USAGE_SUMMARY_PG = ("SELECT benefit_id, period_key, count(*) AS claims, max(claimed_at) AS last_at "
                     "FROM benefits_claims WHERE customer_id = %s AND status <> 'CANCELLED' "
                     "GROUP BY benefit_id, period_key")


def _insert_ignore(conn: Connection | Session, table: Table, values: dict[str, Any]) -> None:
    """INSERT that does nothing when the key exists (both dialects)."""
    dialect = conn.bind.dialect.name if isinstance(conn, Session) else conn.dialect.name
    stmt = (postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)).values(**values)
    conn.execute(stmt.on_conflict_do_nothing())


def _is_postgres(conn: Connection | Session) -> bool:
    return (conn.dialect if isinstance(conn, Connection) else conn.bind.dialect).name == "postgresql"


class BenefitsRepository:
    """Every query of the benefits tables, on one session (one transaction) —
    or, for single reads, on a plain Connection."""

    def __init__(self, session: Session | Connection) -> None:
        self.s = session

    # ---- definitions
    def definitions(self) -> dict[str, dict]:
        rows = self.s.execute(select(definitions.c.benefit_id, definitions.c.definition)).all()
        return {r.benefit_id: json.loads(r.definition) for r in rows}

    def definition(self, benefit_id: str) -> dict | None:
        row = self.s.execute(select(definitions.c.definition).where(definitions.c.benefit_id == benefit_id)).first()
        return json.loads(row.definition) if row else None

    def upsert_definition(self, benefit_id: str, definition: dict, actor: str, now: datetime) -> bool:
        """True if it is new."""
        text_ = json.dumps(definition, ensure_ascii=False, sort_keys=True)
        changed = self.s.execute(update(definitions).where(definitions.c.benefit_id == benefit_id).values(
            definition=text_, updated_at=now, updated_by=actor)).rowcount
        if changed:
            return False
        self.s.execute(insert(definitions).values(benefit_id=benefit_id, definition=text_, updated_at=now,
                                                  updated_by=actor))
        return True

    # ---- idempotency of admin mutations
    def stored_result(self, method: str, request_id: str) -> dict | None:
        row = self.s.execute(select(requests.c.result).where(
            requests.c.method == method, requests.c.request_id == request_id)).first()
        return json.loads(row.result) if row else None

    def store_result(self, method: str, request_id: str, result: dict, now: datetime) -> None:
        self.s.execute(insert(requests).values(method=method, request_id=request_id,
                                               result=json.dumps(result, sort_keys=True), at=now))

    # ---- claims
    def claim(self, claim_id: str, for_update: bool = False):
        stmt = select(claims).where(claims.c.claim_id == claim_id)
        if for_update and _is_postgres(self.s):
            stmt = stmt.with_for_update()
        return self.s.execute(stmt).first()

    def claim_by_request(self, request_id: str):
        return self.s.execute(_CLAIM_BY_REQUEST, {"p_request": request_id}).first()

    def lock_customer_benefit(self, customer_id: str, benefit_id: str) -> None:
        """Serializes the claims of one customer for one benefit (all channels).

        PostgreSQL: one round trip — an upsert whose DO UPDATE row-locks the
        existing row (or the one just inserted) until commit. SQLite: the
        transaction's BEGIN IMMEDIATE already holds the database write lock."""
        if _is_postgres(self.s):
            self.s.execute(_LOCK_PG, {"p_customer": customer_id, "p_benefit": benefit_id})

    def claim_state(self, customer_id: str, benefit_id: str, request_id: str) -> tuple[Any, list]:
        """(the claim already made with this request_id or None, the live
        claims of this customer and benefit) in one query, under the lock."""
        rows = self.s.execute(_CLAIM_STATE, {"p_request": request_id, "p_customer": customer_id,
                                             "p_benefit": benefit_id}).all()
        same = next((r for r in rows if r.request_id == request_id), None)
        return same, [r for r in rows if r.request_id != request_id]

    def usage_summary(self, customer_id: str) -> list:
        """(benefit_id, period_key, live claims, latest claimed_at) of a customer:
        every benefit's usage in one query, one row per benefit and period."""
        if isinstance(self.s, Connection) and self.s.dialect.name == "postgresql":
            import psycopg
            from psycopg.rows import namedtuple_row
            try:
                with self.s.connection.driver_connection.cursor(row_factory=namedtuple_row) as cur:
                    cur.execute(_USAGE_SUMMARY_PG, (customer_id,))
                    rows = cur.fetchall()
            except psycopg.Error as exc:  # as SQLAlchemy would raise it: UNAVAILABLE, not INTERNAL
                raise sa_exc.DBAPIError.instance(None, None, exc, psycopg.Error) from exc
            return [r._replace(last_at=r.last_at.astimezone(timezone.utc)) if r.last_at else r for r in rows]
        return self.s.execute(_USAGE_SUMMARY, {"customer_id": customer_id}).all()

    def live_claims(self, customer_id: str, benefit_id: str | None = None) -> list:
        """(benefit_id, period_key, claimed_at) of claims not cancelled."""
        stmt = select(claims.c.benefit_id, claims.c.period_key, claims.c.claimed_at).where(
            claims.c.customer_id == customer_id, claims.c.status != "CANCELLED")
        if benefit_id is not None:
            stmt = stmt.where(claims.c.benefit_id == benefit_id)
        return self.s.execute(stmt).all()

    def insert_claim(self, **values) -> None:
        self.s.execute(_INSERT_CLAIM, values)

    def transition_claim(self, claim_id: str, to: str, **values) -> bool:
        """CLAIMED → `to`, only if still CLAIMED: the guard that makes a cancel
        (and what it gives back) happen once."""
        return self.s.execute(update(claims).where(claims.c.claim_id == claim_id, claims.c.status == "CLAIMED")
                              .values(status=to, **values)).rowcount == 1

    def claims_page(self, customer_id: str, after: tuple[str, str] | None, limit: int) -> list:
        """Newest first; keyset on (claimed_at, claim_id)."""
        stmt = select(claims).where(claims.c.customer_id == customer_id)
        if after is not None:
            at, claim_id = datetime.fromisoformat(after[0]), after[1]
            stmt = stmt.where((claims.c.claimed_at < at) | ((claims.c.claimed_at == at) & (claims.c.claim_id < claim_id)))
        return self.s.execute(stmt.order_by(claims.c.claimed_at.desc(), claims.c.claim_id.desc()).limit(limit)).all()

    # ---- inventory
    def inventory(self, benefit_id: str):
        return self.s.execute(select(inventory).where(inventory.c.benefit_id == benefit_id)).first()

    def all_inventory(self) -> list:
        return self.s.execute(select(inventory)).all()

    def available_stock(self, benefit_ids: Iterable[str]) -> dict[str, int]:
        """Units left to claim (on_hand - reserved) of these benefits, in one
        query; a benefit without an inventory row is absent (none left)."""
        ids = sorted(set(benefit_ids))
        if not ids:
            return {}
        rows = self.s.execute(select(inventory.c.benefit_id, inventory.c.on_hand - inventory.c.reserved)
                              .where(inventory.c.benefit_id.in_(ids))).all()
        return {benefit_id: int(left) for benefit_id, left in rows}

    def ensure_inventory(self, benefit_id: str, now: datetime) -> None:
        _insert_ignore(self.s, inventory, {"benefit_id": benefit_id, "on_hand": 0, "reserved": 0, "updated_at": now})

    def adjust_on_hand(self, benefit_id: str, delta: int, now: datetime):
        """on_hand += delta unless that would go below what claims hold or
        above MAX_STOCK: the row after (on_hand, reserved), or None if refused."""
        return self.s.execute(update(inventory).where(
            inventory.c.benefit_id == benefit_id, inventory.c.on_hand + delta >= inventory.c.reserved,
            inventory.c.on_hand + delta <= MAX_STOCK)
            .values(on_hand=inventory.c.on_hand + delta, updated_at=now)
            .returning(inventory.c.on_hand, inventory.c.reserved)).first()

    def reserve_unit(self, benefit_id: str, now: datetime):
        """One unit for a claim, only if one is available: never oversells.
        The row after (on_hand, reserved), or None when sold out."""
        return self.s.execute(_RESERVE_UNIT, {"p_benefit": benefit_id, "p_now": now}).first()

    def release_unit(self, benefit_id: str, now: datetime, hand_out: bool):
        """Cancel: the unit is available again; fulfil: it leaves the store.
        The row after (on_hand, reserved)."""
        values = {"reserved": inventory.c.reserved - 1, "updated_at": now}
        if hand_out:
            values["on_hand"] = inventory.c.on_hand - 1
        return self.s.execute(update(inventory).where(inventory.c.benefit_id == benefit_id).values(**values)
                              .returning(inventory.c.on_hand, inventory.c.reserved)).first()

    def inventory_movement(self, benefit_id: str, movement: str, on_hand_delta: int, reserved_delta: int,
                           now: datetime, claim_id: str | None = None, reason: str = "", actor: str = "") -> None:
        self.s.execute(_INSERT_STOCK_MOVE, dict(
            benefit_id=benefit_id, movement=movement, on_hand_delta=on_hand_delta, reserved_delta=reserved_delta,
            claim_id=claim_id, reason=reason, actor=actor, at=now))

    # ---- budgets
    def budget(self, group: str, period: str):
        return self.s.execute(select(budgets).where(budgets.c.group_code == group, budgets.c.period == period)).first()

    def all_budgets(self) -> list:
        return self.s.execute(select(budgets)).all()

    def set_budget_amount(self, group: str, period: str, amount: int) -> tuple[int, int, bool]:
        """(previous amount, spent, existed), under the row's lock."""
        row = self.s.execute(select(budgets).where(budgets.c.group_code == group, budgets.c.period == period)
                             .with_for_update() if _is_postgres(self.s) else
                             select(budgets).where(budgets.c.group_code == group, budgets.c.period == period)).first()
        if row is None:
            self.s.execute(insert(budgets).values(group_code=group, period=period, amount_fen=amount, spent_fen=0))
            return 0, 0, False
        self.s.execute(update(budgets).where(budgets.c.group_code == group, budgets.c.period == period)
                       .values(amount_fen=amount))
        return row.amount_fen, row.spent_fen, True

    def first_budget_period(self, group: str, periods: Iterable[str]) -> str | None:
        """The most specific of (month, quarter, year) `periods` with a budget."""
        p0, p1, p2 = periods
        return self.s.execute(_FIRST_BUDGET_PERIOD, {"p_group": group, "p0": p0, "p1": p1, "p2": p2}).scalar()

    def spend_budget(self, group: str, period: str, fen: int):
        """spent += fen if that stays within the amount: the row after
        (amount_fen, spent_fen), or None if refused."""
        return self.s.execute(_SPEND_BUDGET, {"p_group": group, "p_period": period, "p_fen": fen}).first()

    def refund_budget(self, group: str, period: str, fen: int):
        """The row after (amount_fen, spent_fen)."""
        return self.s.execute(update(budgets).where(budgets.c.group_code == group, budgets.c.period == period)
                              .values(spent_fen=budgets.c.spent_fen - fen)
                              .returning(budgets.c.amount_fen, budgets.c.spent_fen)).first()

    def budget_movement(self, group: str, period: str, movement: str, amount_delta: int, spent_delta: int,
                        now: datetime, claim_id: str | None = None, actor: str = "") -> None:
        self.s.execute(_INSERT_BUDGET_MOVE, dict(
            group_code=group, period=period, movement=movement, amount_delta=amount_delta, spent_delta=spent_delta,
            claim_id=claim_id, actor=actor, at=now))

    # ---- points
    def points_balance(self, customer_id: str) -> int:
        row = self.s.execute(select(points.c.balance).where(points.c.customer_id == customer_id)).first()
        return row.balance if row else 0

    def credit_points(self, customer_id: str, amount: int) -> int | None:
        """The balance after, or None when it would pass MAX_POINTS_BALANCE; one
        upsert (creates the account at the first credit)."""
        dialect = postgresql if _is_postgres(self.s) else sqlite
        stmt = dialect.insert(points).values(customer_id=customer_id, balance=amount)
        return self.s.execute(stmt.on_conflict_do_update(
            index_elements=[points.c.customer_id], set_={"balance": points.c.balance + amount},
            where=points.c.balance <= MAX_POINTS_BALANCE - amount)
            .returning(points.c.balance)).scalar()

    def debit_points(self, customer_id: str, amount: int) -> int | None:
        """The balance after, or None if it is short."""
        return self.s.execute(_DEBIT_POINTS, {"p_customer": customer_id, "p_amount": amount}).scalar()

    def points_movement(self, customer_id: str, movement: str, delta: int, now: datetime,
                        claim_id: str | None = None, reason: str = "", actor: str = "") -> None:
        self.s.execute(_INSERT_POINTS_MOVE, dict(
            customer_id=customer_id, movement=movement, delta=delta, claim_id=claim_id, reason=reason,
            actor=actor, at=now))

    # ---- audit
    def audit(self, entries: list[dict], actor: str = "") -> None:
        """The audit records of this transaction's changes: call it last before
        commit (on PostgreSQL it holds the head rows of its audit chains locked until then).
        `actor` empty → the current principal (or "system" outside an RPC)."""
        if entries:
            append_audit_many(self.s, audit_log, entries, actor=actor or None)

    # ---- reconciliation inputs: (subject key, ledger sum, balance)
    def inventory_check(self) -> list:
        ledger = select(inventory_ledger.c.benefit_id,
                        func.coalesce(func.sum(inventory_ledger.c.on_hand_delta), 0).label("on_hand"),
                        func.coalesce(func.sum(inventory_ledger.c.reserved_delta), 0).label("reserved")
                        ).group_by(inventory_ledger.c.benefit_id).subquery()
        held = select(claims.c.benefit_id, func.count().label("held")).where(
            claims.c.status == "CLAIMED", claims.c.physical.is_(True)).group_by(claims.c.benefit_id).subquery()
        return self.s.execute(select(
            inventory.c.benefit_id, inventory.c.on_hand, inventory.c.reserved,
            func.coalesce(ledger.c.on_hand, 0).label("ledger_on_hand"),
            func.coalesce(ledger.c.reserved, 0).label("ledger_reserved"),
            func.coalesce(held.c.held, 0).label("claims_held"),
        ).outerjoin(ledger, ledger.c.benefit_id == inventory.c.benefit_id)
         .outerjoin(held, held.c.benefit_id == inventory.c.benefit_id)).all()

    def budget_check(self) -> list:
        ledger = select(budget_ledger.c.group_code, budget_ledger.c.period,
                        func.sum(budget_ledger.c.amount_delta).label("amount"),
                        func.sum(budget_ledger.c.spent_delta).label("spent")
                        ).group_by(budget_ledger.c.group_code, budget_ledger.c.period).subquery()
        charged = select(claims.c.budget_group, claims.c.budget_period,
                         func.sum(claims.c.budget_spent_fen).label("charged")).where(
            claims.c.status != "CANCELLED", claims.c.budget_group != "").group_by(
            claims.c.budget_group, claims.c.budget_period).subquery()
        return self.s.execute(select(
            budgets.c.group_code, budgets.c.period, budgets.c.amount_fen, budgets.c.spent_fen,
            func.coalesce(ledger.c.amount, 0).label("ledger_amount"),
            func.coalesce(ledger.c.spent, 0).label("ledger_spent"),
            func.coalesce(charged.c.charged, 0).label("claims_charged"),
        ).outerjoin(ledger, (ledger.c.group_code == budgets.c.group_code) & (ledger.c.period == budgets.c.period))
         .outerjoin(charged, (charged.c.budget_group == budgets.c.group_code)
                    & (charged.c.budget_period == budgets.c.period))).all()

    def points_check(self) -> list:
        ledger = select(points_ledger.c.customer_id, func.sum(points_ledger.c.delta).label("total")
                        ).group_by(points_ledger.c.customer_id).subquery()
        return self.s.execute(select(points.c.customer_id, points.c.balance,
                                     func.coalesce(ledger.c.total, 0).label("ledger_total"))
                              .outerjoin(ledger, ledger.c.customer_id == points.c.customer_id)).all()

    def claim_points_check(self) -> tuple[int, int]:
        """(points debited by live claims per the ledger, points_spent of live claims)."""
        ledger = self.s.execute(select(func.coalesce(func.sum(points_ledger.c.delta), 0)).where(
            points_ledger.c.movement.in_(("CLAIM", "REFUND")))).scalar_one()
        spent = self.s.execute(select(func.coalesce(func.sum(claims.c.points_spent), 0)).where(
            claims.c.status != "CANCELLED")).scalar_one()
        return -int(ledger), int(spent)
