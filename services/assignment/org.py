"""Use cases: the org tree and the staff."""
from __future__ import annotations


from sqlalchemy import select, update

from services.common.errors import InvalidArgument, NotFound

from . import domain as d
from . import store as t
from .base import ServiceBase, _record, _row


class OrgUseCases(ServiceBase):
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
            if before and (before["active"] and not row["active"] or before["branch_id"] != branch_id
                           or before["role"] != role):
                # Their customers need placing again; a suggestion (in a lock) names this cause.
                held = select(t.books.c.customer_id).where(t.books.c.staff_id == staff_id).scalar_subquery()
                conn.execute(update(t.customers).where(t.customers.c.customer_id.in_(held)).values(
                    change_cause=d.STAFF_DEACTIVATED, assigned_cursor=0))
            self.audit(conn, actor, [_record("staff.upsert", f"staff/{staff_id}", before or None, row)])
            return row, not before
        return self._tx(tx)

