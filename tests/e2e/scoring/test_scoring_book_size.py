"""Wealth managers scored on their locked book: the book size comes from a real
assignment server (fed by a real tiering server) through GetBook."""
import time
from pathlib import Path

import pytest
import yaml

from kequn.assignment.v1 import assignment_pb2 as apb
from kequn.assignment.v1 import assignment_pb2_grpc
from kequn.scoring.v1 import scoring_pb2 as pb
from kequn.scoring.v1 import scoring_pb2_grpc
from kequn.tiering.v1 import tiering_pb2 as tpb
from kequn.tiering.v1 import tiering_pb2_grpc

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.e2e
GET_BOOK = "/kequn.assignment.v1.AssignmentService/GetBook"


def test_the_role_matrix_lets_scoring_read_books():
    doc = yaml.safe_load((ROOT / "services" / "common" / "rbac.yaml").read_text())
    assert "service" in doc["methods"][GET_BOOK]


@pytest.fixture
def three_servers(e2e_db, tmp_path, tokens, start_server):
    env = {}
    tiering = start_server("tiering", f"sqlite:///{tmp_path / 'tiering.db'}", tmp_path, *tokens, env)
    assignment = start_server("assignment", f"sqlite:///{tmp_path / 'assignment.db'}", tmp_path, *tokens,
                              {**env, "KEQUN_TIERING_TARGET": tiering.target})
    scoring = start_server("scoring", e2e_db, tmp_path, *tokens, {**env, "KEQUN_ASSIGNMENT_TARGET": assignment.target})
    return tiering, assignment, scoring


def test_wealth_manager_scored_on_the_book_size_assignment_reports(three_servers):
    tiering, assignment, scoring = three_servers
    asg = assignment_pb2_grpc.AssignmentServiceStub(assignment.channel("operations"))
    asg.UpsertBranch(apb.Branch(branch_id="BR-01", name="branch", level=apb.BRANCH_LEVEL_BRANCH))
    asg.UpsertBranch(apb.Branch(branch_id="SUB-01", parent_branch_id="BR-01", name="sub-branch",
                                level=apb.BRANCH_LEVEL_SUB_BRANCH))
    asg.UpsertBranch(apb.Branch(branch_id="OUT-001", parent_branch_id="SUB-01", name="outlet",
                                level=apb.BRANCH_LEVEL_OUTLET))
    for staff_id in ("WM-OUT-001-1", "WM-OUT-001-2"):
        asg.UpsertStaff(apb.Staff(staff_id=staff_id, branch_id="OUT-001", role="WEALTH_MANAGER", active=True))
    tier = tiering_pb2_grpc.TieringServiceStub(tiering.channel("core_banking"))
    for i in range(30):  # wealth customers (¥300,000) of OUT-001
        tier.EvaluateCustomer(tpb.EvaluateCustomerRequest(customer=tpb.CustomerSnapshot(
            customer_id=f"C{i:03d}", as_of="2025-06-30", annual_avg_aum_fen=30_000_000,
            holdings=[tpb.BranchHolding(branch_id="OUT-001", aum_fen=30_000_000)])))
    sizes = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # assignment follows tiering's feed in the background
        asg.RunAssignment(apb.RunAssignmentRequest())
        sizes = {s: asg.GetBook(apb.GetBookRequest(staff_id=s)).size for s in ("WM-OUT-001-1", "WM-OUT-001-2")}
        if sum(sizes.values()) == 30:
            break
        time.sleep(0.5)
    assert sorted(sizes.values()) == [15, 15]

    hr = scoring_pb2_grpc.ScoringServiceStub(scoring.channel("hr"))
    hr.CreatePeriod(pb.CreatePeriodRequest(period_id="2025", starts_on="2025-01-01", ends_on="2025-12-31",
                                           due_on="2026-01-31"))
    hr.SubmitMetrics(pb.SubmitMetricsRequest(period_id="2025", values=[
        pb.MetricValue(staff_id="WM-OUT-001-1", role="WEALTH_MANAGER", branch_id="OUT-001",
                       indicator_id="maintenance", value="12"),
        pb.MetricValue(staff_id="WM-OUT-001-2", role="WEALTH_MANAGER", branch_id="OUT-001",
                       indicator_id="penetration", value="9")]))
    hr.CalculatePeriod(pb.CalculatePeriodRequest(period_id="2025"))
    first = hr.GetScore(pb.GetScoreRequest(staff_id="WM-OUT-001-1", period_id="2025"))
    maintenance = next(i for i in first.indicators if i.indicator_id == "maintenance")
    # 12 of 15 contacted = 0.8; 0.1 short of 90% · 20 = 2 points off
    assert (maintenance.raw_value, maintenance.score) == ("0.8", "-2.00")
    assert "12 / 15 customers in the locked book" in maintenance.note
    second = hr.GetScore(pb.GetScoreRequest(staff_id="WM-OUT-001-2", period_id="2025"))
    penetration = next(i for i in second.indicators if i.indicator_id == "penetration")
    assert (penetration.raw_value, penetration.score) == ("0.6", "5.00")   # 0.3 above 30% · 20 = 6 → capped at 5
