"""What every use case of assignment shares: plain values, the transaction
helper, the policy, the org tree and the audit append."""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import islice

from sqlalchemy import Connection, Engine, select

from services.common.audit import append_audit_many
from services.common.db import retry_on_conflict
from services.common.errors import NotFound

from . import domain as d
from . import store as t
from .rules_kind import POLICY_RULESET


GROUP_SELECTOR_FIELDS = ("tier", "home_branch_id", "card_level")
DATE_PATTERN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
INCREMENTAL_BATCH = 50_000
AUDIT_CHUNK = 10_000  # records per insert (a full run writes one per placement)


def _now() -> datetime:
    return datetime.now(timezone.utc)


# --- plain values -------------------------------------------------------------------------

@dataclass(frozen=True)
class CustomerChange:
    """One entry of tiering's feed, as assignment needs it."""

    cursor: int
    customer_id: str
    tier: str
    segments: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    home_branch_id: str = ""
    has_personal_loan: bool = False
    annual_card_spend_fen: int = 0
    annual_avg_aum_fen: int = 0
    card_level: str = ""
    changed_at: datetime | None = None


@dataclass
class RunResult:
    run_id: str
    branch_id: str
    dry_run: bool
    assigned: int = 0
    moved: int = 0
    removed: int = 0
    unchanged: int = 0
    suggestions_created: int = 0
    unplaced: list[dict] = field(default_factory=list)  # customer_id, role, reason, branch_id, tier
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class BookView:
    staff_id: str
    role: str
    branch_id: str
    size: int
    initial_size: int
    max_size: int
    customer_ids: tuple[str, ...]
    next_page_token: str
    locked: bool


@dataclass(frozen=True)
class ManagerView:
    staff_id: str
    role: str
    kind: str  # TIER | GROUP
    since: datetime | None
    group: str = ""


def _row(r) -> dict:
    if r is None:
        return {}
    return {k: t.utc(v) if isinstance(v, datetime) else v for k, v in r._mapping.items()}


def _record(action: str, subject: str, before=None, after=None, reason: str = "") -> dict:
    """One audit record (services.common.audit) of one changed business object."""
    return {"action": action, "subject": subject, "before": before, "after": after, "reason": reason}


def _iso(at: datetime) -> str:
    """How services.common.audit writes `at`."""
    return at.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _move_record(m: d.Move, reason: str) -> dict:
    return _record(f"assignment.{m.action.lower()}", f"customer/{m.customer_id}",
                   {m.role: m.from_staff_id} if m.from_staff_id else None,
                   {m.role: m.to_staff_id} if m.to_staff_id else None, reason)


def _run_records(moves: Iterable[d.Move], reason: str) -> list[dict]:
    """A run's audit records: one per staff member for the customers placed
    in their book for the first time (a first full run places most of the
    bank: one record per customer would dominate it), one per customer for
    every transfer and removal of an existing relationship."""
    first: dict[tuple[str, str], list[str]] = {}
    records = []
    for m in moves:
        if m.from_staff_id is None:
            first.setdefault((m.to_staff_id, m.role), []).append(m.customer_id)
        else:
            records.append(_move_record(m, reason))
    placed = [_record("assignment.add", f"staff/{staff_id}", None,
                      {"role": role, "customers": sorted(customers)}, reason)
              for (staff_id, role), customers in sorted(first.items())]
    return placed + records



class ServiceBase:
    def __init__(self, engine: Engine, rules, clock: Callable[[], datetime] = _now, metrics=None):
        self.engine = engine
        self.rules = rules
        self.clock = clock
        self.metrics = metrics

    # --- helpers --------------------------------------------------------------------------

    def _tx(self, fn: Callable[[Connection], object]):
        def attempt():
            with self.engine.begin() as conn:
                return fn(conn)
        return retry_on_conflict(attempt)

    def policy(self) -> tuple[d.Policy, int]:
        active = self.rules.active(POLICY_RULESET)
        return d.Policy.from_parameters(active.document.parameters), active.version

    def needed_roles(self, rows: Sequence[Mapping]) -> tuple[list[tuple[str, ...]], int]:
        """Roles the active policy asks for, per customer row. Distinct inputs are
        evaluated once (most customers of a tier look alike to the policy)."""
        active = self.rules.active(POLICY_RULESET)
        inputs = [d.policy_input(r["tier"], r["has_personal_loan"], r["annual_card_spend_fen"],
                                 r["annual_avg_aum_fen"], r["card_level"]) for r in rows]
        keys = [tuple(sorted(i.items())) for i in inputs]
        distinct = list(dict.fromkeys(keys))
        evaluations = active.evaluate_many([dict(k) for k in distinct]) if distinct else []
        roles = {k: tuple(sorted(e.outcome.get("roles") or ())) for k, e in zip(distinct, evaluations)}
        return [roles[k] for k in keys], active.version

    def _org(self, conn: Connection) -> d.OrgTree:
        return d.OrgTree(dict(conn.execute(select(t.branches.c.branch_id, t.branches.c.parent_branch_id)).all()))

    def _staff(self, conn: Connection, staff_id: str, field_name: str = "staff_id") -> d.StaffMember:
        r = conn.execute(select(t.staff).where(t.staff.c.staff_id == staff_id)).first()
        if r is None:
            raise NotFound(f"staff {staff_id} not found")
        return d.StaffMember(r.staff_id, r.branch_id, r.role, r.active)

    def _locked_roots(self, conn: Connection) -> set[str]:
        today = self.clock().date().isoformat()
        return set(conn.execute(select(t.lock_periods.c.branch_id).where(
            t.lock_periods.c.status == "OPEN", t.lock_periods.c.starts_on <= today)).scalars())

    def _open_period_for(self, conn: Connection, org: d.OrgTree, branch_id: str) -> str | None:
        ancestors = set(org.chain(branch_id))
        today = self.clock().date().isoformat()
        for r in conn.execute(select(t.lock_periods).where(t.lock_periods.c.status == "OPEN",
                                                           t.lock_periods.c.starts_on <= today)):
            if r.branch_id in ancestors:
                return r.period_id
        return None

    def audit(self, conn: Connection, actor: str, records: Iterable[dict]) -> None:
        """Appends to the hash chain: the LAST statement of every mutating
        transaction (on PostgreSQL it holds the chain's lock until commit). The
        request id is the RPC's x-request-id."""
        records = iter(records)
        while chunk := list(islice(records, AUDIT_CHUNK)):
            append_audit_many(conn, t.audit_log, chunk, actor=actor, at=self.clock())

    def _decision(self, action: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.decision(action, outcome)

