"""What every use case of assignment shares: plain values, the transaction
helper, the policy, the org tree and the audit append."""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import islice
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, select

from services.common.audit import append_audit_many
from services.common.db import retry_on_conflict
from services.common.errors import InvalidArgument, NotFound
from services.common.paging import decode_token, encode_token, scope
from services.common.paging import page_size as checked_page_size

from . import domain as d
from . import store as t
from .rules_kind import POLICY_RULESET


# The bank's calendar: lock periods are dated in Asia/Shanghai.
BANK_TZ = ZoneInfo("Asia/Shanghai")
DATE_PATTERN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
INCREMENTAL_BATCH = 50_000
# Several feed entries of one customer before a run: the suggestion names the strongest.
CAUSE_RANK = (d.TIER_CHANGE, d.HOME_BRANCH_CHANGE, d.GROUP_CHANGE)
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
    group_keys: Mapping[str, str] = field(default_factory=dict)  # e.g. payroll_employer_id
    from_tier: str = ""
    previous_home_branch_id: str = ""

    @property
    def cause(self) -> str:
        """What this entry changed, as a suggestion names it."""
        if not self.from_tier or self.from_tier != self.tier:
            return d.TIER_CHANGE
        if self.previous_home_branch_id and self.previous_home_branch_id != self.home_branch_id:
            return d.HOME_BRANCH_CHANGE
        return d.GROUP_CHANGE


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
        parents, levels = {}, {}
        for b, p, level in conn.execute(select(t.branches.c.branch_id, t.branches.c.parent_branch_id,
                                               t.branches.c.level)):
            parents[b], levels[b] = p, level
        return d.OrgTree(parents, levels)

    def today(self) -> str:
        """Today in the bank's calendar, YYYY-MM-DD."""
        return self.clock().astimezone(BANK_TZ).date().isoformat()

    def _staff(self, conn: Connection, staff_id: str, field_name: str = "staff_id") -> d.StaffMember:
        r = conn.execute(select(t.staff).where(t.staff.c.staff_id == staff_id)).first()
        if r is None:
            raise NotFound(f"staff {staff_id} not found")
        return d.StaffMember(r.staff_id, r.branch_id, r.role, r.active)

    def _in_force(self):
        """The lock periods in force today: OPEN, starts_on <= today <= ends_on."""
        today = self.today()
        lp = t.lock_periods.c
        return select(t.lock_periods).where(lp.status == "OPEN", lp.starts_on <= today, lp.ends_on >= today)

    def _locked_roots(self, conn: Connection) -> set[str]:
        return {r.branch_id for r in conn.execute(self._in_force())}

    def _open_period_for(self, conn: Connection, org: d.OrgTree, branch_id: str) -> str | None:
        ancestors = set(org.chain(branch_id))
        for r in conn.execute(self._in_force().order_by(t.lock_periods.c.id)):
            if r.branch_id in ancestors:
                return r.period_id
        return None

    @staticmethod
    def _page(page_size: int, page_token: str, list_name: str, *filters: object) -> tuple[int, int, str]:
        """(limit, offset, token scope) of an offset-paged read. The token is
        signed for the list and its filters, so no other list's token is taken."""
        token_scope = scope(list_name, *filters)
        offset = decode_token(page_token, token_scope, expect=int) or 0
        if offset < 0:
            raise InvalidArgument(violations=[("page_token", "not a page token this list returned")])
        return checked_page_size(page_size), offset, token_scope

    @staticmethod
    def _next(offset: int, limit: int, total: int, token_scope: str) -> str:
        return encode_token(offset + limit, token_scope) if offset + limit < total else ""

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

