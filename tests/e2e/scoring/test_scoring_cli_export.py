"""`kequn scores export` against a real server writes what HR would pull."""
import argparse
import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kequn.scoring.v1 import scoring_pb2 as pb
from kequn.scoring.v1 import scoring_pb2_grpc
from services.scoring.cli import SUMMARY, register

ROOT = Path(__file__).resolve().parents[3]

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


def kequn(args, server, token, **env):
    """The installed command line, `kequn scores export ...`, in its own process."""
    full_env = {**os.environ, "KEQUN_SCORING_TARGET": server.target, "KEQUN_TOKEN": token,
                "PYTHONPATH": os.pathsep.join([str(ROOT / "gen" / "python"), str(ROOT)]), **env}
    return subprocess.run([sys.executable, "-m", "services.cli.main", "scores", "export", *args], env=full_env,
                          capture_output=True, text=True, timeout=120)


def pulled(hr, period, **query):
    """Every page of ListScores, as HR's own client would see it."""
    scores, token = [], ""
    while True:
        page = hr.ListScores(pb.ListScoresRequest(period_id=period, page_size=1000, page_token=token, **query))
        scores += page.scores
        token = page.next_page_token
        if not token:
            return scores


def test_the_kequn_command_exports_what_list_scores_returns(scoring_server, tmp_path):
    hr = scoring_pb2_grpc.ScoringServiceStub(scoring_server.channel("hr"))
    hr.CreatePeriod(pb.CreatePeriodRequest(period_id="2025", starts_on="2025-01-01", ends_on="2025-12-31",
                                           due_on="2026-01-31"))
    people = [(f"RM-{i:03}", f"OUT-{i % 3 + 1:03}", 150 * i) for i in range(1, 13)]
    hr.SubmitMetrics(pb.SubmitMetricsRequest(period_id="2025", values=[
        pb.MetricValue(staff_id=s, role="REMOTE_MANAGER", branch_id=b, indicator_id="calls_made", value=str(c))
        for s, b, c in people]))
    hr.CalculatePeriod(pb.CalculatePeriodRequest(period_id="2025"))
    hr.FinalizePeriod(pb.FinalizePeriodRequest(period_id="2025"))
    hr.ReviseScore(pb.ReviseScoreRequest(staff_id="RM-004", period_id="2025", reason="calls miscounted",
                                         corrections=[pb.MetricValue(indicator_id="calls_made", value="1200")]))
    token = scoring_server.tokens["hr"]

    done = kequn(["--period", "2025", "--page-size", "5"], scoring_server, token)       # to standard output
    assert done.returncode == 0, done.stderr
    assert "exported 12 people" in done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    expected = [[s.staff_id, s.branch_id, s.total, str(s.rank), str(s.peer_group_size), str(s.revision)]
                for s in pulled(hr, "2025", finalized_only=True)]
    assert [[r[k] for k in ("staff_id", "branch_id", "total", "rank", "peer_group_size", "revision")]
            for r in rows] == expected
    revised = next(r for r in rows if r["staff_id"] == "RM-004")
    assert (revised["revision"], revised["revision_reason"], revised["revised_by"]) == ("2", "calls miscounted", "hr")

    out = tmp_path / "out-002.csv"                                                        # one branch, to a file
    assert kequn(["--period", "2025", "--branch", "OUT-002", "--output", str(out)], scoring_server,
                 token).returncode == 0
    branch_rows = list(csv.DictReader(out.open()))
    assert [r["staff_id"] for r in branch_rows] == [s for s, b, _ in people if b == "OUT-002"]
    assert list(branch_rows[0]) == SUMMARY

    missing = tmp_path / "missing.csv"                                                    # errors: exit 1, no file
    failed = kequn(["--period", "1999", "--output", str(missing)], scoring_server, token)
    assert failed.returncode == 1 and "NOT_FOUND" in failed.stderr and not missing.exists()
    denied = kequn(["--period", "2025", "--output", str(missing)], scoring_server,
                   scoring_server.tokens["core_banking"])
    assert denied.returncode == 1 and "PERMISSION_DENIED" in denied.stderr and not missing.exists()
