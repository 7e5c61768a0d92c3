"""Use cases: lock periods (管户锁包)."""
from __future__ import annotations

from datetime import date

from sqlalchemy import insert, or_, select, update

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound

from . import domain as d
from . import store as t
from .base import DATE_PATTERN, ServiceBase, _record, _row


class LockPeriodUseCases(ServiceBase):
    # --- lock periods ---------------------------------------------------------------------

    def open_lock_period(self, actor: str, period_id: str, branch_id: str, starts_on: str, ends_on: str) -> dict:
        violations = []
        if not period_id:
            violations.append(("period_id", "required"))
        elif len(period_id) > 64:
            violations.append(("period_id", "at most 64 characters"))
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
        today = self.today()
        if "ends_on" in parsed and ends_on < today:  # it would never lock anything
            violations.append(("ends_on", f"the period has already ended (today is {today} in Asia/Shanghai)"))
        if violations:
            raise InvalidArgument(violations=violations)

        def tx(conn):
            org = self._org(conn)
            if branch_id not in org:
                raise NotFound(f"branch {branch_id} not found")
            t.serialize_lock_periods(conn)
            # Overlapping periods on one unit (or a unit above / below it) are refused,
            # not merged: each period keeps the dates its branch decided.
            for p in conn.execute(select(t.lock_periods).where(t.lock_periods.c.status == "OPEN")):
                related = org.within(branch_id, p.branch_id) or org.within(p.branch_id, branch_id)
                if related and p.starts_on <= ends_on and starts_on <= p.ends_on:
                    raise FailedPrecondition(f"overlaps lock period {p.period_id} of {p.branch_id} "
                                             f"({p.starts_on}..{p.ends_on})", reason="CONFLICT",
                                             metadata={"period_id": p.period_id, "branch_id": p.branch_id,
                                                       "starts_on": p.starts_on, "ends_on": p.ends_on})
            if conn.execute(select(t.lock_periods.c.id).where(t.lock_periods.c.period_id == period_id,
                                                              t.lock_periods.c.branch_id == branch_id)).first():
                raise FailedPrecondition(f"lock period {period_id} of {branch_id} was already used",
                                         reason="CONFLICT", metadata={"period_id": period_id,
                                                                      "branch_id": branch_id})
            row = {"period_id": period_id, "branch_id": branch_id, "starts_on": starts_on, "ends_on": ends_on,
                   "status": "OPEN", "opened_at": self.clock(), "opened_by": actor}
            conn.execute(insert(t.lock_periods).values(**row))
            self.audit(conn, actor, [_record("lock_period.open", f"lock_period/{period_id}/{branch_id}", None, row)])
            return row | {"closed_at": None, "in_force": d.lock_in_force("OPEN", starts_on, ends_on, today)}
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
                raise FailedPrecondition(f"lock period {period_id} is already closed", reason="CONFLICT",
                                         metadata={"period_id": period_id})
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
            last = _row(open_[-1]) | {"status": "CLOSED", "closed_at": now, "in_force": False}
            return last, pending
        return self._tx(tx)


    def end_periods(self) -> int:
        """The end of every lock period that ended (its ends_on passed in
        Asia/Shanghai, or it was closed) and was not handled yet: the customers
        with pending suggestions under it are marked for placement, so the next
        automatic run applies what they suggested (superseding them, see
        `_supersede_applied`) or, where another period is still in force,
        re-suggests with cause PERIOD_END. Returns how many customers it marked."""
        today = self.today()
        lp = t.lock_periods.c

        def tx(conn):
            ended = conn.execute(select(t.lock_periods).where(
                lp.ended_at.is_(None), or_(lp.status == "CLOSED", lp.ends_on < today))
                .with_for_update()).all()
            if not ended:
                return 0
            org = self._org(conn)
            roots = {p.branch_id for p in ended}
            cr = t.change_requests.c
            customers = sorted({c for c, b in conn.execute(select(cr.customer_id, cr.branch_id).where(
                cr.status == d.PENDING, cr.suggested.is_(True))) if any(org.within(b, r) for r in roots)})
            for i in range(0, len(customers), 5000):
                conn.execute(update(t.customers).where(t.customers.c.customer_id.in_(customers[i:i + 5000]))
                             .values(change_cause=d.PERIOD_END, assigned_cursor=0))
            now = self.clock()
            conn.execute(update(t.lock_periods).where(lp.id.in_([p.id for p in ended])).values(ended_at=now))
            self.audit(conn, d.SYSTEM, [_record("lock_period.end", f"lock_period/{p.period_id}/{p.branch_id}",
                                                None, {"ended_at": now, "customers_to_place": len(customers)},
                                                "closed" if p.status == "CLOSED" else f"ended on {p.ends_on}")
                                        for p in ended])
            return len(customers)
        return self._tx(tx)

    def list_lock_periods(self, branch_id: str, page_size: int, page_token: str) -> tuple[list[dict], str]:
        """Periods on the branch, above it and below it (empty = all), newest start first."""
        limit, offset, token_scope = self._page(page_size, page_token, "assignment.ListLockPeriods", branch_id)
        today = self.today()
        with self.engine.connect() as conn:
            org = self._org(conn)
            if branch_id and branch_id not in org:
                raise NotFound(f"branch {branch_id} not found")
            rows = [_row(r) for r in conn.execute(select(t.lock_periods).order_by(
                t.lock_periods.c.starts_on.desc(), t.lock_periods.c.id.desc()))
                if not branch_id or org.within(branch_id, r.branch_id) or org.within(r.branch_id, branch_id)]
        page = rows[offset:offset + limit]
        for r in page:
            r["in_force"] = d.lock_in_force(r["status"], r["starts_on"], r["ends_on"], today)
        return page, self._next(offset, limit, len(rows), token_scope)
