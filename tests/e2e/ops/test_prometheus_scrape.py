"""A real Prometheus scrapes the running suite: every target up, the RPCs we
make show in grpc_server_handled_total, each service's own kequn_* metrics
move, the alert rules load; and the logs of those RPCs are what operations
need (one JSON line per RPC, request id across services, customer ids masked)."""
from __future__ import annotations

import secrets

import grpc
import pytest

from kequn.assignment.v1 import assignment_pb2, assignment_pb2_grpc
from kequn.benefits.v1 import benefits_pb2, benefits_pb2_grpc
from kequn.scoring.v1 import scoring_pb2, scoring_pb2_grpc
from kequn.tiering.v1 import tiering_pb2, tiering_pb2_grpc

pytestmark = pytest.mark.e2e

SERVICES = ("tiering", "assignment", "scoring", "benefits")
GHOST = "ghost"  # conftest's scrape target with no server behind it
KEQUN_RPCS = 'job="kequn", grpc_service=~"kequn\\\\..+"'  # health checks and reflection excluded
RUN = secrets.token_hex(3).upper()
CUSTOMERS = [f"C{RUN}{i:06d}" for i in range(1, 6)]


def snapshot(customer_id: str, annual_avg_aum_fen: int) -> tiering_pb2.CustomerSnapshot:
    return tiering_pb2.CustomerSnapshot(
        customer_id=customer_id, as_of="2026-11-01", annual_avg_aum_fen=annual_avg_aum_fen,
        monthly_avg_aum_fen=annual_avg_aum_fen, point_in_time_aum_fen=annual_avg_aum_fen, age=41,
        holdings=[tiering_pb2.BranchHolding(branch_id="OPS-OUTLET-1", aum_fen=annual_avg_aum_fen)])


def drive_traffic(suite) -> dict[str, int]:
    """Authenticated calls on each service; returns the kequn RPCs made per service
    (answers with an error code count too: they are RPCs handled)."""
    made = dict.fromkeys(SERVICES, 0)

    tiering = tiering_pb2_grpc.TieringServiceStub(suite.channel("tiering"))
    for i, customer in enumerate(CUSTOMERS):  # from long tail to private banking
        tiering.EvaluateCustomer(tiering_pb2.EvaluateCustomerRequest(
            customer=snapshot(customer, 2_000_000 * 10 ** (i % 4)), request_id=f"ops-{customer}"), timeout=30)
        made["tiering"] += 1
    with pytest.raises(grpc.RpcError) as bad:  # a caller error is counted with its code
        tiering.EvaluateCustomer(tiering_pb2.EvaluateCustomerRequest(
            customer=snapshot(f"C{RUN}BAD", -1)), timeout=30)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    made["tiering"] += 1

    assignment = assignment_pb2_grpc.AssignmentServiceStub(suite.channel("assignment"))
    assignment.UpsertBranch(assignment_pb2.Branch(
        branch_id=f"OPS-{RUN}", name="ops e2e branch", level=assignment_pb2.BRANCH_LEVEL_BRANCH), timeout=30)
    assignment.ListChangeRequests(assignment_pb2.ListChangeRequestsRequest(page_size=10), timeout=30)
    made["assignment"] += 2

    scoring = scoring_pb2_grpc.ScoringServiceStub(suite.channel("scoring"))
    period = f"2026Q{RUN}"
    scoring.CreatePeriod(scoring_pb2.CreatePeriodRequest(
        period_id=period, starts_on="2026-07-01", ends_on="2026-09-30", due_on="2026-10-31",
        request_id=f"ops-{period}"), timeout=30)
    scoring.CalculatePeriod(scoring_pb2.CalculatePeriodRequest(period_id=period, request_id=f"ops-calc-{period}"),
                            timeout=60)
    made["scoring"] += 2

    benefits = benefits_pb2_grpc.BenefitsServiceStub(suite.channel("benefits"))
    for customer in CUSTOMERS[:3]:
        benefits.ListEntitlements(benefits_pb2.ListEntitlementsRequest(customer_id=customer), timeout=30)
        made["benefits"] += 1
    return made


def handled_by_service(prometheus) -> dict[str, float]:
    result = prometheus.query(f"sum by (service) (grpc_server_handled_total{{{KEQUN_RPCS}}})")
    return {r["metric"]["service"]: float(r["value"][1]) for r in result}


@pytest.fixture(scope="module")
def traffic(kequn_suite, prometheus):
    """Wait for the first scrape of every target, note the counters, drive traffic."""
    def all_up():
        result = prometheus.query(f'up{{job="kequn", service!="{GHOST}"}}')
        return {r["metric"]["service"]: r["value"][1] for r in result} == dict.fromkeys(SERVICES, "1")
    prometheus.wait_until("four kequn targets up", all_up)
    before = handled_by_service(prometheus)
    return before, drive_traffic(kequn_suite)


def test_all_four_targets_are_up(prometheus, traffic):
    def health():
        targets = prometheus.api("targets", state="active")["activeTargets"]
        return {t["labels"]["service"]: t["health"] for t in targets if t["labels"].get("job") == "kequn"}
    expected = {**dict.fromkeys(SERVICES, "up"), GHOST: "down"}
    prometheus.wait_until(f"targets {expected}", lambda: health() == expected)


