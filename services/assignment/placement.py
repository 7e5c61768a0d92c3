"""Use cases: following the feed and placing customers (assignment runs)."""
from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from itertools import chain

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from services.common.errors import NotFound

from . import domain as d
from . import store as t
from .base import CAUSE_RANK, INCREMENTAL_BATCH, CustomerChange, RunResult, ServiceBase, _record, _run_records


def _run_to_json(r: RunResult) -> str:
    return json.dumps(asdict(r), default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v))


def _run_from_json(s: str) -> RunResult:
    raw = json.loads(s)
    for k in ("started_at", "finished_at"):
        if raw.get(k):
            raw[k] = datetime.fromisoformat(raw[k])
    return RunResult(**raw)

class PlacementUseCases(ServiceBase):
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
        cause: dict[str, str] = {}  # the strongest cause among a customer's entries in the batch
        for c in sorted(changes, key=lambda c: c.cursor):
            latest[c.customer_id] = c
            cause[c.customer_id] = min(cause.get(c.customer_id, c.cause), c.cause, key=CAUSE_RANK.index)
        rows = [{"customer_id": c.customer_id, "tier": c.tier or "", "segments": t.join_codes(c.segments),
                 "flags": t.join_codes(c.flags), "home_branch_id": c.home_branch_id or "",
                 "has_personal_loan": bool(c.has_personal_loan),
                 "annual_card_spend_fen": int(c.annual_card_spend_fen or 0),
                 "annual_avg_aum_fen": int(c.annual_avg_aum_fen or 0), "card_level": c.card_level or "",
                 "cursor": int(c.cursor), "changed_at": c.changed_at,
                 "group_keys": json.dumps(dict(sorted((c.group_keys or {}).items())), ensure_ascii=False),
                 "change_cause": cause[c.customer_id]} for c in latest.values()]
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
        if not dry_run:
            self.end_periods()  # books whose lock period ended are placed by this run
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
            tier_of = {r.customer_id: r.tier for r in rows}
            plan, _team = self._plan(conn, rows, roles, org, policy, whole=not (only_changed or branch_id))
            result = RunResult(
                run_id=uuid.uuid4().hex, branch_id=branch_id, dry_run=dry_run, assigned=plan.count(d.ADD),
                moved=plan.count(d.TRANSFER), removed=plan.count(d.REMOVE), unchanged=plan.unchanged,
                unplaced=[{"customer_id": u.customer_id, "role": u.role, "reason": u.reason,
                           "branch_id": u.branch_id, "tier": tier_of.get(u.customer_id, ""), "tried": list(u.tried)}
                          for u in plan.unplaced],
                started_at=started)
            if dry_run:
                result.suggestions_created = len(plan.suggestions)
                result.finished_at = self.clock()
                return result
            self._apply_plan(conn, plan)
            suggested: list[dict] = self._supersede_applied(conn, plan.moves, result.run_id)
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

    def _plan(self, conn: Connection, rows, roles: dict[str, tuple[str, ...]], org: d.OrgTree, policy: d.Policy,
              whole: bool) -> tuple[d.Plan, list[d.StaffMember]]:
        """The placement of ``rows`` (customers with ``roles``) against the
        books as stored; shared by runs and the downstream-impact dry run
        (impact.py), so both plan the same way."""
        scope = [d.CustomerNeed(r.customer_id, r.home_branch_id, roles[r.customer_id]) for r in rows]
        current = self._current_books(conn, [r.customer_id for r in rows], whole=whole)
        team = [d.StaffMember(r.staff_id, r.branch_id, r.role, r.active) for r in conn.execute(select(t.staff))]
        plan = d.plan_assignment(scope, current, team, t.book_loads(conn), org, policy, self._locked_roots(conn))
        return plan, team

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
        """The customers nobody could take, replaced for the run's scope; `since`
        is kept for a (customer, role) that stays unplaced."""
        u = t.unplaced.c
        if whole:
            since = {(c, r): s for c, r, s in conn.execute(select(u.customer_id, u.role, u.since))}
            conn.execute(delete(t.unplaced))
        else:
            since = {}
            for i in range(0, len(customer_ids), 5000):
                chunk = customer_ids[i:i + 5000]
                since.update({(c, r): s for c, r, s in conn.execute(
                    select(u.customer_id, u.role, u.since).where(u.customer_id.in_(chunk)))})
                conn.execute(delete(t.unplaced).where(u.customer_id.in_(chunk)))
        now = self.clock()
        stored = [{"customer_id": r["customer_id"], "role": r["role"], "reason": r["reason"],
                   "branch_id": r["branch_id"], "tier": r["tier"], "tried": ",".join(r.get("tried") or ()),
                   "since": since.get((r["customer_id"], r["role"])) or now} for r in rows]
        for start in range(0, len(stored), 10_000):
            conn.execute(insert(t.unplaced), stored[start:start + 10_000])

    def _supersede_applied(self, conn: Connection, moves: Sequence[d.Move], run_id: str) -> list[dict]:
        """Pending requests on a (customer, role) the run has just changed itself
        (e.g. a suggestion once its lock period ended) are SUPERSEDED, naming the run."""
        if not moves:
            return []
        changed = {(m.customer_id, m.role) for m in moves}
        cr = t.change_requests.c
        stale = [r.change_request_id for r in conn.execute(select(cr.change_request_id, cr.customer_id, cr.role)
                                                             .where(cr.status == d.PENDING))
                 if (r.customer_id, r.role) in changed]
        if not stale:
            return []
        by = f"run/{run_id}"
        conn.execute(update(t.change_requests).where(cr.change_request_id.in_(stale)).values(
            status=d.SUPERSEDED, decided_at=self.clock(), superseded_by=by,
            decision_comment=f"superseded by assignment {by}"))
        return [_record("change_request.supersede", f"change_request/{cid}", {"status": d.PENDING},
                        {"status": d.SUPERSEDED, "superseded_by": by}, "the assignment run made the change")
                for cid in stale]

    def _suggest(self, conn: Connection, moves: Sequence[d.Move], org: d.OrgTree, policy: d.Policy,
                 records: list[dict]) -> int:
        """Suggested change requests for what a lock stopped. An identical pending one
        is left alone (a re-run suggests nothing new); a different one supersedes."""
        created = 0
        found = conn.execute(select(t.customers.c.customer_id, t.customers.c.home_branch_id,
                                    t.customers.c.change_cause).where(
            t.customers.c.customer_id.in_(sorted({m.customer_id for m in moves})))).all() if moves else []
        homes = {r.customer_id: r.home_branch_id for r in found}
        causes = {r.customer_id: r.change_cause for r in found}
        for m in moves:
            pending = conn.execute(select(t.change_requests).where(
                t.change_requests.c.customer_id == m.customer_id, t.change_requests.c.role == m.role,
                t.change_requests.c.status == d.PENDING)).all()
            if any(p.action == m.action and p.from_staff_id == m.from_staff_id and p.to_staff_id == m.to_staff_id
                   for p in pending):
                continue
            cause = m.cause or causes.get(m.customer_id) or d.TIER_CHANGE
            self._insert_request(conn, d.SYSTEM, m.customer_id, m.role, m.action, m.from_staff_id, m.to_staff_id,
                                 d.CAUSE_TEXT.get(cause, cause), None, True, homes.get(m.customer_id, ""), org,
                                 policy, records, cause=cause)
            created += 1
        return created

