"""Use cases: what a branch reads (books, managers, audit trail, gauges)."""
from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import func, select

from services.common.errors import NotFound

from . import domain as d
from . import store as t
from .base import BookView, ManagerView, ServiceBase, _iso, _row
from .group_claims import customer_fields


class ReadUseCases(ServiceBase):
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
            fields = customer_fields(c)
            rows = conn.execute(select(t.group_claims, t.staff.c.role.label("staff_role"))
                                .join(t.staff, t.staff.c.staff_id == t.group_claims.c.staff_id)
                                .where(t.group_claims.c.group_code.in_(segments or ("",)))
                                .order_by(t.group_claims.c.claim_id)).all()
            for r in rows:
                if d.claim_covers(r.group_code, json.loads(r.selector_json), r.scope_branch_id, segments, fields,
                                  c.home_branch_id, org):
                    out.append(ManagerView(r.staff_id, r.staff_role, "GROUP", t.utc(r.claimed_at), r.group_code))
        return out

    def list_audit_events(self, page_size: int, page_token: str, subject: str = "", actor: str = "",
                          action: str = "", start: datetime | None = None, end: datetime | None = None
                          ) -> tuple[list[dict], str]:
        """The audit chain, newest first; `start` ≤ at < `end` (aware datetimes)."""
        from services.common.audit import events_query
        from services.common.paging import decode_token, encode_token, scope
        from services.common.paging import page_size as checked_size
        limit = checked_size(page_size)
        token_scope = scope("assignment.ListAuditEvents", subject, actor, action, start, end)
        before_id = decode_token(page_token, token_scope, expect=int)
        q = events_query(t.audit_log, before_id, subject, actor, action,
                         _iso(start) if start is not None else "", _iso(end) if end is not None else "")
        with self.engine.connect() as conn:
            rows = [{"event_id": r.id, "at": datetime.fromisoformat(r.at), "actor": r.actor, "action": r.action,
                     "subject": r.subject, "before": json.loads(r.before_json), "after": json.loads(r.after_json),
                     "reason": r.reason, "request_id": r.request_id}
                    for r in conn.execute(q.limit(limit + 1))]
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
            locks = len(conn.execute(self._in_force()).all())  # in force today, not merely OPEN
            feed = conn.execute(select(t.feed_state).where(t.feed_state.c.feed == "tiering")).first()
        return {"fill": fill, "unplaced": unplaced, "pending": pending, "overdue": overdue, "locks": locks,
                "cursor": feed.cursor if feed else 0,
                "last_change_at": t.utc(feed.last_change_at) if feed else None}

    # --- what a branch sees of itself -------------------------------------------------------

    def list_branches(self, branch_id: str, page_size: int, page_token: str) -> tuple[list[dict], str]:
        """The branch and everything below it (empty = all), by branch id."""
        limit, offset, token_scope = self._page(page_size, page_token, "assignment.ListBranches", branch_id)
        with self.engine.connect() as conn:
            org = self._org(conn)
            if branch_id and branch_id not in org:
                raise NotFound(f"branch {branch_id[:64]} not found")
            rows = [_row(r) for r in conn.execute(select(t.branches).order_by(t.branches.c.branch_id))
                    if not branch_id or org.within(r.branch_id, branch_id)]
        return rows[offset:offset + limit], self._next(offset, limit, len(rows), token_scope)

    def list_staff(self, branch_id: str, role: str, page_size: int, page_token: str) -> tuple[list[dict], str]:
        """Staff of the branch and the units below it (empty = all), optionally of one role, by staff id."""
        limit, offset, token_scope = self._page(page_size, page_token, "assignment.ListStaff", branch_id, role)
        with self.engine.connect() as conn:
            org = self._org(conn)
            if branch_id and branch_id not in org:
                raise NotFound(f"branch {branch_id[:64]} not found")
            q = select(t.staff).order_by(t.staff.c.staff_id)
            if role:
                q = q.where(t.staff.c.role == role)
            rows = [_row(r) for r in conn.execute(q) if not branch_id or org.within(r.branch_id, branch_id)]
        return rows[offset:offset + limit], self._next(offset, limit, len(rows), token_scope)

    def list_unplaced(self, branch_id: str, page_size: int, page_token: str) -> tuple[list[dict], str]:
        """Customers nobody could take (as the last run left them), whose home is
        the branch or below it (empty = all), by customer id and role."""
        limit, offset, token_scope = self._page(page_size, page_token, "assignment.ListUnplaced", branch_id)
        u = t.unplaced.c
        with self.engine.connect() as conn:
            org = self._org(conn)
            if branch_id and branch_id not in org:
                raise NotFound(f"branch {branch_id[:64]} not found")
            q = select(t.unplaced).order_by(u.customer_id, u.role)
            if not branch_id:
                rows = [_row(r) for r in conn.execute(q.offset(offset).limit(limit + 1))]
                return rows[:limit], self._next(offset, limit, offset + len(rows), token_scope)
            below = [b for b in conn.execute(select(t.branches.c.branch_id)).scalars() if org.within(b, branch_id)]
            rows = [_row(r) for r in conn.execute(q.where(u.branch_id.in_(below)).offset(offset).limit(limit + 1))]
        return rows[:limit], self._next(offset, limit, offset + len(rows), token_scope)