def test_grpc_server_handled_total_counts_the_rpcs_of_each_service(prometheus, traffic):
    before, made = traffic

    def moved():
        now = handled_by_service(prometheus)
        return all(now.get(s, 0) >= before.get(s, 0) + made[s] for s in SERVICES) and now
    now = prometheus.wait_until("grpc_server_handled_total to count the traffic", moved)
    assert set(now) == set(SERVICES)
    # The refused evaluation is there with its code, as the error-ratio alert reads it.
    refused = prometheus.value('sum(grpc_server_handled_total{job="kequn", service="tiering", '
                               'grpc_method="EvaluateCustomer", grpc_code=~"(?i)invalid_?argument"})')
    assert refused is not None and refused >= 1
    # Latency histograms are there for the p99 alert and the dashboard.
    assert prometheus.query(f"sum by (service) (grpc_server_handling_seconds_count{{{KEQUN_RPCS}}})")


@pytest.mark.parametrize("service, expr, at_least", [
    # decisions stored by tier and change kind
    ("tiering", 'sum(kequn_tiering_decisions_total{job="kequn", service="tiering"})', len(CUSTOMERS)),
    # assignment followed tiering's change feed: its stored cursor moved
    ("assignment", 'max(kequn_assignment_feed_cursor{job="kequn", service="assignment"})', 1),
    # the calculation run we asked for
    ("scoring", 'sum(kequn_scoring_runs_total{job="kequn", service="scoring"})', 1),
    # the entitlement lookups we made
    ("benefits", 'sum(kequn_benefits_entitlements_seconds_count{job="kequn", service="benefits"})', 3),
])
def test_each_service_kequn_metric_moved(prometheus, traffic, service, expr, at_least):
    prometheus.wait_until(f"{service}: {expr} >= {at_least}",
                          lambda: (prometheus.value(expr) or 0) >= at_least)


def test_every_service_reports_its_active_rulesets(prometheus, traffic):
    def loaded():
        result = prometheus.query('kequn_ruleset_active_version{job="kequn"} >= 1')
        return {r["metric"]["service"] for r in result} == set(SERVICES)
    prometheus.wait_until("kequn_ruleset_active_version on all four", loaded)
    failing = prometheus.query('kequn_ruleset_load_ok{job="kequn"} == 0')
    assert failing == []


def test_alert_rules_load_and_service_down_catches_only_the_dead_target(prometheus, traffic):
    groups = prometheus.api("rules", type="alert")["groups"]
    alerts = {rule["name"]: rule["health"] for g in groups for rule in g["rules"]}
    assert "KequnServiceDown" in alerts and set(alerts.values()) == {"ok"}

    def down_alerts():
        return {a["labels"]["service"]: a["state"] for a in prometheus.api("alerts")["alerts"]
                if a["labels"]["alertname"] == "KequnServiceDown"}
    # `for: 1m` keeps it pending in a test this short; pending is the rule matching.
    assert prometheus.wait_until("KequnServiceDown for the dead target", down_alerts) == {GHOST: "pending"}


# ------------------------------------------------------------------ logs


def test_one_json_line_per_rpc_with_service_method_code_duration_principal(kequn_suite, traffic):
    lines = [line for line in kequn_suite.services["tiering"].log_lines()
             if line.get("logger") == "kequn.rpc" and line.get("method") == "EvaluateCustomer"]
    assert len(lines) >= len(CUSTOMERS) + 1
    refused = [line for line in lines if line["code"] == "INVALID_ARGUMENT"]
    assert refused and refused[-1]["principal"] == "admin"
    for line in lines:
        assert line["service"] == "tiering" and line["grpc_service"] == "kequn.tiering.v1.TieringService"
        assert isinstance(line["duration_ms"], (int, float)) and line["duration_ms"] >= 0
        assert line["request_id"]


def test_request_id_follows_a_call_from_benefits_to_tiering(kequn_suite, traffic):
    request_id = "ops-trace-" + secrets.token_hex(8)
    customer = CUSTOMERS[-1]  # not asked of benefits before: benefits must ask tiering
    benefits = benefits_pb2_grpc.BenefitsServiceStub(kequn_suite.channel("benefits", "mobile_banking"))
    benefits.ListEntitlements(benefits_pb2.ListEntitlementsRequest(customer_id=customer), timeout=30,
                              metadata=(("x-request-id", request_id),))

    def traced(name):
        return [line for line in kequn_suite.services[name].log_lines()
                if line.get("logger") == "kequn.rpc" and line.get("request_id") == request_id]
    (outer,) = traced("benefits")
    assert outer["method"] == "ListEntitlements" and outer["principal"] == "mobile_banking"
    inner = traced("tiering")
    assert [line["method"] for line in inner] == ["GetCustomerTier"]
    assert inner[0]["principal"] == "service"  # benefits called as itself, with the caller's request id


def test_no_log_line_carries_a_whole_customer_id(kequn_suite, traffic):
    for service in kequn_suite.services.values():
        text = service.log_path.read_text(encoding="utf-8", errors="replace")
        leaked = [c for c in CUSTOMERS if c in text]
        assert leaked == [], f"{service.name} logged customer ids in clear"
