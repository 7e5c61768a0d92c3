"""The lock-period story through real tiering and assignment servers:
tiering publishes a change → a suggestion → approved by someone else → the
book changes; approving one's own request is refused."""
from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from kequn.assignment.v1 import assignment_pb2 as apb
from kequn.assignment.v1 import assignment_pb2_grpc
from kequn.tiering.v1 import tiering_pb2 as tpb
from kequn.tiering.v1 import tiering_pb2_grpc
from tests.e2e.harness import Suite, eventually, metric_value, seed_one_branch

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.skipif(not (ROOT / "services" / "tiering" / "__main__.py").exists(),
                                reason="tiering server not built yet")
YUAN = 100


@pytest.fixture
def suite(tmp_path):
    s = Suite(tmp_path, services=("tiering", "assignment"))
    try:
        s.start()
        yield s
    finally:
        s.close()


def evaluate(tiering, customer_id, annual_avg_yuan, as_of):
    snapshot = tpb.CustomerSnapshot(
        customer_id=customer_id, as_of=as_of, annual_avg_aum_fen=annual_avg_yuan * YUAN,
        monthly_avg_aum_fen=annual_avg_yuan * YUAN, point_in_time_aum_fen=annual_avg_yuan * YUAN,
        holdings=[tpb.BranchHolding(branch_id="OUT-111", aum_fen=annual_avg_yuan * YUAN)])
    return tiering.EvaluateCustomer(tpb.EvaluateCustomerRequest(customer=snapshot))


def managers(stub, customer_id):
    try:
        found = stub.GetCustomerManagers(apb.GetCustomerManagersRequest(customer_id=customer_id))
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return set()
        raise
    return {(a.role, a.staff_id) for a in found.assignments}


def test_tier_change_in_a_locked_branch_waits_for_an_approver(suite):
    ops = assignment_pb2_grpc.AssignmentServiceStub(suite.channel("assignment", "operations"))
    approver = assignment_pb2_grpc.AssignmentServiceStub(suite.channel("assignment", "branch_approver"))
    tiering = tiering_pb2_grpc.TieringServiceStub(suite.channel("tiering", "core_banking"))

    seed_one_branch(ops)

    # An affluent customer reaches assignment through tiering's feed and is placed.
    assert evaluate(tiering, "C1", 100_000, "2026-01-31").tier == "AFFLUENT"
    eventually(lambda: managers(ops, "C1") == {("LOBBY_MANAGER", "LM-1")})

    ops.OpenLockPeriod(apb.LockPeriod(period_id="2026", branch_id="BR-1", starts_on="2026-01-01",
                                      ends_on="2099-12-31"))
    # The customer is upgraded: during the lock nothing moves, suggestions appear.
    assert evaluate(tiering, "C1", 300_000, "2026-02-28").tier == "WEALTH"

    def suggestions():
        found = ops.ListChangeRequests(apb.ListChangeRequestsRequest(
            customer_id="C1", status=apb.CHANGE_REQUEST_STATUS_PENDING)).change_requests
        return found if len(found) == 2 else None
    pending = eventually(suggestions)
    assert all(r.suggested and r.requested_by == "system" and r.period_id == "2026" for r in pending)
    assert {r.action for r in pending} == {apb.CHANGE_ACTION_ADD, apb.CHANGE_ACTION_REMOVE}
    assert managers(ops, "C1") == {("LOBBY_MANAGER", "LM-1")}

    # Someone else (the branch's approver) approves: the book changes.
    for r in pending:
        decided = approver.ApproveChangeRequest(apb.DecideChangeRequestRequest(change_request_id=r.change_request_id,
                                                                             comment="agreed"))
        assert decided.status == apb.CHANGE_REQUEST_STATUS_APPROVED and decided.decided_by == "branch_approver"
    wm = next(a for role, a in managers(ops, "C1") if role == "WEALTH_MANAGER")
    assert managers(ops, "C1") == {("WEALTH_MANAGER", wm)}
    assert "C1" in ops.GetBook(apb.GetBookRequest(staff_id=wm)).customer_ids
    assert ops.GetBook(apb.GetBookRequest(staff_id=wm)).locked

    # The approver's own request cannot be approved by the approver.
    other = "WM-2" if wm == "WM-1" else "WM-1"
    own = approver.CreateChangeRequest(apb.CreateChangeRequestRequest(
        customer_id="C1", action=apb.CHANGE_ACTION_TRANSFER, from_staff_id=wm, to_staff_id=other, reason="mine"))
    assert own.requested_by == "branch_approver"
    with pytest.raises(grpc.RpcError) as refused:
        approver.ApproveChangeRequest(apb.DecideChangeRequestRequest(change_request_id=own.change_request_id))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert managers(ops, "C1") == {("WEALTH_MANAGER", wm)}

    # Everything is in the audit trail; the gauges follow.
    actions = {e.action for e in ops.ListAuditEvents(apb.ListAuditEventsRequest(page_size=1000)).audit_events}
    assert {"lock_period.open", "change_request.create", "change_request.approve"} <= actions
    closed = ops.CloseLockPeriod(apb.CloseLockPeriodRequest(period_id="2026"))
    assert closed.lock_period.status == apb.LOCK_PERIOD_STATUS_CLOSED
    eventually(lambda: metric_value(suite.metrics("assignment"), "kequn_assignment_change_requests_pending") == 1)
    assert metric_value(suite.metrics("assignment"), "kequn_assignment_feed_cursor") >= 2
