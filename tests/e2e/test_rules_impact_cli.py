"""`kequn rules simulate FILE --population --impact` through real tiering,
assignment and benefits servers: the tier candidate's changed customers go
to assignment's and benefits' dry runs, whose figures the CLI prints; the
answers equal calling those dry runs directly, and nothing is written."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from kequn.assignment.v1 import assignment_pb2 as apb
from kequn.assignment.v1 import assignment_pb2_grpc
from kequn.tiering.v1 import tiering_pb2 as tpb
from kequn.tiering.v1 import tiering_pb2_grpc
from tests.e2e.harness import Suite
from tests.tier_schemes import with_wealth_floor



@pytest.fixture
def suite(tmp_path):
    s = Suite(tmp_path, services=("tiering", "assignment", "benefits"))
    try:
        s.start()
        yield s
    finally:
        s.close()


def _evaluate(tiering, customer_id, fen):
    return tiering.EvaluateCustomer(tpb.EvaluateCustomerRequest(customer=tpb.CustomerSnapshot(
        customer_id=customer_id, as_of="2026-01-31", annual_avg_aum_fen=fen, point_in_time_aum_fen=fen,
        holdings=[tpb.BranchHolding(branch_id="OUT-111", aum_fen=fen)])), timeout=10)


def test_impact_of_a_tier_candidate_on_books_and_benefits(suite, tmp_path):
    ops = assignment_pb2_grpc.AssignmentServiceStub(suite.channel("assignment", "operations"))
    for branch_id, parent, level in (("BR-1", "", apb.BRANCH_LEVEL_BRANCH),
                                     ("SUB-11", "BR-1", apb.BRANCH_LEVEL_SUB_BRANCH),
                                     ("OUT-111", "SUB-11", apb.BRANCH_LEVEL_OUTLET)):
        ops.UpsertBranch(apb.Branch(branch_id=branch_id, parent_branch_id=parent, level=level))
    ops.UpsertStaff(apb.Staff(staff_id="LM-1", branch_id="OUT-111", role="LOBBY_MANAGER", active=True))
    tiering = tiering_pb2_grpc.TieringServiceStub(suite.channel("tiering", "core_banking"))
    for i in range(6):  # ¥210,000..¥260,000: WEALTH today, AFFLUENT under the candidate
        assert _evaluate(tiering, f"C{i}", 21_000_000 + i * 1_000_000).tier == "WEALTH"
    deadline = time.monotonic() + 30
    while ops.RunAssignment(apb.RunAssignmentRequest(dry_run=True)).unchanged + len(
            ops.RunAssignment(apb.RunAssignmentRequest(dry_run=True)).unplaced) < 6:
        assert time.monotonic() < deadline, "assignment never saw the customers"
        time.sleep(0.3)
    ops.RunAssignment(apb.RunAssignmentRequest())

    raised = with_wealth_floor(30_000_000)
    (tmp_path / "tiers2.yaml").write_text(raised, encoding="utf-8")
    env = {**os.environ, **suite.env, "KEQUN_TOKEN": suite.tokens["rule_admin"]}
    command = ["rules", "simulate", str(tmp_path / "tiers2.yaml"), "--population", "--impact", "--no-csv"]
    out = subprocess.run([sys.executable, "-m", "services.cli.main", *command], env=env, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr + out.stdout
    assert "downstream impact of the 6 customers" in out.stdout
    # Six affluent customers (no loan) all need the one lobby manager: placed, none unplaced.
    assert "books (assignment dry run; 6 customers known, 0 not yet)" in out.stdout
    lines = [line.split() for line in out.stdout.splitlines()]
    assert ["OUT-111", "LOBBY_MANAGER", "0", "->", "6"] in lines
    assert "benefits (6 customers)" in out.stdout and "assignment:" not in out.stderr and "benefits:" not in out.stderr
    # Dry runs only: the books are as they were.
    after = ops.RunAssignment(apb.RunAssignmentRequest(dry_run=True))
    assert (after.assigned, after.moved, after.removed) == (0, 0, 0)
