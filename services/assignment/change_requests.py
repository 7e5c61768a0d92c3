"""Use cases: maker/checker change requests."""
from __future__ import annotations

import uuid

from sqlalchemy import Connection, and_, delete, insert, select, update

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound

from . import domain as d
from . import store as t
from .base import ServiceBase, _record, _row


class ChangeRequestUseCases(ServiceBase):
    def _insert_request(self, conn, actor, customer_id, role, action, from_id, to_id, reason, request_id,
                        suggested, branch_id, org, policy, records: list[dict], cause: str = d.MANUAL) -> dict:
        """Files a request (superseding a pending one of the same customer and role,
        which then names this one); its audit records go to `records` for the
        caller's end of transaction."""
        now = self.clock()
        new_id = "CR-" + uuid.uuid4().hex[:20]
        for p in conn.execute(select(t.change_requests).where(
                t.change_requests.c.customer_id == customer_id, t.change_requests.c.role == role,
                t.change_requests.c.status == d.PENDING)).all():
            conn.execute(update(t.change_requests).where(
                t.change_requests.c.change_request_id == p.change_request_id).values(
                status=d.SUPERSEDED, decided_at=now, superseded_by=new_id,
                decision_comment=f"superseded by {new_id}"))
            records.append(_record("change_request.supersede", f"change_request/{p.change_request_id}",
                                   {"status": d.PENDING}, {"status": d.SUPERSEDED, "superseded_by": new_id},
                                   "a newer request for the same customer and role"))
        row = {"change_request_id": new_id, "customer_id": customer_id, "role": role,
               "action": action, "from_staff_id": from_id, "to_staff_id": to_id, "reason": reason or "",
               "status": d.PENDING, "requested_by": actor, "suggested": suggested, "created_at": now,
               "expires_at": now + policy.expiry, "branch_id": branch_id,
               "period_id": self._open_period_for(conn, org, branch_id), "request_id": request_id or None,
               "cause": cause}
        conn.execute(insert(t.change_requests).values(**row))
        records.append(_record("change_request.create", f"change_request/{row['change_request_id']}", None, row,
                               reason or ""))
        return row

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
            # The customer's row lock: two makers at once cannot both leave a pending
            # request for one customer (the second supersedes the first).
            customer = self._customer_view(conn, customer_id, lock=True)
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
            raise FailedPrecondition(f"change request {change_request_id} is {request['status']}, not PENDING",
                                     reason="CONFLICT", metadata={"change_request_id": change_request_id,
                                                                  "status": request["status"]})

        def tx(conn):
            org = self._org(conn)
            approver_branch = conn.execute(select(t.staff.c.branch_id).where(t.staff.c.staff_id == approver)).scalar()
            policy, _ = self.policy()
            d.check_approver(approver, approver_branch, request["requested_by"], request["branch_id"], org, is_admin,
                             policy.approver_level)
            touched = [s for s in (request["from_staff_id"], request["to_staff_id"]) if s]
            if approve:
                t.lock_staff(conn, touched)
            current = conn.execute(select(t.change_requests).where(
                t.change_requests.c.change_request_id == change_request_id).with_for_update()).first()
            if current.status != d.PENDING:
                raise FailedPrecondition(f"change request {change_request_id} is {current.status}, not PENDING",
                                         reason="CONFLICT", metadata={"change_request_id": change_request_id,
                                                                      "status": current.status})
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

