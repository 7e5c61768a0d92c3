"""The assignment server alone as a real process: the gRPC surface, errors, roles, metrics."""
from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from kequn.assignment.v1 import assignment_pb2 as apb
from kequn.assignment.v1 import assignment_pb2_grpc
from tests.e2e.harness import Suite, metric_value


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    s = Suite(tmp_path_factory.mktemp("assignment"), services=("assignment",),
              extra_env={"KEQUN_ASSIGNMENT_FOLLOW_FEED": "0"})
    try:
        s.start()
        yield s
    finally:
        s.close()


def stub(suite, role):
    return assignment_pb2_grpc.AssignmentServiceStub(suite.channel("assignment", role))


def code_of(call):
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code()


def test_org_staff_and_errors(suite):
    ops = stub(suite, "operations")
    made = ops.UpsertBranch(apb.Branch(branch_id="BR-9", name="nine", level=apb.BRANCH_LEVEL_BRANCH))
    assert made.created and made.branch.level == apb.BRANCH_LEVEL_BRANCH
    assert not ops.UpsertBranch(apb.Branch(branch_id="BR-9", name="nine", level=apb.BRANCH_LEVEL_BRANCH)).created
    ops.UpsertBranch(apb.Branch(branch_id="SUB-91", parent_branch_id="BR-9", level=apb.BRANCH_LEVEL_SUB_BRANCH))
    staff = ops.UpsertStaff(apb.Staff(staff_id="WM-9", branch_id="SUB-91", role="WEALTH_MANAGER", active=True))
    assert staff.created
    book = ops.GetBook(apb.GetBookRequest(staff_id="WM-9"))
    assert (book.size, book.initial_size, book.max_size) == (0, 400, 500)

    assert code_of(lambda: ops.UpsertStaff(apb.Staff(staff_id="X", branch_id="SUB-91", role="JANITOR"))) \
        == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: ops.UpsertStaff(apb.Staff(staff_id="X", branch_id="NOPE", role="WEALTH_MANAGER"))) \
        == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: ops.GetBook(apb.GetBookRequest(staff_id="NOPE"))) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: ops.GetBook(apb.GetBookRequest(staff_id="WM-9", page_size=-1))) \
        == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: ops.CreateChangeRequest(apb.CreateChangeRequestRequest(
        customer_id="NOBODY", action=apb.CHANGE_ACTION_ADD, to_staff_id="WM-9"))) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: ops.OpenLockPeriod(apb.LockPeriod(period_id="P", branch_id="BR-9", starts_on="2026-13-01",
                                                             ends_on="2026-12-31"))) == grpc.StatusCode.INVALID_ARGUMENT
    ops.OpenLockPeriod(apb.LockPeriod(period_id="P1", branch_id="BR-9", starts_on="2026-01-01", ends_on="2099-12-31"))
    assert code_of(lambda: ops.OpenLockPeriod(apb.LockPeriod(period_id="P2", branch_id="SUB-91",
                                                             starts_on="2030-06-01", ends_on="2030-06-30"))) \
        == grpc.StatusCode.FAILED_PRECONDITION
    # A period that has already ended would lock nothing: refused, naming ends_on.
    code, details = details_of(lambda: ops.OpenLockPeriod(apb.LockPeriod(
        period_id="P0", branch_id="BR-9", starts_on="2020-01-01", ends_on="2020-12-31")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "ends_on" in details
    run = ops.RunAssignment(apb.RunAssignmentRequest(dry_run=True))
    assert run.dry_run and run.assigned == 0


def test_roles_are_enforced(suite):
    assert code_of(lambda: stub(suite, "branch_staff").ApproveChangeRequest(
        apb.DecideChangeRequestRequest(change_request_id="CR-x"))) == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(lambda: stub(suite, "mobile_banking").RunAssignment(apb.RunAssignmentRequest())) \
        == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(lambda: stub(suite, "branch_approver").ApproveChangeRequest(
        apb.DecideChangeRequestRequest(change_request_id="CR-x"))) == grpc.StatusCode.NOT_FOUND


def details_of(call):
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


@pytest.mark.parametrize("field,when,named", [
    ("start_time", Timestamp(seconds=253_402_300_800), "start_time.seconds"),  # 10000-01-01
    ("end_time", Timestamp(seconds=-62_135_596_801), "end_time.seconds"),      # before 0001-01-01
    ("start_time", Timestamp(seconds=0, nanos=-1), "start_time.nanos"),
    ("end_time", Timestamp(seconds=0, nanos=1_000_000_000), "end_time.nanos"),
])
def test_audit_events_refuse_timestamps_out_of_range(suite, field, when, named):
    """Found by fuzzing: these were INTERNAL."""
    ops = stub(suite, "operations")
    code, details = details_of(lambda: ops.ListAuditEvents(apb.ListAuditEventsRequest(**{field: when})))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and named in details


def test_audit_events_by_time_window(suite):
    ops = stub(suite, "operations")
    ops.UpsertBranch(apb.Branch(branch_id="BR-T", level=apb.BRANCH_LEVEL_BRANCH))
    edge = Timestamp(seconds=253_402_300_799, nanos=999_999_999)  # the last instant a Timestamp can hold
    found = ops.ListAuditEvents(apb.ListAuditEventsRequest(subject="branch/BR-T", start_time=Timestamp(seconds=0),
                                                           end_time=edge)).audit_events
    assert [(e.action, e.before_json, json.loads(e.after_json)["branch_id"]) for e in found] == [
        ("branch.upsert", "", "BR-T")]
    assert not ops.ListAuditEvents(apb.ListAuditEventsRequest(subject="branch/BR-T", start_time=edge)).audit_events
    code, details = details_of(lambda: ops.ListAuditEvents(apb.ListAuditEventsRequest(
        start_time=edge, end_time=Timestamp(seconds=0))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "end_time" in details


def test_lock_period_dates_must_be_plain_iso_dates(suite):
    ops = stub(suite, "operations")
    ops.UpsertBranch(apb.Branch(branch_id="BR-D", level=apb.BRANCH_LEVEL_BRANCH))
    for starts_on in ("20260301", "2026-W09-1", "2026-3-1", "２０２６-03-01", "0000-01-01", "2026-03-01T00:00"):
        code, details = details_of(lambda: ops.OpenLockPeriod(apb.LockPeriod(
            period_id="PD", branch_id="BR-D", starts_on=starts_on, ends_on="2099-12-31")))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "starts_on" in details, starts_on


def test_metrics_are_exported(suite):
    stub(suite, "operations").ListAuditEvents(apb.ListAuditEventsRequest())
    text = suite.metrics("assignment")
    assert metric_value(text, "grpc_server_handled_total", grpc_method="ListAuditEvents", grpc_code="OK") >= 1
    assert "kequn_assignment_change_requests_pending" in text
    assert "kequn_assignment_lock_periods_open" in text


def test_csv_import_through_the_cli(suite, tmp_path, capsys):
    from services.assignment import cli
    org = tmp_path / "org.csv"
    org.write_text("branch_id,parent_branch_id,name,level\n"
                   "OUT-771,SUB-77,outlet,OUTLET\nSUB-77,BR-7,sub,SUB_BRANCH\nBR-7,,branch,BRANCH\n")
    staff = tmp_path / "staff.csv"
    staff.write_text("staff_id,branch_id,role,active,name\nLM-77,OUT-771,LOBBY_MANAGER,true,Li\n"
                     "BAD-1,OUT-771,JANITOR,true,Wang\n")
    args = ["--target", suite.target("assignment"), "--token", suite.tokens["hr"]]
    assert cli.main(["assignment", "import-org", str(org), *args]) == 0
    assert "3 created" in capsys.readouterr().out
    assert cli.main(["assignment", "import-staff", str(staff), *args]) == 1
    captured = capsys.readouterr()
    assert "1 created, 0 updated, 1 failed" in captured.out and "line 3: INVALID_ARGUMENT" in captured.err
    book = stub(suite, "operations").GetBook(apb.GetBookRequest(staff_id="LM-77"))
    assert book.branch_id == "OUT-771"


def test_a_branch_reads_its_own_state_over_grpc(suite):
    ops, staff = stub(suite, "operations"), stub(suite, "branch_staff")
    ops.UpsertBranch(apb.Branch(branch_id="BR-R", level=apb.BRANCH_LEVEL_BRANCH))
    ops.UpsertBranch(apb.Branch(branch_id="SUB-R1", parent_branch_id="BR-R", level=apb.BRANCH_LEVEL_SUB_BRANCH))
    ops.UpsertBranch(apb.Branch(branch_id="OUT-R11", parent_branch_id="SUB-R1", level=apb.BRANCH_LEVEL_OUTLET))
    for staff_id, branch_id, role in (("LM-R", "OUT-R11", "LOBBY_MANAGER"), ("WM-R", "SUB-R1", "WEALTH_MANAGER")):
        ops.UpsertStaff(apb.Staff(staff_id=staff_id, branch_id=branch_id, role=role, active=True))
    page = staff.ListBranches(apb.ListBranchesRequest(branch_id="BR-R", page_size=2))
    assert [b.branch_id for b in page.branches] == ["BR-R", "OUT-R11"] and page.next_page_token
    rest = staff.ListBranches(apb.ListBranchesRequest(branch_id="BR-R", page_token=page.next_page_token))
    assert [b.branch_id for b in rest.branches] == ["SUB-R1"] and not rest.next_page_token
    assert [s.staff_id for s in staff.ListStaff(apb.ListStaffRequest(branch_id="BR-R")).staff] == ["LM-R", "WM-R"]
    assert [s.staff_id for s in staff.ListStaff(apb.ListStaffRequest(branch_id="BR-R", role="LOBBY_MANAGER")).staff] \
        == ["LM-R"]
    assert not staff.ListUnplaced(apb.ListUnplacedRequest(branch_id="BR-R")).unplaced
    # The proto's own example: a payroll group book by employer.
    claimed = staff.ClaimGroup(apb.GroupClaim(staff_id="WM-R", group="PAYROLL",
                                              selector={"payroll_employer_id": "E123"}))
    assert claimed.claim.scope_branch_id == "SUB-R1" and claimed.customers == 0
    book = staff.GetGroupBook(apb.GetGroupBookRequest(staff_id="WM-R", group="PAYROLL"))
    assert [c.claim_id for c in book.claims] == [claimed.claim.claim_id] and book.size == 0
    ops.OpenLockPeriod(apb.LockPeriod(period_id="R", branch_id="BR-R", starts_on="2026-01-01", ends_on="2099-12-31"))
    [period] = staff.ListLockPeriods(apb.ListLockPeriodsRequest(branch_id="OUT-R11")).lock_periods
    assert (period.period_id, period.in_force) == ("R", True)
    # Inside the period the books are frozen: a new group book waits until it ends.
    code, details = details_of(lambda: staff.ClaimGroup(apb.GroupClaim(staff_id="WM-R", group="MERCHANT",
                                                                       selector={"merchant_market_id": "M1"})))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "2099-12-31" in details
    code, details = details_of(lambda: staff.ClaimGroup(apb.GroupClaim(staff_id="WM-R", group="PAYROLL",
                                                                       selector={"shoe_size": "42"})))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "payroll_employer_id" in details
    assert code_of(lambda: stub(suite, "mobile_banking").ListUnplaced(apb.ListUnplacedRequest())) \
        == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(lambda: staff.ListStaff(apb.ListStaffRequest(page_token="nope"))) == grpc.StatusCode.INVALID_ARGUMENT
