"""The approval races and placement runs through real tiering and assignment
servers on PostgreSQL (row locks are what these prove; SQLite serializes
writers and proves little). Customers arrive the real way: evaluated by
tiering, followed from its feed."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from kequn.assignment.v1 import assignment_pb2 as apb
from kequn.assignment.v1 import assignment_pb2_grpc
from kequn.tiering.v1 import tiering_pb2 as tpb
from kequn.tiering.v1 import tiering_pb2_grpc
from tests.e2e.harness import eventually, suite_on_postgres

pytestmark = pytest.mark.postgres
PB_FEN = 700_000_000  # ¥7,000,000: private banking


@pytest.fixture(scope="module")
def suite(tmp_path_factory, _pg_database):
    with suite_on_postgres(tmp_path_factory.mktemp("races"), _pg_database, ("tiering", "assignment")) as s:
        yield s


def stub(suite, role):
    return assignment_pb2_grpc.AssignmentServiceStub(suite.channel("assignment", role))


def evaluate(suite, customer_ids, outlet):
    tiering = tiering_pb2_grpc.TieringServiceStub(suite.channel("tiering", "core_banking"))
    requests = (tpb.EvaluateCustomerRequest(customer=tpb.CustomerSnapshot(
        customer_id=cid, as_of="2026-01-31", annual_avg_aum_fen=PB_FEN, monthly_avg_aum_fen=PB_FEN,
        point_in_time_aum_fen=PB_FEN, holdings=[tpb.BranchHolding(branch_id=outlet, aum_fen=PB_FEN)]))
        for cid in customer_ids)
    answers = list(tiering.EvaluateCustomers(requests))
    assert [a.tier for a in answers] == ["PRIVATE_BANKING"] * len(customer_ids)


def org(ops, branch, sub, outlet, advisors):
    for branch_id, parent, level in ((branch, "", apb.BRANCH_LEVEL_BRANCH), (sub, branch, apb.BRANCH_LEVEL_SUB_BRANCH),
                                     (outlet, sub, apb.BRANCH_LEVEL_OUTLET)):
        ops.UpsertBranch(apb.Branch(branch_id=branch_id, parent_branch_id=parent, level=level))
    for staff_id in advisors:
        ops.UpsertStaff(apb.Staff(staff_id=staff_id, branch_id=branch, role="WEALTH_ADVISOR", active=True))


def outcome(call):
    try:
        call()
        return "ok"
    except grpc.RpcError as exc:
        status = rpc_status.from_call(exc)
        reason = ""
        for detail in status.details if status else ():
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                reason = info.reason
        return f"{exc.code().name}/{reason}"


def size(ops, staff_id):
    return ops.GetBook(apb.GetBookRequest(staff_id=staff_id)).size


def advisor_of(ops, customer_id):
    try:
        found = ops.GetCustomerManagers(apb.GetCustomerManagersRequest(customer_id=customer_id)).assignments
    except grpc.RpcError as exc:  # not followed from the feed yet
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return []
        raise
    return [a.staff_id for a in found if a.role == "WEALTH_ADVISOR"]


def test_fifty_approvals_for_the_last_five_places_racing_a_run_apply_exactly_five(suite):
    ops, approver = stub(suite, "operations"), stub(suite, "branch_approver")
    org(ops, "BR-1", "SUB-11", "OUT-111", ["WA-1"])
    ops.UpsertStaff(apb.Staff(staff_id="branch_approver", branch_id="BR-1", role="BRANCH_APPROVER", active=True))
    evaluate(suite, [f"OLD{i:03}" for i in range(195)], "OUT-111")
    eventually(lambda: size(ops, "WA-1") == 195)  # placed by the background run as the feed arrives
    ops.OpenLockPeriod(apb.LockPeriod(period_id="2026", branch_id="BR-1", starts_on="2026-01-01",
                                      ends_on="2099-12-31"))
    new = [f"NEW{i:02}" for i in range(50)]
    evaluate(suite, new, "OUT-111")

    def unplaced():
        rows = ops.ListUnplaced(apb.ListUnplacedRequest(branch_id="BR-1", page_size=1000)).unplaced
        return [u for u in rows if u.role == "WEALTH_ADVISOR"]
    full = eventually(lambda: len(unplaced()) == 45 and unplaced())  # 5 places reserved for suggestions
    assert {(u.reason, tuple(u.tried_branch_ids)) for u in full} == {("ALL_BOOKS_FULL", ("BR-1",))}
    suggested = ops.ListChangeRequests(apb.ListChangeRequestsRequest(
        branch_id="BR-1", status=apb.CHANGE_REQUEST_STATUS_PENDING, page_size=1000)).change_requests
    assert len(suggested) == 5 and all(r.suggested and r.cause == "TIER_CHANGE" for r in suggested)
    requests = list(suggested) + [ops.CreateChangeRequest(apb.CreateChangeRequestRequest(
        customer_id=u.customer_id, action=apb.CHANGE_ACTION_ADD, to_staff_id="WA-1", reason="new client"))
        for u in full]
    assert size(ops, "WA-1") == 195

    with ThreadPoolExecutor(max_workers=26) as pool:
        approvals = [pool.submit(outcome, lambda r=r: approver.ApproveChangeRequest(
            apb.DecideChangeRequestRequest(change_request_id=r.change_request_id))) for r in requests[:25]]
        run = pool.submit(outcome, lambda: ops.RunAssignment(apb.RunAssignmentRequest()))
        approvals += [pool.submit(outcome, lambda r=r: approver.ApproveChangeRequest(
            apb.DecideChangeRequestRequest(change_request_id=r.change_request_id))) for r in requests[25:]]
        results = [f.result() for f in approvals]
    assert run.result() == "ok"
    assert results.count("ok") == 5
    assert set(results) == {"ok", "FAILED_PRECONDITION/BOOK_FULL"}
    assert size(ops, "WA-1") == 200
    placed = [c for c in new if advisor_of(ops, c)]
    assert len(placed) == 5 and all(advisor_of(ops, c) == ["WA-1"] for c in placed)


def test_two_makers_and_two_approvals_moving_one_customer_apply_once(suite):
    ops, approver, admin = stub(suite, "operations"), stub(suite, "branch_approver"), stub(suite, "admin")
    maker = stub(suite, "branch_staff")
    org(ops, "BR-2", "SUB-21", "OUT-211", ["WA-21", "WA-22", "WA-23"])
    ops.UpsertStaff(apb.Staff(staff_id="branch_approver", branch_id="BR-2", role="BRANCH_APPROVER", active=True))
    evaluate(suite, ["Y"], "OUT-211")
    [holder] = eventually(lambda: advisor_of(ops, "Y"))
    ops.OpenLockPeriod(apb.LockPeriod(period_id="2026", branch_id="BR-2", starts_on="2026-01-01",
                                      ends_on="2099-12-31"))
    targets = [s for s in ("WA-21", "WA-22", "WA-23") if s != holder]

    def make(who, target):
        return who.CreateChangeRequest(apb.CreateChangeRequestRequest(
            customer_id="Y", action=apb.CHANGE_ACTION_TRANSFER, from_staff_id=holder, to_staff_id=target))
    with ThreadPoolExecutor(max_workers=2) as pool:
        made = list(pool.map(make, (ops, maker), targets))
    # Two makers at once: the customer's row lock leaves one pending, the other superseded by it.
    statuses = sorted(ops.ListChangeRequests(apb.ListChangeRequestsRequest(customer_id="Y")).change_requests,
                      key=lambda r: r.status)
    assert [r.status for r in statuses] == [apb.CHANGE_REQUEST_STATUS_PENDING,
                                            apb.CHANGE_REQUEST_STATUS_SUPERSEDED]
    assert statuses[1].superseded_by == statuses[0].change_request_id

    jobs = [(approver, made[0]), (admin, made[1]), (approver, made[1]), (admin, made[0])]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda j: outcome(lambda: j[0].ApproveChangeRequest(
            apb.DecideChangeRequestRequest(change_request_id=j[1].change_request_id))), jobs))
    assert results.count("ok") == 1 and set(results) == {"ok", "FAILED_PRECONDITION/CONFLICT"}
    assert advisor_of(ops, "Y") == [statuses[0].to_staff_id]
    assert sorted(size(ops, s) for s in ("WA-21", "WA-22", "WA-23")) == [0, 0, 1]
