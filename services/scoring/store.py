"""Tables scoring owns and the queries on them (SQLAlchemy Core, SQLite and PostgreSQL).

Bulk by design: values and results are written with one executemany per
statement (psycopg batches them), read with one query per role, so a period of
50,000 people x 20 indicators stays a handful of round trips. A result keeps
its breakdown (each indicator's raw value, score, peer μ/σ/n, note) as one JSON
document: HR reads whole results, never single indicators.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, NamedTuple, Sequence

from sqlalchemy import (Boolean, Column, DateTime, Index, Integer, MetaData, String, Table, Text, and_, delete, func,
                        insert, select, true, tuple_, update)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from services.common.audit import append_audit_many, audit_table

metadata = MetaData()

periods = Table(
    "scoring_periods", metadata,
    Column("period_id", String(64), primary_key=True),
    Column("starts_on", String(10), nullable=False),
    Column("ends_on", String(10), nullable=False),
    Column("due_on", String(10), nullable=False),
    Column("status", String(16), nullable=False),  # OPEN | CALCULATED | FINALIZED
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("finalized_at", DateTime(timezone=True)),
    Column("finalized_by", String(128)),
)

# Who is scored in a period, on which card: the role and branch come with the values.
staff = Table(
    "scoring_staff", metadata,
    Column("period_id", String(64), primary_key=True),
    Column("staff_id", String(64), primary_key=True),
    Column("role", String(64), nullable=False),
    Column("branch_id", String(64), nullable=False),
)

# Submitted metric values and ratings; `input_key` is an indicator id or
# "<indicator>.<component>" for points/conversion tables. Decimal text, exact.
values = Table(
    "scoring_values", metadata,
    Column("period_id", String(64), primary_key=True),
    Column("staff_id", String(64), primary_key=True),
    Column("input_key", String(130), primary_key=True),
    Column("value", String(40), nullable=False),
    Column("is_rating", Boolean, nullable=False),
    Column("comment", Text, nullable=False, default=""),
    Column("entered_by", String(128), nullable=False),
    Column("entered_at", DateTime(timezone=True), nullable=False),
)

# A role is stale when values changed after its last full calculation;
# a period with a stale role cannot be finalized.
role_state = Table(
    "scoring_role_state", metadata,
    Column("period_id", String(64), primary_key=True),
    Column("role", String(64), primary_key=True),
    Column("stale", Boolean, nullable=False),
    Column("calculated_at", DateTime(timezone=True)),
)

results = Table(
    "scoring_results", metadata,
    Column("period_id", String(64), primary_key=True),
    Column("staff_id", String(64), primary_key=True),
    Column("revision", Integer, primary_key=True),
    Column("is_latest", Boolean, nullable=False),
    Column("role", String(64), nullable=False),
    Column("branch_id", String(64), nullable=False),
    Column("peer_group", String(64), nullable=False),
    Column("total", String(40), nullable=False),
    Column("rank", Integer, nullable=False),
    Column("peer_group_size", Integer, nullable=False),
    Column("scorecard_name", String(100), nullable=False),
    Column("scorecard_version", Integer, nullable=False),
    Column("breakdown", Text, nullable=False),      # JSON flat list, see service.encode_breakdown
    Column("book_size", Integer),
    Column("corrections", Text, nullable=False, default="{}"),  # JSON: input key -> value, cumulative
    Column("reason", Text, nullable=False, default=""),
    Column("revised_by", String(128), nullable=False, default=""),
    Column("calculated_at", DateTime(timezone=True), nullable=False),
    # Required indicators with no value (scored 0), comma-separated; "" = none.
    Column("missing", Text, nullable=False, default="", server_default=""),
)

# Peer statistics of a calculation, per peer group and standard-deviation indicator:
# shown with every result and reused, frozen, by revisions after finalizing.
peer_stats = Table(
    "scoring_peer_stats", metadata,
    Column("period_id", String(64), primary_key=True),
    Column("role", String(64), primary_key=True),
    Column("peer_group", String(64), primary_key=True),
    Column("indicator_id", String(64), primary_key=True),
    Column("mean", String(80), nullable=False),     # exact decimal text
    Column("stddev", String(80), nullable=False),
    Column("count", Integer, nullable=False),
)

requests = Table(
    "scoring_requests", metadata,
    Column("method", String(64), primary_key=True),
    Column("request_id", String(128), primary_key=True),
    Column("response", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# The tamper-evident trail of every mutation (services.common.audit); bulk
# requests write one summary record each, see docs/scoring.md "Audit trail".
audit_log = audit_table(metadata, "scoring_audit_log")

# HR's keyset paging over latest results; the calculation's reads by role.
Index("ix_scoring_results_page", results.c.period_id, results.c.is_latest, results.c.role, results.c.branch_id,
      results.c.staff_id)
Index("ix_scoring_staff_role", staff.c.period_id, staff.c.role, staff.c.branch_id)


def now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class PeriodRow:
    period_id: str
    starts_on: str
    ends_on: str
    due_on: str
    status: str
    created_at: datetime
    finalized_at: datetime | None


class ResultRow(NamedTuple):  # a tuple: HR pages read thousands of these
    period_id: str
    staff_id: str
    revision: int
    is_latest: bool
    role: str
    branch_id: str
    peer_group: str
    total: str
    rank: int
    peer_group_size: int
    scorecard_name: str
    scorecard_version: int
    breakdown: list
    book_size: int | None
    corrections: dict
    reason: str
    revised_by: str
    calculated_at: datetime
    missing: tuple[str, ...] = ()


def _aware(dt: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return dt.replace(tzinfo=timezone.utc) if dt is not None and dt.tzinfo is None else dt


def _period(row) -> PeriodRow:
    return PeriodRow(row.period_id, row.starts_on, row.ends_on, row.due_on, row.status,
                     _aware(row.created_at), _aware(row.finalized_at))


def _result(row) -> ResultRow:
    return ResultRow(row.period_id, row.staff_id, row.revision, row.is_latest, row.role, row.branch_id,
                     row.peer_group, row.total, row.rank, row.peer_group_size, row.scorecard_name,
                     row.scorecard_version, json.loads(row.breakdown), row.book_size,
                     json.loads(row.corrections) if row.corrections not in ("", "{}") else {}, row.reason,
                     row.revised_by, _aware(row.calculated_at), tuple(row.missing.split(",")) if row.missing else ())


def _upsert(conn: Connection, table: Table, rows: Sequence[dict], keys: Sequence[str], update_cols: Sequence[str]):
    if not rows:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    stmt = stmt.on_conflict_do_update(index_elements=list(keys),
                                      set_={c: stmt.excluded[c] for c in update_cols})
    conn.execute(stmt, list(rows))


def _chunks(items: Sequence[Any], size: int = 500) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class ScoringStore:
    """Repository over one open Connection (a unit of work's transaction)."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self._audit: list[dict] = []

    # ---------------------------------------------------------------- audit

    def audit(self, action: str, subject: str, before: Any, after: Any, reason: str = "") -> None:
        """Records what a use case changed; written by `write_audit` just before commit."""
        self._audit.append({"action": action, "subject": subject, "before": before, "after": after,
                            "reason": reason})

    def write_audit(self) -> None:
        """Appends the recorded entries to the chain: the last statement before commit,
        so its chains' head-row locks (PostgreSQL) are held for as short a time as possible.
        Actor and request id: the RPC's principal and x-request-id ("system" outside one)."""
        entries, self._audit = self._audit, []
        if entries:
            append_audit_many(self.conn, audit_log, entries)

    # ---------------------------------------------------------------- periods

    def add_period(self, period_id: str, starts_on: str, ends_on: str, due_on: str, actor: str) -> None:
        self.conn.execute(insert(periods).values(period_id=period_id, starts_on=starts_on, ends_on=ends_on,
                                                 due_on=due_on, status="OPEN", created_at=now(), created_by=actor))

    def period(self, period_id: str, lock: str | None = None) -> PeriodRow | None:
        """lock: None, "share" (submissions: many at once) or "update" (calculate,
        finalize, revise: alone) — so a finalize never slips between a check and a write."""
        stmt = select(periods).where(periods.c.period_id == period_id)
        if lock:
            stmt = stmt.with_for_update(read=lock == "share")
        row = self.conn.execute(stmt).first()
        return _period(row) if row else None

    def set_period_status(self, period_id: str, status: str, actor: str | None = None) -> None:
        changes: dict[str, Any] = {"status": status}
        if status == "FINALIZED":
            changes.update(finalized_at=now(), finalized_by=actor)
        self.conn.execute(update(periods).where(periods.c.period_id == period_id).values(**changes))

    def overdue_periods(self, today: str) -> int:
        return self.conn.execute(select(func.count()).select_from(periods).where(
            periods.c.status != "FINALIZED", periods.c.due_on < today)).scalar_one()

    # ---------------------------------------------------------------- staff and values

    def staff_roles(self, period_id: str, staff_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        found: dict[str, tuple[str, str]] = {}
        for chunk in _chunks(list(staff_ids)):
            for row in self.conn.execute(select(staff.c.staff_id, staff.c.role, staff.c.branch_id).where(
                    staff.c.period_id == period_id, staff.c.staff_id.in_(chunk))):
                found[row.staff_id] = (row.role, row.branch_id)
        return found

    def forget_staff_values(self, period_id: str, staff_ids: Sequence[str]) -> None:
        """A person moved to another role: values and result of the old card go."""
        for chunk in _chunks(list(staff_ids)):
            self.conn.execute(delete(values).where(values.c.period_id == period_id, values.c.staff_id.in_(chunk)))
            self.conn.execute(delete(results).where(results.c.period_id == period_id,
                                                    results.c.staff_id.in_(chunk)))

    def upsert_staff(self, period_id: str, people: dict[str, tuple[str, str]]) -> None:
        rows = [{"period_id": period_id, "staff_id": s, "role": r, "branch_id": b} for s, (r, b) in people.items()]
        _upsert(self.conn, staff, rows, ("period_id", "staff_id"), ("role", "branch_id"))

    def upsert_values(self, period_id: str, items: Sequence[tuple[str, str, str, bool, str]], actor: str) -> None:
        """items: (staff_id, input_key, decimal text, is_rating, comment); replaces earlier values."""
        at = now()
        rows = [{"period_id": period_id, "staff_id": s, "input_key": k, "value": v, "is_rating": r,
                 "comment": c, "entered_by": actor, "entered_at": at} for s, k, v, r, c in items]
        _upsert(self.conn, values, rows, ("period_id", "staff_id", "input_key"),
                ("value", "is_rating", "comment", "entered_by", "entered_at"))

    def mark_stale(self, period_id: str, roles: Iterable[str]) -> None:
        rows = [{"period_id": period_id, "role": r, "stale": True} for r in sorted(set(roles))]
        _upsert(self.conn, role_state, rows, ("period_id", "role"), ("stale",))

    def mark_calculated(self, period_id: str, role: str) -> None:
        _upsert(self.conn, role_state, [{"period_id": period_id, "role": role, "stale": False,
                                         "calculated_at": now()}], ("period_id", "role"), ("stale", "calculated_at"))

    def stale_roles(self, period_id: str) -> list[str]:
        return list(self.conn.execute(select(role_state.c.role).where(
            role_state.c.period_id == period_id, role_state.c.stale == true()).order_by(role_state.c.role)).scalars())

    def roles(self, period_id: str) -> list[str]:
        return list(self.conn.execute(select(staff.c.role).where(staff.c.period_id == period_id)
                                      .distinct().order_by(staff.c.role)).scalars())

    def people_of_role(self, period_id: str, role: str) -> dict[str, tuple[str, dict[str, str]]]:
        """staff_id -> (branch_id, {input_key: decimal text}) of everyone of `role`.
        The database folds each person's values into one JSON object: one row per
        person instead of one per value."""
        postgres = self.conn.dialect.name == "postgresql"
        fold = (func.json_object_agg if postgres else func.json_group_object)(values.c.input_key, values.c.value)
        people: dict[str, tuple[str, dict[str, str]]] = {
            row.staff_id: (row.branch_id, {}) for row in self.conn.execute(
                select(staff.c.staff_id, staff.c.branch_id).where(staff.c.period_id == period_id,
                                                                   staff.c.role == role))}
        stmt = (select(values.c.staff_id, fold)
                .join(staff, and_(staff.c.period_id == values.c.period_id, staff.c.staff_id == values.c.staff_id))
                .where(values.c.period_id == period_id, staff.c.role == role)
                .group_by(values.c.staff_id))
        for staff_id, vals in self.conn.execute(stmt):
            people[staff_id] = (people[staff_id][0], json.loads(vals) if isinstance(vals, str) else vals)
        return people

    def values_of(self, period_id: str, staff_id: str) -> dict[str, str]:
        return dict(self.conn.execute(select(values.c.input_key, values.c.value).where(
            values.c.period_id == period_id, values.c.staff_id == staff_id)).all())

    # ---------------------------------------------------------------- results

    def replace_results(self, period_id: str, role: str, peer_groups: Sequence[str] | None,
                        rows: Sequence[dict], stats: Sequence[tuple[str, str, str, str, int]]) -> None:
        """Writes a calculation: the role's results and peer statistics (in `peer_groups`,
        or all) are replaced. stats: (peer group, indicator, mean, stddev, count)."""
        for table in (results, peer_stats):
            cond = [table.c.period_id == period_id, table.c.role == role]
            if peer_groups is None:
                self.conn.execute(delete(table).where(*cond))
            else:
                for chunk in _chunks(list(peer_groups)):
                    self.conn.execute(delete(table).where(*cond, table.c.peer_group.in_(chunk)))
        if rows:
            self.conn.execute(insert(results), [{**r, "period_id": period_id, "role": role} for r in rows])
        if stats:
            self.conn.execute(insert(peer_stats), [
                {"period_id": period_id, "role": role, "peer_group": g, "indicator_id": i, "mean": m, "stddev": sd,
                 "count": n} for g, i, m, sd, n in stats])

    def peer_stats(self, period_id: str, groups: Iterable[tuple[str, str]]) -> dict[tuple[str, str, str], tuple]:
        """(role, peer group, indicator) -> (mean, stddev, count) for the (role, group) pairs asked."""
        found: dict[tuple[str, str, str], tuple] = {}
        pairs = sorted(set(groups))
        for chunk in _chunks(pairs, 200):
            stmt = select(peer_stats).where(peer_stats.c.period_id == period_id,
                                            tuple_(peer_stats.c.role, peer_stats.c.peer_group).in_(chunk))
            for row in self.conn.execute(stmt):
                found[(row.role, row.peer_group, row.indicator_id)] = (row.mean, row.stddev, row.count)
        return found

    def add_revision(self, row: dict) -> None:
        self.conn.execute(update(results).where(
            results.c.period_id == row["period_id"], results.c.staff_id == row["staff_id"],
            results.c.is_latest == true()).values(is_latest=False))
        self.conn.execute(insert(results).values(**row))

    def result(self, period_id: str, staff_id: str, revision: int = 0) -> ResultRow | None:
        stmt = select(results).where(results.c.period_id == period_id, results.c.staff_id == staff_id)
        stmt = stmt.where(results.c.revision == revision) if revision else stmt.where(results.c.is_latest == true())
        row = self.conn.execute(stmt).first()
        return _result(row) if row else None

    def peer_totals(self, period_id: str, role: str, peer_group: str, except_staff: str) -> list[str]:
        return list(self.conn.execute(select(results.c.total).where(
            results.c.period_id == period_id, results.c.role == role, results.c.peer_group == peer_group,
            results.c.is_latest == true(), results.c.staff_id != except_staff)).scalars())

    def missing_by_card(self, period_id: str) -> list[tuple[str, int, int, str]]:
        """(scorecard name, version, results with a missing required value, one
        such staff id) of the period's latest results."""
        return [tuple(r) for r in self.conn.execute(
            select(results.c.scorecard_name, results.c.scorecard_version, func.count(), func.min(results.c.staff_id))
            .where(results.c.period_id == period_id, results.c.is_latest == true(), results.c.missing != "")
            .group_by(results.c.scorecard_name, results.c.scorecard_version)
            .order_by(results.c.scorecard_name, results.c.scorecard_version))]

    def count_latest(self, period_id: str) -> int:
        return self.conn.execute(select(func.count()).select_from(results).where(
            results.c.period_id == period_id, results.c.is_latest == true())).scalar_one()

    def page(self, period_id: str, role: str, branch_id: str, after: tuple[str, str, str] | None,
             limit: int) -> list[ResultRow]:
        """Latest results in (role, branch, staff) order, strictly after the keyset `after`."""
        stmt = select(results).where(results.c.period_id == period_id, results.c.is_latest == true())
        if role:
            stmt = stmt.where(results.c.role == role)
        if branch_id:
            stmt = stmt.where(results.c.branch_id == branch_id)
        if after is not None:
            stmt = stmt.where(tuple_(results.c.role, results.c.branch_id, results.c.staff_id) > tuple_(*after))
        stmt = stmt.order_by(results.c.role, results.c.branch_id, results.c.staff_id).limit(limit)
        return [_result(r) for r in self.conn.execute(stmt)]

    # ---------------------------------------------------------------- idempotency

    def replay(self, method: str, request_id: str) -> dict | None:
        row = self.conn.execute(select(requests.c.response).where(
            requests.c.method == method, requests.c.request_id == request_id)).first()
        return json.loads(row.response) if row else None

    def remember(self, method: str, request_id: str, response: dict) -> None:
        self.conn.execute(insert(requests).values(method=method, request_id=request_id,
                                                  response=json.dumps(response), created_at=now()))
