"""Use cases of book assignment: plain values in, plain values out.

Each use case is one transaction (re-run by `retry_on_conflict` when it loses a
race on PostgreSQL). Approvals lock the staff rows they touch and then the
customer row, and re-check everything under those locks; an assignment run
locks every staff row first, so runs and approvals serialize on the books.
"""
from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from itertools import chain, islice

from sqlalchemy import Connection, Engine, and_, bindparam, delete, func, insert, select, update

from services.common.audit import append_audit_many
from services.common.db import retry_on_conflict
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound

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


class AssignmentService:
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

    # --- org and staff --------------------------------------------------------------------

    def upsert_branch(self, actor: str, branch_id: str, parent_branch_id: str, name: str, level: str
                      ) -> tuple[dict, bool]:
        def tx(conn):
            org = self._org(conn)
            d.check_branch(branch_id, parent_branch_id, level, org)
            if parent_branch_id:
                parent_level = conn.execute(select(t.branches.c.level).where(
                    t.branches.c.branch_id == parent_branch_id)).scalar_one()
                if not d.parent_level_ok(level, parent_level):
                    raise InvalidArgument(violations=[("parent_branch_id",
                                                       f"a {level} sits under a "
                                                       f"{d.LEVELS[d.LEVELS.index(level) - 1]}, "
                                                       f"not a {parent_level}")])
            before = _row(conn.execute(select(t.branches).where(t.branches.c.branch_id == branch_id)).first())
            row = {"branch_id": branch_id, "parent_branch_id": parent_branch_id or None, "name": name or "",
                   "level": level, "updated_at": self.clock()}
            t.upsert(conn, t.branches, [row], ["branch_id"])
            self.audit(conn, actor, [_record("branch.upsert", f"branch/{branch_id}", before or None, row)])
            return row, not before
        return self._tx(tx)

    def upsert_staff(self, actor: str, staff_id: str, branch_id: str, role: str, active: bool, name: str = ""
                     ) -> tuple[dict, bool]:
        policy, _ = self.policy()
        violations = []
        if not staff_id:
            violations.append(("staff_id", "required"))
        if role not in policy.roles:
            violations.append(("role", f"unknown role {role!r}; one of {', '.join(sorted(policy.roles))}"))
        if violations:
            raise InvalidArgument(violations=violations)

        def tx(conn):
            if conn.execute(select(t.branches.c.branch_id).where(t.branches.c.branch_id == branch_id)).first() is None:
                raise NotFound(f"branch {branch_id} not found")
            before = _row(conn.execute(select(t.staff).where(t.staff.c.staff_id == staff_id)).first())
            row = {"staff_id": staff_id, "branch_id": branch_id, "role": role, "active": bool(active),
                   "name": name or "", "updated_at": self.clock()}
            t.upsert(conn, t.staff, [row], ["staff_id"])
            self.audit(conn, actor, [_record("staff.upsert", f"staff/{staff_id}", before or None, row)])
            return row, not before
        return self._tx(tx)

    # --- the feed -------------------------------------------------------------------------

    def feed_cursor(self, feed: str = "tiering") -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(t.feed_state.c.cursor).where(t.feed_state.c.feed == feed)).scalar() or 0

    def apply_changes(self, changes: Sequence[CustomerChange], feed: str = "tiering") -> int:
        """Stores a batch of feed entries and the feed cursor in ONE transaction, so
        a restart resumes exactly after the last stored entry. Entries at or below
        the stored cursor are skipped (a replay changes nothing). Returns how many
        were applied."""
        if not changes:
            return 0
        latest: dict[str, CustomerChange] = {}
        for c in sorted(changes, key=lambda c: c.cursor):
            latest[c.customer_id] = c
        rows = [{"customer_id": c.customer_id, "tier": c.tier or "", "segments": t.join_codes(c.segments),
                 "flags": t.join_codes(c.flags), "home_branch_id": c.home_branch_id or "",
                 "has_personal_loan": bool(c.has_personal_loan),
                 "annual_card_spend_fen": int(c.annual_card_spend_fen or 0),
                 "annual_avg_aum_fen": int(c.annual_avg_aum_fen or 0), "card_level": c.card_level or "",
                 "cursor": int(c.cursor), "changed_at": c.changed_at} for c in latest.values()]
        roles, version = self.needed_roles(rows)
        for row, r in zip(rows, roles):
            row["roles"], row["policy_version"] = ",".join(r), version
        top = max(c.cursor for c in changes)
        last_at = max((c.changed_at for c in changes if c.changed_at), default=None)

        def tx(conn):
            done = conn.execute(select(t.feed_state.c.cursor).where(t.feed_state.c.feed == feed)
                                .with_for_update()).scalar() or 0
            fresh = [r for r in rows if r["cursor"] > done]
            t.upsert(conn, t.customers, fresh, ["customer_id"])
            if top > done:
                t.upsert(conn, t.feed_state, [{"feed": feed, "cursor": top, "last_change_at": last_at,
                                               "updated_at": self.clock()}], ["feed"])
            return len(fresh)
        return self._tx(tx)

    # --- assignment runs ------------------------------------------------------------------

    def run_assignment(self, actor: str, branch_id: str = "", dry_run: bool = False, request_id: str = "",
                       only_changed: bool = False) -> RunResult:
        """Places every customer in scope (a branch and below; '' = all; only_changed =
        customers whose feed entry has not been assigned yet)."""
        if request_id and not dry_run:
            with self.engine.connect() as conn:
                stored = conn.execute(select(t.runs.c.result_json).where(
                    t.runs.c.actor == actor, t.runs.c.request_id == request_id)).scalar()
            if stored:
                return _run_from_json(stored)
        policy, version = self.policy()
        started = self.clock()

        def tx(conn):
            if not dry_run:
                t.serialize_runs(conn)
                t.lock_staff(conn)
            org = self._org(conn)
            if branch_id and branch_id not in org:
                raise NotFound(f"branch {branch_id} not found")
            fence = conn.execute(select(t.feed_state.c.cursor).where(t.feed_state.c.feed == "tiering")).scalar() or 0
            cols = [t.customers.c.customer_id, t.customers.c.home_branch_id, t.customers.c.roles,
                    t.customers.c.policy_version, t.customers.c.tier, t.customers.c.cursor]
            q = select(*cols)
            if only_changed:
                q = q.where(t.customers.c.cursor > t.customers.c.assigned_cursor, t.customers.c.cursor <= fence
                            ).order_by(t.customers.c.cursor).limit(INCREMENTAL_BATCH)
            rows = conn.execute(q).all()
            if only_changed and len(rows) == INCREMENTAL_BATCH:
                fence = rows[-1].cursor
            if branch_id:
                rows = [r for r in rows if org.within(r.home_branch_id, branch_id)]
            roles = self._current_roles(conn, rows, version, dry_run)
            scope = [d.CustomerNeed(r.customer_id, r.home_branch_id, roles[r.customer_id]) for r in rows]
            tier_of = {r.customer_id: r.tier for r in rows}
            current = self._current_books(conn, [r.customer_id for r in rows], whole=not (only_changed or branch_id))
            team = [d.StaffMember(r.staff_id, r.branch_id, r.role, r.active) for r in conn.execute(select(t.staff))]
            plan = d.plan_assignment(scope, current, team, t.book_loads(conn), org, policy,
                                     self._locked_roots(conn))
            result = RunResult(
                run_id=uuid.uuid4().hex, branch_id=branch_id, dry_run=dry_run, assigned=plan.count(d.ADD),
                moved=plan.count(d.TRANSFER), removed=plan.count(d.REMOVE), unchanged=plan.unchanged,
                unplaced=[{"customer_id": u.customer_id, "role": u.role, "reason": u.reason,
                           "branch_id": u.branch_id, "tier": tier_of.get(u.customer_id, "")} for u in plan.unplaced],
                started_at=started)
            if dry_run:
                result.suggestions_created = len(plan.suggestions)
                result.finished_at = self.clock()
                return result
            self._apply_plan(conn, plan)
            suggested: list[dict] = []
            result.suggestions_created = self._suggest(conn, plan.suggestions, org, policy, suggested)
            self._store_unplaced(conn, [r.customer_id for r in rows], result.unplaced,
                                 whole=not (only_changed or branch_id))
            if not branch_id:
                conn.execute(update(t.customers).where(
                    t.customers.c.cursor > t.customers.c.assigned_cursor, t.customers.c.cursor <= fence)
                    .values(assigned_cursor=t.customers.c.cursor))
            result.finished_at = self.clock()
            summary = []
            if not only_changed or plan.moves or plan.suggestions:  # background passes with nothing to do: no trace
                conn.execute(insert(t.runs).values(
                    run_id=result.run_id, branch_id=branch_id, actor=actor, request_id=request_id or None,
                    started_at=started, finished_at=result.finished_at, result_json=_run_to_json(result)))
                summary = [_record("assignment.run", f"run/{result.run_id}", None,
                                   {k: v for k, v in asdict(result).items() if k != "unplaced"}
                                   | {"unplaced": len(result.unplaced), "request_id": request_id})]
            reason = f"assignment run {result.run_id}"
            self.audit(conn, actor, chain(_run_records(plan.moves, reason), suggested, summary))
            return result
        result = self._tx(tx)
        self._decision("run", "dry_run" if dry_run else "applied")
        return result

    def pending_changes(self, limit: int) -> int:
        """Customers whose latest feed entry is not placed yet (counted up to `limit`)."""
        with self.engine.connect() as conn:
            return len(conn.execute(select(t.customers.c.customer_id).where(
                t.customers.c.cursor > t.customers.c.assigned_cursor).limit(limit)).all())

    def _current_roles(self, conn: Connection, rows, version: int, dry_run: bool) -> dict[str, tuple[str, ...]]:
        """Roles per customer, re-evaluated only where a newer policy was published."""
        roles = {r.customer_id: t.split_codes(r.roles) for r in rows}
        stale = [r.customer_id for r in rows if r.policy_version != version]
        for start in range(0, len(stale), 5000):
            ids = stale[start:start + 5000]
            full = conn.execute(select(t.customers).where(t.customers.c.customer_id.in_(ids))).mappings().all()
            fresh, _ = self.needed_roles(full)
            updates = []
            for row, r in zip(full, fresh):
                roles[row["customer_id"]] = r
                updates.append({"cid": row["customer_id"], "roles": ",".join(r), "pv": version})
            if updates and not dry_run:
                conn.execute(update(t.customers).where(t.customers.c.customer_id == bindparam("cid"))
                             .values(roles=bindparam("roles"), policy_version=bindparam("pv")), updates)
        return roles

    def _current_books(self, conn: Connection, customer_ids: Sequence[str], whole: bool
                       ) -> dict[str, dict[str, str]]:
        current: dict[str, dict[str, str]] = {}
        q = select(t.books.c.customer_id, t.books.c.role, t.books.c.staff_id)
        if whole:
            chunks = [q]
        else:
            chunks = [q.where(t.books.c.customer_id.in_(customer_ids[i:i + 5000]))
                      for i in range(0, len(customer_ids), 5000)]
        for chunk in chunks:
            for cid, role, sid in conn.execute(chunk):
                current.setdefault(cid, {})[role] = sid
        return current

    def _apply_plan(self, conn: Connection, plan: d.Plan) -> None:
        now = self.clock()
        removed = [{"cid": m.customer_id, "r": m.role} for m in plan.moves if m.to_staff_id is None]
        moved = [{"cid": m.customer_id, "r": m.role, "s": m.to_staff_id, "now": now}
                 for m in plan.moves if m.action == d.TRANSFER]
        added = [{"customer_id": m.customer_id, "role": m.role, "staff_id": m.to_staff_id, "since": now}
                 for m in plan.moves if m.action == d.ADD]
        if removed:
            conn.execute(delete(t.books).where(t.books.c.customer_id == bindparam("cid"),
                                               t.books.c.role == bindparam("r")), removed)
        if moved:
            conn.execute(update(t.books).where(t.books.c.customer_id == bindparam("cid"),
                                               t.books.c.role == bindparam("r"))
                         .values(staff_id=bindparam("s"), since=bindparam("now")), moved)
        for start in range(0, len(added), 10_000):
            conn.execute(insert(t.books), added[start:start + 10_000])

    def _store_unplaced(self, conn: Connection, customer_ids: Sequence[str], rows: list[dict], whole: bool) -> None:
        if whole:
            conn.execute(delete(t.unplaced))
        else:
            for i in range(0, len(customer_ids), 5000):
                conn.execute(delete(t.unplaced).where(t.unplaced.c.customer_id.in_(customer_ids[i:i + 5000])))
        for start in range(0, len(rows), 10_000):
            conn.execute(insert(t.unplaced), rows[start:start + 10_000])

    def _suggest(self, conn: Connection, moves: Sequence[d.Move], org: d.OrgTree, policy: d.Policy,
                 records: list[dict]) -> int:
        """Suggested change requests for what a lock stopped. An identical pending one
        is left alone (a re-run suggests nothing new); a different one supersedes."""
        created = 0
        homes = dict(conn.execute(select(t.customers.c.customer_id, t.customers.c.home_branch_id).where(
            t.customers.c.customer_id.in_(sorted({m.customer_id for m in moves})))).all()) if moves else {}
        for m in moves:
            pending = conn.execute(select(t.change_requests).where(
                t.change_requests.c.customer_id == m.customer_id, t.change_requests.c.role == m.role,
                t.change_requests.c.status == d.PENDING)).all()
            if any(p.action == m.action and p.from_staff_id == m.from_staff_id and p.to_staff_id == m.to_staff_id
                   for p in pending):
                continue
            self._insert_request(conn, d.SYSTEM, m.customer_id, m.role, m.action, m.from_staff_id, m.to_staff_id,
                                 "the customer's tier or groups changed during a lock period", None, True,
                                 homes.get(m.customer_id, ""), org, policy, records)
            created += 1
        return created

    def _insert_request(self, conn, actor, customer_id, role, action, from_id, to_id, reason, request_id,
                        suggested, branch_id, org, policy, records: list[dict]) -> dict:
        """Files a request (superseding a pending one of the same customer and role);
        its audit records go to `records` for the caller's end of transaction."""
        now = self.clock()
        for p in conn.execute(select(t.change_requests).where(
                t.change_requests.c.customer_id == customer_id, t.change_requests.c.role == role,
                t.change_requests.c.status == d.PENDING)).all():
            conn.execute(update(t.change_requests).where(
                t.change_requests.c.change_request_id == p.change_request_id).values(
                status=d.SUPERSEDED, decided_at=now, decision_comment="superseded by a newer request"))
            records.append(_record("change_request.supersede", f"change_request/{p.change_request_id}",
                                   {"status": d.PENDING}, {"status": d.SUPERSEDED},
                                   "a newer request for the same customer"))
        row = {"change_request_id": "CR-" + uuid.uuid4().hex[:20], "customer_id": customer_id, "role": role,
               "action": action, "from_staff_id": from_id, "to_staff_id": to_id, "reason": reason or "",
               "status": d.PENDING, "requested_by": actor, "suggested": suggested, "created_at": now,
               "expires_at": now + policy.expiry, "branch_id": branch_id,
               "period_id": self._open_period_for(conn, org, branch_id), "request_id": request_id or None}
        conn.execute(insert(t.change_requests).values(**row))
        records.append(_record("change_request.create", f"change_request/{row['change_request_id']}", None, row,
                               reason or ""))
        return row

    # --- books and managers ---------------------------------------------------------------

    def get_book(self, staff_id: str, page_size: int, page_token: str) -> BookView:
        from services.common.paging import decode_token, encode_token, scope
        from services.common.paging import page_size as checked_size
        size_limit = checked_size(page_size)
        token_scope = scope("assignment.GetBook", staff_id)
        after = decode_token(page_token, token_scope, expect=str) or ""
        policy, _ = self.policy()
        with self.engine.connect() as conn:
            member = self._staff(conn, staff_id)
            size = t.book_size(conn, staff_id)
            ids = list(conn.execute(select(t.books.c.customer_id).where(
                t.books.c.staff_id == staff_id, t.books.c.customer_id > after)
                .order_by(t.books.c.customer_id).limit(size_limit + 1)).scalars())
            org = self._org(conn)
            locked = not self._locked_roots(conn).isdisjoint(org.chain(member.branch_id))
        book = policy.books.get(member.role, d.BookSize(0, 0))
        more = len(ids) > size_limit
        ids = ids[:size_limit]
        return BookView(staff_id, member.role, member.branch_id, size, book.initial, book.max, tuple(ids),
                        encode_token(ids[-1], token_scope) if more else "", locked)

    def customer_managers(self, customer_id: str) -> list[ManagerView]:
        with self.engine.connect() as conn:
            c = conn.execute(select(t.customers).where(t.customers.c.customer_id == customer_id)).first()
            if c is None:
                raise NotFound(f"customer {customer_id} not found")
            out = [ManagerView(r.staff_id, r.role, "TIER", t.utc(r.since)) for r in conn.execute(
                select(t.books).where(t.books.c.customer_id == customer_id).order_by(t.books.c.role))]
            org = self._org(conn)
            segments = t.split_codes(c.segments)
            fields = {k: getattr(c, k) for k in GROUP_SELECTOR_FIELDS}
            rows = conn.execute(select(t.group_claims, t.staff.c.branch_id.label("staff_branch"),
                                       t.staff.c.role.label("staff_role"))
                                .join(t.staff, t.staff.c.staff_id == t.group_claims.c.staff_id)
                                .where(t.group_claims.c.group_code.in_(segments or ("",)))
                                .order_by(t.group_claims.c.claim_id)).all()
            for r in rows:
                if d.claim_covers(r.group_code, json.loads(r.selector_json), r.staff_branch, segments, fields,
                                  c.home_branch_id, org):
                    out.append(ManagerView(r.staff_id, r.staff_role, "GROUP", t.utc(r.claimed_at), r.group_code))
        return out

    def claim_group(self, actor: str, staff_id: str, group: str, selector: Mapping[str, str], request_id: str
                    ) -> tuple[dict, int]:
        violations = []
        if not group:
            violations.append(("group", "required"))
        for key in selector:
            if key not in GROUP_SELECTOR_FIELDS:
                violations.append((f"selector.{key}", f"unknown field; one of {', '.join(GROUP_SELECTOR_FIELDS)}"))
        if violations:
            raise InvalidArgument(violations=violations)
        selector_json = json.dumps(dict(sorted(selector.items())), ensure_ascii=False)

        def tx(conn):
            member = self._staff(conn, staff_id)
            existing = conn.execute(select(t.group_claims).where(
                t.group_claims.c.group_code == group, t.group_claims.c.selector_json == selector_json)).first()
            if existing is not None:
                if existing.staff_id != staff_id:
                    raise FailedPrecondition(f"group {group} {selector_json} is already claimed by "
                                             f"{existing.staff_id}")
                claim = _row(existing)
            else:
                claim = {"claim_id": "GC-" + uuid.uuid4().hex[:20], "staff_id": staff_id, "group_code": group,
                         "selector_json": selector_json, "claimed_at": self.clock(), "claimed_by": actor,
                         "request_id": request_id or None}
                conn.execute(insert(t.group_claims).values(**claim))
            org = self._org(conn)
            covered = 0
            for c in conn.execute(select(t.customers).where(t.customers.c.segments.like(f"%,{group},%"))):
                fields = {k: getattr(c, k) for k in GROUP_SELECTOR_FIELDS}
                covered += d.claim_covers(group, selector, member.branch_id, t.split_codes(c.segments), fields,
                                          c.home_branch_id, org)
            if existing is None:
                self.audit(conn, actor, [_record("group.claim", f"group_claim/{claim['claim_id']}", None, claim)])
            return claim, covered
        return self._tx(tx)

    # --- lock periods ---------------------------------------------------------------------

    def open_lock_period(self, actor: str, period_id: str, branch_id: str, starts_on: str, ends_on: str) -> dict:
        violations = []
        if not period_id:
            violations.append(("period_id", "required"))
        parsed = {}
        for name, value in (("starts_on", starts_on), ("ends_on", ends_on)):
            # Exactly YYYY-MM-DD: stored as text and compared as text with today's date
            # (date.fromisoformat alone also takes 20260301 or 2026-W09-1).
            try:
                if not DATE_PATTERN.fullmatch(value or ""):
                    raise ValueError(value)
                parsed[name] = date.fromisoformat(value)
            except (TypeError, ValueError):
                violations.append((name, "a date YYYY-MM-DD"))
        if len(parsed) == 2 and parsed["ends_on"] < parsed["starts_on"]:
            violations.append(("ends_on", "before starts_on"))
        if violations:
            raise InvalidArgument(violations=violations)

        def tx(conn):
            org = self._org(conn)
            if branch_id not in org:
                raise NotFound(f"branch {branch_id} not found")
            for p in conn.execute(select(t.lock_periods).where(t.lock_periods.c.status == "OPEN")):
                related = org.within(branch_id, p.branch_id) or org.within(p.branch_id, branch_id)
                if related and p.starts_on <= ends_on and starts_on <= p.ends_on:
                    raise FailedPrecondition(f"overlaps lock period {p.period_id} of {p.branch_id} "
                                             f"({p.starts_on}..{p.ends_on})")
            if conn.execute(select(t.lock_periods.c.id).where(t.lock_periods.c.period_id == period_id,
                                                              t.lock_periods.c.branch_id == branch_id)).first():
                raise FailedPrecondition(f"lock period {period_id} of {branch_id} was already used")
            row = {"period_id": period_id, "branch_id": branch_id, "starts_on": starts_on, "ends_on": ends_on,
                   "status": "OPEN", "opened_at": self.clock(), "opened_by": actor}
            conn.execute(insert(t.lock_periods).values(**row))
            self.audit(conn, actor, [_record("lock_period.open", f"lock_period/{period_id}/{branch_id}", None, row)])
            return row | {"closed_at": None}
        return self._tx(tx)

    def close_lock_period(self, actor: str, period_id: str, branch_id: str = "") -> tuple[dict, int]:
        def tx(conn):
            q = select(t.lock_periods).where(t.lock_periods.c.period_id == period_id)
            if branch_id:
                q = q.where(t.lock_periods.c.branch_id == branch_id)
            periods = conn.execute(q.order_by(t.lock_periods.c.branch_id)).all()
            if not periods:
                raise NotFound(f"lock period {period_id} not found")
            open_ = [p for p in periods if p.status == "OPEN"]
            if not open_:
                raise FailedPrecondition(f"lock period {period_id} is already closed")
            now = self.clock()
            for p in open_:
                conn.execute(update(t.lock_periods).where(t.lock_periods.c.id == p.id).values(
                    status="CLOSED", closed_at=now, closed_by=actor))
            org = self._org(conn)
            roots = {p.branch_id for p in open_}
            pending = sum(1 for (b,) in conn.execute(select(t.change_requests.c.branch_id).where(
                t.change_requests.c.status == d.PENDING, t.change_requests.c.suggested.is_(True)))
                if any(org.within(b, r) for r in roots))
            self.audit(conn, actor, [_record("lock_period.close", f"lock_period/{period_id}/{p.branch_id}",
                                             {"status": "OPEN"}, {"status": "CLOSED", "closed_at": now})
                                     for p in open_])
            last = _row(open_[-1]) | {"status": "CLOSED", "closed_at": now}
            return last, pending
        return self._tx(tx)

    # --- change requests ------------------------------------------------------------------

    def _customer_view(self, conn: Connection, customer_id: str, lock: bool = False) -> d.CustomerView:
        c = t.lock_customer(conn, customer_id) if lock else conn.execute(
            select(t.customers).where(t.customers.c.customer_id == customer_id)).first()
        if c is None:
            raise NotFound(f"customer {customer_id} not found")
        managers = dict(conn.execute(select(t.books.c.role, t.books.c.staff_id).where(
            t.books.c.customer_id == customer_id)).all())
        return d.CustomerView(c.customer_id, c.home_branch_id, t.split_codes(c.roles), managers)

    def create_change_request(self, actor: str, customer_id: str, action: str, from_staff_id: str,
                              to_staff_id: str, reason: str, request_id: str = "") -> dict:
        policy, _ = self.policy()
        if request_id:
            existing = self.find_request_by_request_id(actor, request_id)
            if existing:
                return existing

        def tx(conn):
            customer = self._customer_view(conn, customer_id)
            from_staff = self._staff(conn, from_staff_id) if from_staff_id else None
            to_staff = self._staff(conn, to_staff_id) if to_staff_id else None
            org = self._org(conn)
            role = d.check_change(action, customer, from_staff, to_staff, org)
            records: list[dict] = []
            row = self._insert_request(conn, actor, customer_id, role, action, from_staff_id or None,
                                       to_staff_id or None, reason, request_id, False, customer.home_branch_id,
                                       org, policy, records)
            self.audit(conn, actor, records)
            return row
        row = self._tx(tx)
        self._decision("create", "pending")
        return self.get_change_request(row["change_request_id"])

    def find_request_by_request_id(self, actor: str, request_id: str) -> dict | None:
        with self.engine.connect() as conn:
            r = conn.execute(select(t.change_requests).where(t.change_requests.c.requested_by == actor,
                                                             t.change_requests.c.request_id == request_id)).first()
        return _row(r) or None

    def get_change_request(self, change_request_id: str) -> dict:
        with self.engine.connect() as conn:
            r = conn.execute(select(t.change_requests).where(
                t.change_requests.c.change_request_id == change_request_id)).first()
        if r is None:
            raise NotFound(f"change request {change_request_id} not found")
        return _row(r)

    def _expire_if_due(self, request: dict) -> dict:
        """Marks a pending request EXPIRED (committed) if its time is up."""
        if request["status"] != d.PENDING or not d.expired(t.utc(request["expires_at"]), self.clock()):
            return request

        def tx(conn):
            done = conn.execute(update(t.change_requests).where(
                t.change_requests.c.change_request_id == request["change_request_id"],
                t.change_requests.c.status == d.PENDING).values(status=d.EXPIRED, decided_at=self.clock()))
            if done.rowcount:  # a system action, whichever RPC noticed it
                self.audit(conn, d.SYSTEM, [_record(
                    "change_request.expire", f"change_request/{request['change_request_id']}",
                    {"status": d.PENDING}, {"status": d.EXPIRED}, "not decided before it expired")])
        self._tx(tx)
        return self.get_change_request(request["change_request_id"])

    def expire_due(self) -> int:
        """The periodic sweep: every pending request past its expiry → EXPIRED."""
        now = self.clock()
        with self.engine.connect() as conn:
            due = [_row(r) for r in conn.execute(select(t.change_requests).where(
                t.change_requests.c.status == d.PENDING, t.change_requests.c.expires_at <= now))]
        return sum(self._expire_if_due(r)["status"] == d.EXPIRED for r in due)

    def decide(self, approver: str, is_admin: bool, change_request_id: str, approve: bool, comment: str,
               request_id: str = "") -> dict:
        action = "approve" if approve else "reject"
        request = self._expire_if_due(self.get_change_request(change_request_id))
        wanted = d.APPROVED if approve else d.REJECTED
        if request["status"] != d.PENDING:
            if request_id and request["decision_request_id"] == request_id and request["decided_by"] == approver \
                    and request["status"] == wanted:
                return request  # a retried decision
            self._decision(action, "refused")
            raise FailedPrecondition(f"change request {change_request_id} is {request['status']}, not PENDING")

        def tx(conn):
            org = self._org(conn)
            approver_branch = conn.execute(select(t.staff.c.branch_id).where(t.staff.c.staff_id == approver)).scalar()
            d.check_approver(approver, approver_branch, request["requested_by"], request["branch_id"], org, is_admin)
            touched = [s for s in (request["from_staff_id"], request["to_staff_id"]) if s]
            if approve:
                t.lock_staff(conn, touched)
            current = conn.execute(select(t.change_requests).where(
                t.change_requests.c.change_request_id == change_request_id).with_for_update()).first()
            if current.status != d.PENDING:
                raise FailedPrecondition(f"change request {change_request_id} is {current.status}, not PENDING")
            now = self.clock()
            before = after = None
            if approve:
                policy, _ = self.policy()
                customer = self._customer_view(conn, request["customer_id"], lock=True)
                from_staff = self._staff(conn, request["from_staff_id"]) if request["from_staff_id"] else None
                to_staff = self._staff(conn, request["to_staff_id"]) if request["to_staff_id"] else None
                role = d.check_change(request["action"], customer, from_staff, to_staff, org)
                if to_staff is not None:
                    d.check_room(to_staff, t.book_size(conn, to_staff.staff_id), policy)
                before = dict(customer.managers)
                key = and_(t.books.c.customer_id == request["customer_id"], t.books.c.role == role)
                if request["action"] == d.ADD:
                    conn.execute(insert(t.books).values(customer_id=request["customer_id"], role=role,
                                                        staff_id=to_staff.staff_id, since=now))
                elif request["action"] == d.REMOVE:
                    conn.execute(delete(t.books).where(key))
                else:
                    conn.execute(update(t.books).where(key).values(staff_id=to_staff.staff_id, since=now))
                after = dict(before)
                if to_staff is None:
                    after.pop(role, None)
                else:
                    after[role] = to_staff.staff_id
            conn.execute(update(t.change_requests).where(
                t.change_requests.c.change_request_id == change_request_id).values(
                status=wanted, decided_by=approver, decided_at=now, decision_comment=comment or "",
                decision_request_id=request_id or None))
            records = [_record(f"change_request.{action}", f"change_request/{change_request_id}",
                               {"status": d.PENDING}, {"status": wanted, "decided_by": approver,
                                                       "decision_request_id": request_id or None}, comment or "")]
            if approve:
                records.append(_record(f"assignment.{request['action'].lower()}",
                                       f"customer/{request['customer_id']}", before, after,
                                       f"change request {change_request_id}"))
            self.audit(conn, approver, records)
        try:
            self._tx(tx)
        except FailedPrecondition:
            self._decision(action, "refused")
            raise
        self._decision(action, "applied" if approve else "rejected")
        return self.get_change_request(change_request_id)

    def list_change_requests(self, status: str, branch_id: str, customer_id: str, page_size: int,
                             page_token: str) -> tuple[list[dict], str]:
        from services.common.paging import decode_token, encode_token, scope
        from services.common.paging import page_size as checked_size
        limit = checked_size(page_size)
        token_scope = scope("assignment.ListChangeRequests", status, branch_id, customer_id)
        offset = decode_token(page_token, token_scope, expect=int) or 0
        self.expire_due()
        with self.engine.connect() as conn:
            q = select(t.change_requests)
            if status:
                q = q.where(t.change_requests.c.status == status)
            if customer_id:
                q = q.where(t.change_requests.c.customer_id == customer_id)
            if branch_id:
                org = self._org(conn)
                below = [b for b in conn.execute(select(t.branches.c.branch_id)).scalars() if org.within(b, branch_id)]
                q = q.where(t.change_requests.c.branch_id.in_(below or [branch_id]))
            rows = [_row(r) for r in conn.execute(q.order_by(t.change_requests.c.created_at.desc(),
                                                             t.change_requests.c.change_request_id.desc())
                                                  .offset(offset).limit(limit + 1))]
        more = len(rows) > limit
        return rows[:limit], (encode_token(offset + limit, token_scope) if more else "")

    def list_audit_events(self, page_size: int, page_token: str, subject: str = "", actor: str = "",
                          action: str = "", start: datetime | None = None, end: datetime | None = None
                          ) -> tuple[list[dict], str]:
        """The audit chain, newest first; `start` ≤ at < `end` (aware datetimes)."""
        from services.common.paging import decode_token, encode_token, scope
        from services.common.paging import page_size as checked_size
        limit = checked_size(page_size)
        token_scope = scope("assignment.ListAuditEvents", subject, actor, action, start, end)
        before_id = decode_token(page_token, token_scope, expect=int)
        log = t.audit_log
        q = select(log)
        for col, value in ((log.c.subject, subject), (log.c.actor, actor), (log.c.action, action)):
            if value:
                q = q.where(col == value)
        # `at` is stored as ISO 8601 UTC with microseconds: as text it sorts like time.
        if start is not None:
            q = q.where(log.c.at >= _iso(start))
        if end is not None:
            q = q.where(log.c.at < _iso(end))
        if before_id is not None:
            q = q.where(log.c.id < before_id)
        with self.engine.connect() as conn:
            rows = [{"event_id": r.id, "at": datetime.fromisoformat(r.at), "actor": r.actor, "action": r.action,
                     "subject": r.subject, "before": json.loads(r.before_json), "after": json.loads(r.after_json),
                     "reason": r.reason, "request_id": r.request_id}
                    for r in conn.execute(q.order_by(log.c.id.desc()).limit(limit + 1))]
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (encode_token(rows[-1]["event_id"], token_scope) if more else "")

    # --- metrics --------------------------------------------------------------------------

    def snapshot(self) -> dict:
        """Aggregates for the gauges."""
        policy, _ = self.policy()
        now = self.clock()
        with self.engine.connect() as conn:
            fill = {}
            for role, size, members in conn.execute(
                    select(t.staff.c.role, func.count(t.books.c.customer_id), func.count(func.distinct(t.staff.c.staff_id)))
                    .select_from(t.staff.outerjoin(t.books, t.books.c.staff_id == t.staff.c.staff_id))
                    .where(t.staff.c.active.is_(True)).group_by(t.staff.c.role)):
                book = policy.books.get(role)
                if book is not None and book.max and members:
                    fill[role] = (size, book.max * members)
            unplaced = dict(conn.execute(select(t.unplaced.c.reason, func.count()).group_by(t.unplaced.c.reason)).all())
            pending = conn.execute(select(func.count()).select_from(t.change_requests).where(
                t.change_requests.c.status == d.PENDING)).scalar_one()
            overdue = conn.execute(select(func.count()).select_from(t.change_requests).where(
                t.change_requests.c.status == d.PENDING, t.change_requests.c.expires_at <= now)).scalar_one()
            locks = conn.execute(select(func.count()).select_from(t.lock_periods).where(
                t.lock_periods.c.status == "OPEN")).scalar_one()
            feed = conn.execute(select(t.feed_state).where(t.feed_state.c.feed == "tiering")).first()
        return {"fill": fill, "unplaced": unplaced, "pending": pending, "overdue": overdue, "locks": locks,
                "cursor": feed.cursor if feed else 0,
                "last_change_at": t.utc(feed.last_change_at) if feed else None}


def _run_to_json(r: RunResult) -> str:
    return json.dumps(asdict(r), default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v))


def _run_from_json(s: str) -> RunResult:
    raw = json.loads(s)
    for k in ("started_at", "finished_at"):
        if raw.get(k):
            raw[k] = datetime.fromisoformat(raw[k])
    return RunResult(**raw)
