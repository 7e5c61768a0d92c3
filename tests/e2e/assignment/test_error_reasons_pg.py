"""Every refusal path of assignment's RPCs answers google.rpc.ErrorInfo with its
stable reason and the metadata a branch's program acts on (docs/errors.md),
over gRPC from a real server on PostgreSQL. Customers arrive the real way:
evaluated by tiering, followed from its feed. BOOK_FULL and the approval
races are in test_races_pg.py."""
from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from kequn.assignment.v1 import assignment_pb2 as apb
from tests.e2e.assignment.test_races_pg import eventually, evaluate, org, size, stub
from tests.e2e.harness import suite_on_postgres

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


@pytest.fixture(scope="module")
def suite(tmp_path_factory, _pg_database):
    with suite_on_postgres(tmp_path_factory.mktemp("assignment-reasons"), _pg_database,
                           ("tiering", "assignment")) as s:
        yield s


def refusal(call) -> tuple[grpc.StatusCode, str, dict]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    status = rpc_status.from_call(caught.value)
    infos = []
    for detail in status.details if status else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            infos.append(info)
    assert len(infos) == 1 and infos[0].domain == "kequn.bank", caught.value.details()
    return caught.value.code(), infos[0].reason, dict(infos[0].metadata)


def test_each_assignment_refusal_names_its_reason(suite):
    ops, approver = stub(suite, "operations"), stub(suite, "branch_approver")
    org(ops, "BR-1", "SUB-11", "OUT-111", ["WA-1", "WA-2"])
    ops.UpsertBranch(apb.Branch(branch_id="SUB-12", parent_branch_id="BR-1", level=apb.BRANCH_LEVEL_SUB_BRANCH))
    # The approver first sits at a sub-branch: below the policy's level (分行).
    ops.UpsertStaff(apb.Staff(staff_id="branch_approver", branch_id="SUB-11", role="BRANCH_APPROVER", active=True))
    evaluate(suite, ["C1", "C2"], "OUT-111")
    eventually(lambda: size(ops, "WA-1") + size(ops, "WA-2") == 2)
    holder = "WA-1" if size(ops, "WA-1") else "WA-2"
    other = "WA-2" if holder == "WA-1" else "WA-1"
    customer = ops.GetBook(apb.GetBookRequest(staff_id=holder)).customer_ids[0]

    # Input the policy does not declare; dates already past; unknown people.
    code, reason, meta = refusal(lambda: ops.ClaimGroup(apb.GroupClaim(
        staff_id="WA-1", group="PAYROLL", selector={"shoe_size": "42"})))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUT")
    code, reason, _ = refusal(lambda: ops.OpenLockPeriod(apb.LockPeriod(
        period_id="old", branch_id="BR-1", starts_on="2020-01-01", ends_on="2020-03-31")))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUT")
    code, reason, _ = refusal(lambda: ops.GetBook(apb.GetBookRequest(staff_id="NOBODY")))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")

    # Group claims conflict only where their scopes overlap.
    ops.ClaimGroup(apb.GroupClaim(staff_id="WA-1", group="PAYROLL", selector={"payroll_employer_id": "E1"}))
    code, reason, meta = refusal(lambda: ops.ClaimGroup(apb.GroupClaim(
        staff_id="WA-2", group="PAYROLL", selector={"payroll_employer_id": "E1"})))
    assert (code, reason, meta["staff_id"]) == (grpc.StatusCode.FAILED_PRECONDITION, "CONFLICT", "WA-1")

    # A period in force on the 分行: an overlapping one below it is refused,
    # and so is a new group claim inside it; a retry of an existing claim is not.
    ops.OpenLockPeriod(apb.LockPeriod(period_id="2026", branch_id="BR-1", starts_on="2026-01-01",
                                      ends_on="2099-12-31"))
    code, reason, meta = refusal(lambda: ops.OpenLockPeriod(apb.LockPeriod(
        period_id="Q4", branch_id="SUB-11", starts_on="2026-10-01", ends_on="2099-12-31")))
    assert (code, reason, meta["period_id"]) == (grpc.StatusCode.FAILED_PRECONDITION, "CONFLICT", "2026")
    code, reason, meta = refusal(lambda: ops.ClaimGroup(apb.GroupClaim(
        staff_id="WA-2", group="MERCHANT", selector={"merchant_market_id": "MKT-7"})))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "BOOK_LOCKED")
    assert (meta["period_id"], meta["branch_id"], meta["ends_on"]) == ("2026", "BR-1", "2099-12-31")
    again = ops.ClaimGroup(apb.GroupClaim(staff_id="WA-1", group="PAYROLL", selector={"payroll_employer_id": "E1"}))
    assert again.claim.staff_id == "WA-1"
    assert not [c for c in ops.GetCustomerManagers(apb.GetCustomerManagersRequest(customer_id=customer)).assignments
                if c.group == "MERCHANT"]

    # Maker–checker: the wrong level, then the maker deciding their own request.
    request = ops.CreateChangeRequest(apb.CreateChangeRequestRequest(
        customer_id=customer, action=apb.CHANGE_ACTION_TRANSFER, from_staff_id=holder, to_staff_id=other,
        reason="rebalance"))
    code, reason, meta = refusal(lambda: approver.ApproveChangeRequest(apb.DecideChangeRequestRequest(
        change_request_id=request.change_request_id)))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_APPROVER")
    assert (meta["required_level"], meta["approver_branch_id"]) == ("BRANCH", "SUB-11")
    ops.UpsertStaff(apb.Staff(staff_id="branch_approver", branch_id="BR-1", role="BRANCH_APPROVER", active=True))
    own = approver.CreateChangeRequest(apb.CreateChangeRequestRequest(
        customer_id=customer, action=apb.CHANGE_ACTION_TRANSFER, from_staff_id=holder, to_staff_id=other,
        reason="mine"))
    code, reason, _ = refusal(lambda: approver.ApproveChangeRequest(apb.DecideChangeRequestRequest(
        change_request_id=own.change_request_id)))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "SELF_APPROVAL")

    # The newer request superseded the first: deciding it is a conflict, and nothing moved.
    code, reason, _ = refusal(lambda: approver.ApproveChangeRequest(apb.DecideChangeRequestRequest(
        change_request_id=request.change_request_id)))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CONFLICT")
    assert customer in ops.GetBook(apb.GetBookRequest(staff_id=holder)).customer_ids
    # A role the matrix does not allow is refused before any use case.
    code, reason, _ = refusal(lambda: stub(suite, "hr").OpenLockPeriod(apb.LockPeriod(
        period_id="x", branch_id="BR-1", starts_on="2026-01-01", ends_on="2099-12-31")))
    assert code == grpc.StatusCode.PERMISSION_DENIED and reason
