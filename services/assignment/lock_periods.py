"""Use cases: lock periods (管户锁包)."""
from __future__ import annotations

from datetime import date

from sqlalchemy import insert, select, update

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

