"""Through a real scoring server: HR pulls 10,000 finalized results, errors map to
CONTRACT.md codes, metrics are exposed."""
import urllib.request
from decimal import Decimal as D

import grpc
import pytest

from kequn.scoring.v1 import scoring_pb2 as pb
from kequn.scoring.v1 import scoring_pb2_grpc

pytestmark = pytest.mark.e2e
RM = "REMOTE_MANAGER"


def stub(server, role="hr"):
    return scoring_pb2_grpc.ScoringServiceStub(server.channel(role))


def rpc_error(call, *args):
    with pytest.raises(grpc.RpcError) as err:
        call(*args)
    return err.value


def test_hr_pages_through_10000_results_none_missed_or_repeated(scoring_server):
    hr = stub(scoring_server)
    hr.CreatePeriod(pb.CreatePeriodRequest(period_id="2025", starts_on="2025-01-01", ends_on="2025-12-31",
                                           due_on="2026-01-31"))
    people = [(f"RM-{i:05d}", f"OUT-{i % 17:03d}", 200 + (i * 37) % 1500) for i in range(10_000)]
    for start in range(0, len(people), 5000):
        hr.SubmitMetrics(pb.SubmitMetricsRequest(period_id="2025", values=[
            pb.MetricValue(staff_id=s, role=RM, branch_id=b, indicator_id="calls_made", value=str(c))
            for s, b, c in people[start:start + 5000]]))
    assert hr.CalculatePeriod(pb.CalculatePeriodRequest(period_id="2025")).scored == 10_000
    # before finalizing, HR's finalized-only pull is empty
    assert list(hr.ListScores(pb.ListScoresRequest(period_id="2025", finalized_only=True)).scores) == []
    assert hr.FinalizePeriod(pb.FinalizePeriodRequest(period_id="2025")).finalized == 10_000

    seen, token, pages, revised = [], "", 0, False
    while True:
        page = hr.ListScores(pb.ListScoresRequest(period_id="2025", finalized_only=True, page_size=333,
                                                  page_token=token))
        seen += [(s.staff_id, s.total, s.revision) for s in page.scores]
        pages += 1
        if not revised:  # revisions during the pull neither hide nor repeat anyone
            for staff_id in (seen[0][0], "RM-09999"):
                hr.ReviseScore(pb.ReviseScoreRequest(staff_id=staff_id, period_id="2025", reason="audit", corrections=[
                    pb.MetricValue(indicator_id="calls_made", value="1000")]))
            revised = True
        token = page.next_page_token
        if not token:
            break
    ids = [s for s, _, _ in seen]
    assert len(ids) == 10_000 and len(set(ids)) == 10_000 and pages == 31
    # calls score 80·min(c/1000, 1.5), less 0.2 per call short of 1000 (at most 100), total not below 0
    expected = {s: str(max(D(0), D("0.08") * min(c, 1500) - min(D(100), D("0.2") * max(0, 1000 - c))).quantize(D("0.01")))
                for s, _, c in people}
    last = dict((s, (t, r)) for s, t, r in seen)
    assert last["RM-09999"] == ("80.00", 2)
    assert all(t == expected[s] for s, (t, r) in last.items() if r == 1)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{scoring_server.metrics_port}/metrics").read().decode()
    assert 'kequn_scoring_runs_total{outcome="ok",role="*"} 1.0' in metrics
    assert 'kequn_scoring_people_scored{role="REMOTE_MANAGER"} 10000.0' in metrics
    assert "kequn_scoring_periods_finalized_total 1.0" in metrics
    assert "kequn_scoring_run_seconds_count 1.0" in metrics


def test_errors_follow_the_contract(scoring_server):
    hr = stub(scoring_server)
    hr.CreatePeriod(pb.CreatePeriodRequest(period_id="P1", starts_on="2025-01-01", ends_on="2025-03-31",
                                           due_on="2025-04-15"))
    bad = rpc_error(hr.SubmitMetrics, pb.SubmitMetricsRequest(period_id="P1", values=[
        pb.MetricValue(staff_id="X", role="TELLER", branch_id="B", indicator_id="calls_made", value="1")]))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT and "values[0].role" in bad.details()
    assert rpc_error(hr.GetScore, pb.GetScoreRequest(staff_id="X", period_id="P1")).code() == grpc.StatusCode.NOT_FOUND
    assert rpc_error(hr.FinalizePeriod, pb.FinalizePeriodRequest(period_id="P1")).code() == \
        grpc.StatusCode.FAILED_PRECONDITION
    assert rpc_error(hr.ListScores, pb.ListScoresRequest(period_id="P1", page_token="garbage!")).code() == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert rpc_error(hr.ListScores, pb.ListScoresRequest(period_id="P1", page_size=-1)).code() == \
        grpc.StatusCode.INVALID_ARGUMENT
    # role matrix: mobile banking may not read staff scores
    assert rpc_error(stub(scoring_server, "mobile_banking").ListScores,
                     pb.ListScoresRequest(period_id="P1")).code() == grpc.StatusCode.PERMISSION_DENIED
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{scoring_server.metrics_port}/metrics").read().decode()
    assert 'kequn_scoring_rejected_submissions_total{reason="invalid_argument"} 1.0' in metrics
    assert "kequn_scoring_periods_overdue 1.0" in metrics                 # P1 was due 2025-04-15
    assert 'grpc_server_handled_total{grpc_code="NotFound",grpc_method="GetScore"' in metrics


def test_a_scorecard_breaking_its_constraints_is_refused_at_publish(scoring_server):
    from kequn.rules.v1 import rules_pb2, rules_pb2_grpc
    from services.scoring.rules_kind import ruleset_name
    text = open("services/scoring/rulesets/remote_manager.yaml").read().replace("cap: 100,", "cap: 150,")
    admin = rules_pb2_grpc.RuleStoreServiceStub(scoring_server.channel("rule_admin"))
    err = rpc_error(admin.CreateRulesetVersion, rules_pb2.CreateRulesetVersionRequest(
        name=ruleset_name(RM), document=text))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("document.parameters.indicators[8].cap", "cap 150 is above the card's max_deduction 100") in violations(err)


def violations(err):
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status
    found = []
    for detail in rpc_status.from_call(err).details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found += [(v.field, v.description) for v in bad.field_violations]
    return found
