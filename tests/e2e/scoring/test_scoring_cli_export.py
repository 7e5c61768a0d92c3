"""`kequn scores export` against a real server writes what HR would pull."""
import argparse
import csv

import pytest

from kequn.scoring.v1 import scoring_pb2 as pb
from kequn.scoring.v1 import scoring_pb2_grpc
from services.scoring.cli import register

pytestmark = pytest.mark.e2e


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="kequn")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_export_writes_the_finalized_period(scoring_server, tmp_path, monkeypatch, capsys):
    hr = scoring_pb2_grpc.ScoringServiceStub(scoring_server.channel("hr"))
    hr.CreatePeriod(pb.CreatePeriodRequest(period_id="2025", starts_on="2025-01-01", ends_on="2025-12-31",
                                           due_on="2026-01-31"))
    hr.SubmitMetrics(pb.SubmitMetricsRequest(period_id="2025", values=[
        pb.MetricValue(staff_id=f"RM-{i}", role="REMOTE_MANAGER", branch_id="OUT-001", indicator_id="calls_made",
                       value=str(500 * i)) for i in range(1, 4)]))
    hr.CalculatePeriod(pb.CalculatePeriodRequest(period_id="2025"))
    out = tmp_path / "scores.csv"
    base = ["scores", "export", "--period", "2025", "--output", str(out), "--target", scoring_server.target,
            "--page-size", "2"]

    monkeypatch.delenv("KEQUN_TOKEN", raising=False)
    assert run_cli(base) == 2 and not out.exists()
    monkeypatch.setenv("KEQUN_TOKEN", scoring_server.tokens["mobile_banking"])
    assert run_cli(base) == 1 and "PERMISSION_DENIED" in capsys.readouterr().err and not out.exists()

    monkeypatch.setenv("KEQUN_TOKEN", scoring_server.tokens["hr"])
    assert run_cli(base) == 0
    assert list(csv.DictReader(out.open())) == []                  # not finalized yet
    hr.FinalizePeriod(pb.FinalizePeriodRequest(period_id="2025"))
    assert run_cli(base) == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["staff_id"], r["total"], r["rank"], r["status"]) for r in rows] == [
        ("RM-1", "0.00", "3", "FINALIZED"), ("RM-2", "80.00", "2", "FINALIZED"), ("RM-3", "120.00", "1", "FINALIZED")]
    assert run_cli(base + ["--detail"]) == 0
    detail = [r for r in csv.DictReader(out.open()) if r["indicator_id"] == "calls_shortfall"]
    assert [r["score"] for r in detail] == ["-100.00", "0.00", "0.00"]
