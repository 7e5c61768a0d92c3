"""`kequn up` with the demo (KEQUN_DEMO=1), seen through gRPC: tiering's demo
population reaches assignment's books, BR-2 is locked, three transfers wait
for an approver, and the audit chain of it all verifies."""
from __future__ import annotations

import time

from kequn.assignment.v1 import assignment_pb2 as apb
from kequn.assignment.v1 import assignment_pb2_grpc
from services.assignment.demo import org_rows, staff_rows
from services.assignment.store import audit_log
from services.common.audit import verify_chain
from services.common.db import make_engine
from tests.e2e.harness import Suite


def subtree(root: str) -> set[str]:
    rows = org_rows()
    found = {root}
    for _ in range(3):  # branch → sub-branch → outlet
        found |= {b for b, parent, _ in rows if parent in found}
    return found


def test_the_demo_org_books_lock_and_pending_requests(tmp_path):
    suite = Suite(tmp_path, services=("tiering", "assignment"), extra_env={"KEQUN_DEMO": "1"})
    try:
        suite.start()
        ops = assignment_pb2_grpc.AssignmentServiceStub(suite.channel("assignment", "operations"))
        pending_request = apb.ListChangeRequestsRequest(status=apb.CHANGE_REQUEST_STATUS_PENDING, page_size=100)
        deadline = time.monotonic() + 300
        while len(pending := ops.ListChangeRequests(pending_request).change_requests) < 3:  # the demo's last step
            assert time.monotonic() < deadline, suite.log("assignment")[-3000:]
            time.sleep(1)

        branches = ops.ListAuditEvents(apb.ListAuditEventsRequest(action="branch.upsert", page_size=1000))
        assert {e.subject for e in branches.audit_events} == {f"branch/{b}" for b, _, _ in org_rows()}
        books = {sid: ops.GetBook(apb.GetBookRequest(staff_id=sid, page_size=1)) for sid, _, _ in staff_rows()}
        by_role: dict[str, int] = {}
        for book in books.values():
            by_role[book.role] = by_role.get(book.role, 0) + book.size
            assert book.locked == (book.branch_id in subtree("BR-2")), book
            assert book.max_size == 0 or book.size <= book.max_size
        assert all(by_role[role] > 0 for role in ("BRANCH_HEAD", "WEALTH_ADVISOR", "WEALTH_MANAGER", "LOBBY_MANAGER",
                                                  "LOAN_MANAGER", "REMOTE_MANAGER"))
        check = ops.RunAssignment(apb.RunAssignmentRequest(dry_run=True))
        assert (check.assigned, check.moved, check.removed, len(check.unplaced)) == (0, 0, 0, 0)
        assert check.unchanged == sum(by_role.values())

        assert len(pending) == 3
        assert {(r.action, r.requested_by, r.period_id[:5]) for r in pending} == {
            (apb.CHANGE_ACTION_TRANSFER, "branch_staff", "DEMO-")}
        first = pending[0]
        placed = ops.GetCustomerManagers(apb.GetCustomerManagersRequest(customer_id=first.customer_id))
        assert first.from_staff_id in {a.staff_id for a in placed.assignments}
        approver = assignment_pb2_grpc.AssignmentServiceStub(suite.channel("assignment", "branch_approver"))
        done = approver.ApproveChangeRequest(apb.DecideChangeRequestRequest(change_request_id=first.change_request_id,
                                                                            comment="demo"))
        assert done.status == apb.CHANGE_REQUEST_STATUS_APPROVED
        moved = ops.GetCustomerManagers(apb.GetCustomerManagersRequest(customer_id=first.customer_id))
        assert first.to_staff_id in {a.staff_id for a in moved.assignments}

        # The approver sits at a 分行; a wealth manager of SUB-01 holds a payroll group book by employer.
        approvers = ops.ListStaff(apb.ListStaffRequest(role="BRANCH_APPROVER")).staff
        assert {s.branch_id for s in approvers if s.staff_id == "branch_approver"} == {"BR-2"}
        while not (group := ops.GetGroupBook(apb.GetGroupBookRequest(staff_id="WM-01-1", group="PAYROLL"))).claims:
            assert time.monotonic() < deadline, suite.log("assignment")[-3000:]
            time.sleep(1)
        [claim] = group.claims
        assert set(claim.selector) == {"payroll_employer_id"} and claim.scope_branch_id == "SUB-01"
        assert group.size > 0 and group.customer_ids

        engine = make_engine(suite.env["KEQUN_ASSIGNMENT_DATABASE_URL"])
        try:
            with engine.connect() as conn:
                assert verify_chain(conn, audit_log) == (True, None)
        finally:
            engine.dispose()
    finally:
        suite.close()
