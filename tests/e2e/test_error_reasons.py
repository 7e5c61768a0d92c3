"""Every refusal path of every RPC of tiering, scoring, benefits and their rule
stores answers google.rpc.ErrorInfo (domain kequn.bank) with its stable reason
and useful metadata (docs/errors.md), so a program acts on it without reading
the message. Real service processes on real ports, on PostgreSQL.

The world is built once (successful calls only); each case is then one call
that must be refused — a refusal changes nothing, so the cases are independent.
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from kequn.benefits.v1 import benefits_pb2 as bpb
from kequn.benefits.v1 import benefits_pb2_grpc
from kequn.rules.v1 import rules_pb2 as rpb
from kequn.rules.v1 import rules_pb2_grpc
from kequn.scoring.v1 import scoring_pb2 as spb
from kequn.scoring.v1 import scoring_pb2_grpc
from kequn.tiering.v1 import tiering_pb2 as tpb
from kequn.tiering.v1 import tiering_pb2_grpc
from sqlalchemy import text as sql

from services.common.db import make_engine
from tests.e2e.harness import Suite, released, suite_on_postgres

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
T = 30  # call timeout, seconds
CARDS = Path(__file__).resolve().parents[2] / "services" / "scoring" / "rulesets"
LOBBY = CARDS / "lobby_manager.yaml"
REMOTE = CARDS / "remote_manager.yaml"
LEAD = 600  # seconds: an approved release is held ready (and cannot be cancelled) this long before its instant


@pytest.fixture(scope="module")
def suite(tmp_path_factory, _pg_database):
    # A long poll: whatever a process serves right after PublishRuleset, it loaded while publishing.
    with suite_on_postgres(tmp_path_factory.mktemp("reasons"), _pg_database, ("tiering", "scoring", "benefits"),
                           extra_env={"KEQUN_RULES_POLL_SECONDS": "600",
                                      "KEQUN_RULES_RELEASE_LEAD_SECONDS": str(LEAD)}) as s:
        yield s


class Stubs:
    def __init__(self, suite: Suite, role: str = "admin"):
        self.tiering = tiering_pb2_grpc.TieringServiceStub(suite.channel("tiering", role))
        self.benefits = benefits_pb2_grpc.BenefitsServiceStub(suite.channel("benefits", role))
        self.scoring = scoring_pb2_grpc.ScoringServiceStub(suite.channel("scoring", role))
        self.scoring_rules = rules_pb2_grpc.RuleStoreServiceStub(suite.channel("scoring", role))


def _owners(suite: Suite) -> tuple[rules_pb2_grpc.RuleStoreServiceStub, rules_pb2_grpc.RuleStoreServiceStub]:
    """Scoring's rule store as the two development rule owners."""
    return tuple(rules_pb2_grpc.RuleStoreServiceStub(suite.channel("scoring", name))
                 for name in ("rule_owner_1", "rule_owner_2"))


def _in(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(datetime.now(timezone.utc) + timedelta(seconds=seconds))
    return ts


def _released(suite: Suite, name: str, version: int) -> rpb.Release:
    """Four eyes on scoring's rule store (see harness.released)."""
    return released(suite, "scoring", name, version, timeout=T)


def _snapshot(customer_id, fen, **fields):
    return tpb.CustomerSnapshot(customer_id=customer_id, as_of="2025-03-01", annual_avg_aum_fen=fen,
                                monthly_avg_aum_fen=fen, point_in_time_aum_fen=fen, **fields)


def _metric(staff, role, indicator, value, branch="B1"):
    return spb.MetricValue(staff_id=staff, role=role, branch_id=branch, indicator_id=indicator, value=str(value))


def _benefit(benefit_id, **fields):
    fields.setdefault("active", True)
    return bpb.UpsertBenefitRequest(benefit=bpb.Benefit(
        benefit_id=benefit_id, name=f"{benefit_id} test", eligibility_rule="benefit.points_gift", **fields),
        request_id=f"up-{benefit_id}")


def _claim(s, customer, benefit, channel="MOBILE", request_id=None):
    return s.benefits.ClaimBenefit(bpb.ClaimBenefitRequest(
        customer_id=customer, benefit_id=benefit, channel=channel,
        request_id=request_id or f"{customer}-{benefit}-{channel}"), timeout=T)


@pytest.fixture(scope="module")
def world(suite):
    s = Stubs(suite)
    one, two = _owners(suite)
    for cid, fen, extra in (("E-AFF", 10_000_000, {"payroll_employer_id": "EMP1", "mobile_banking_active": True}),
                            ("E-AFF2", 10_000_000, {"payroll_employer_id": "EMP1", "mobile_banking_active": True}),
                            ("E-TAIL", 2_000_000, {})):
        s.tiering.EvaluateCustomer(tpb.EvaluateCustomerRequest(customer=_snapshot(cid, fen, **extra),
                                                               request_id=f"eval-{cid}"), timeout=T)
    b = s.benefits
    b.UpsertBenefit(_benefit("INACTIVE_X", kind="COUPON", active=False), timeout=T)
    b.UpsertBenefit(_benefit("EXPIRED_X", kind="COUPON", valid_until="2024-12-31"), timeout=T)
    b.UpsertBenefit(_benefit("COOL_X", kind="COUPON", quota_per_period=5, quota_period=bpb.QUOTA_PERIOD_MONTH,
                             cooldown_seconds=3600), timeout=T)
    b.UpsertBenefit(_benefit("GIFT_X", kind="GIFT", physical=True), timeout=T)
    b.AdjustInventory(bpb.AdjustInventoryRequest(benefit_id="GIFT_X", delta=1, reason="opening stock",
                                                 request_id="stock-1"), timeout=T)
    month = datetime.now(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")
    b.SetBudget(bpb.SetBudgetRequest(group="PAYROLL", period=month, amount_fen=1000, request_id="budget-1"),
                timeout=T)
    _claim(s, "E-AFF", "PAYDAY_COUPON", "WECHAT")          # spends the whole PAYROLL budget, its quota
    _claim(s, "E-AFF", "COOL_X")                           # cool-down of an hour starts
    gift = _claim(s, "E-AFF", "GIFT_X")                    # the only unit: sold out now
    fulfilled = _claim(s, "E-TAIL", "COOL_X")
    b.FulfillClaim(bpb.FulfillClaimRequest(claim_id=fulfilled.claim_id, request_id="f-1"), timeout=T)
    cancelled = _claim(s, "E-AFF2", "COOL_X")
    b.CancelClaim(bpb.CancelClaimRequest(claim_id=cancelled.claim_id, reason="test", request_id="c-1"), timeout=T)

    sc = s.scoring
    for period in ("P-OPEN", "P-FIN", "P-STALE", "P-MISS", "P-BOOK"):
        sc.CreatePeriod(spb.CreatePeriodRequest(period_id=period, starts_on="2025-01-01", ends_on="2025-12-31",
                                                due_on="2026-01-31"), timeout=T)
    rm = [_metric("R1", "REMOTE_MANAGER", "calls_made", 900)]
    for period in ("P-FIN", "P-STALE"):
        sc.SubmitMetrics(spb.SubmitMetricsRequest(period_id=period, values=rm), timeout=T)
        sc.CalculatePeriod(spb.CalculatePeriodRequest(period_id=period), timeout=T)
    sc.FinalizePeriod(spb.FinalizePeriodRequest(period_id="P-FIN"), timeout=T)
    sc.SubmitMetrics(spb.SubmitMetricsRequest(period_id="P-STALE", values=rm), timeout=T)
    sc.SubmitMetrics(spb.SubmitMetricsRequest(period_id="P-BOOK", values=[  # scored on the book size
        _metric("WM1", "WEALTH_MANAGER", "penetration", 3)]), timeout=T)
    # The lobby managers' card, v2, blocks finalizing while a required value is missing.
    text = LOBBY.read_text(encoding="utf-8").replace("  role: LOBBY_MANAGER\n",
                                                     "  role: LOBBY_MANAGER\n  missing_values: block\n")
    rules = s.scoring_rules
    v2 = rules.CreateRulesetVersion(rpb.CreateRulesetVersionRequest(name="scoring.lobby_manager", document=text),
                                    timeout=T).ruleset_version.version
    active = _released(suite, "scoring.lobby_manager", v2)
    v3 = rules.CreateRulesetVersion(rpb.CreateRulesetVersionRequest(
        name="scoring.lobby_manager", document=text.replace("Lobby", "Lobby (draft)", 1)),
        timeout=T).ruleset_version.version
    sc.SubmitMetrics(spb.SubmitMetricsRequest(period_id="P-MISS", values=[
        _metric("L1", "LOBBY_MANAGER", "waiting_ratio", "0.1")]), timeout=T)
    sc.CalculatePeriod(spb.CalculatePeriodRequest(period_id="P-MISS"), timeout=T)

    # Releases (four eyes) of the remote managers' card: copies that score the same.
    remote = REMOTE.read_text(encoding="utf-8")

    def draft(owner, n):
        return owner.CreateRulesetVersion(rpb.CreateRulesetVersionRequest(
            name="scoring.remote_manager", document=remote.replace("Remote", f"Remote ({n})", 1)),
            timeout=T).ruleset_version.version
    # Written by rule_owner_1, asked for by rule_owner_2: neither may approve it.
    pending = two.RequestRelease(rpb.RequestReleaseRequest(name="scoring.remote_manager", version=draft(one, 2)),
                                 timeout=T)
    # Due in 60 s, less than the lead time: approval is refused as too soon.
    soon = one.RequestRelease(rpb.RequestReleaseRequest(name="scoring.remote_manager", version=draft(one, 3),
                                                        effective_from=_in(60)), timeout=T)
    # Approved for a little after the lead time; once inside it, it can no longer be cancelled.
    late = one.RequestRelease(rpb.RequestReleaseRequest(name="scoring.remote_manager", version=draft(one, 4),
                                                        effective_from=_in(LEAD + 8)), timeout=T)
    two.ApproveRelease(rpb.DecideReleaseRequest(release_id=late.release_id), timeout=T)
    rejected = one.RequestRelease(rpb.RequestReleaseRequest(name="scoring.remote_manager", version=draft(one, 5)),
                                  timeout=T)
    two.RejectRelease(rpb.DecideReleaseRequest(release_id=rejected.release_id, comment="no"), timeout=T)
    # A decision stored before decision inputs were kept (tiering_0005): its input is empty.
    old = s.tiering.EvaluateCustomer(tpb.EvaluateCustomerRequest(customer=_snapshot("E-OLD", 10_000_000),
                                                                 request_id="eval-E-OLD"), timeout=T)
    engine = make_engine(suite.env["KEQUN_TIERING_DATABASE_URL"])
    try:
        with engine.begin() as conn:
            conn.execute(sql("UPDATE tiering_decisions SET input = NULL WHERE decision_id = :d"),
                         {"d": old.decision_id})
    finally:
        engine.dispose()
    # Inside the lead time of `late` (8 s after it was asked for; it takes effect 600 s later).
    time.sleep(max(0.0, late.effective_from.ToDatetime(tzinfo=timezone.utc).timestamp() - LEAD
                   - time.time() + 0.5))
    return {"stubs": s, "month": month, "gift_claim": gift.claim_id, "fulfilled": fulfilled.claim_id,
            "cancelled": cancelled.claim_id, "v2": v2, "v3": v3, "active_release": active.release_id,
            "pending": pending.release_id, "soon": soon.release_id, "late": late.release_id,
            "rejected": rejected.release_id, "pending_version": pending.version, "old_decision": old.decision_id, "owners": (one, two)}


def refusal(call) -> tuple[grpc.StatusCode, error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo | None]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    status = rpc_status.from_call(err.value)
    assert status is not None, f"{err.value.code()} without details: {err.value.details()}"
    infos, retries = [], []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            infos.append(info)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retries.append(retry)
    assert len(infos) == 1 and infos[0].domain == "kequn.bank"
    return err.value.code(), infos[0], (retries[0] if retries else None)


C = grpc.StatusCode
# (id, call(world), code, reason, metadata the caller can act on)
CASES = [
    # ---- tiering
    ("tiering.GetCustomerTier empty id", lambda w, s: s.tiering.GetCustomerTier(
        tpb.GetCustomerTierRequest(customer_id=""), timeout=T), C.INVALID_ARGUMENT, "INVALID_INPUT", {}),
    ("tiering.GetCustomerTier unknown", lambda w, s: s.tiering.GetCustomerTier(
        tpb.GetCustomerTierRequest(customer_id="NOBODY"), timeout=T), C.NOT_FOUND, "NOT_FOUND",
     {"customer_id": "NOBODY"}),
    ("tiering.EvaluateCustomer bad snapshot", lambda w, s: s.tiering.EvaluateCustomer(
        tpb.EvaluateCustomerRequest(customer=_snapshot("E-BAD", 1, age=500), request_id="bad"), timeout=T),
     C.INVALID_ARGUMENT, "INVALID_INPUT", {}),
    ("tiering.ListTierChanges negative cursor", lambda w, s: s.tiering.ListTierChanges(
        tpb.ListTierChangesRequest(after_cursor=-1), timeout=T), C.INVALID_ARGUMENT, "INVALID_INPUT", {}),
    # ---- benefits: reading
    ("benefits.ListEntitlements empty id", lambda w, s: s.benefits.ListEntitlements(
        bpb.ListEntitlementsRequest(customer_id=""), timeout=T), C.INVALID_ARGUMENT, "INVALID_INPUT", {}),
    ("benefits.ListEntitlements unknown customer", lambda w, s: s.benefits.ListEntitlements(
        bpb.ListEntitlementsRequest(customer_id="NOBODY"), timeout=T), C.NOT_FOUND, "NOT_FOUND",
     {"customer_id": "NOBODY"}),
    ("benefits.GetBenefit unknown", lambda w, s: s.benefits.GetBenefit(
        bpb.GetBenefitRequest(benefit_id="NO_SUCH"), timeout=T), C.NOT_FOUND, "NOT_FOUND", {"benefit_id": "NO_SUCH"}),
    ("benefits.ListBenefits bad token", lambda w, s: s.benefits.ListBenefits(
        bpb.ListBenefitsRequest(page_token="%%%"), timeout=T), C.INVALID_ARGUMENT, "INVALID_INPUT", {}),
    ("benefits.ListClaims bad token", lambda w, s: s.benefits.ListClaims(
        bpb.ListClaimsRequest(customer_id="E-AFF", page_token="%%%"), timeout=T), C.INVALID_ARGUMENT,
     "INVALID_INPUT", {}),
    # ---- benefits: claims
    ("benefits.ClaimBenefit unknown benefit", lambda w, s: _claim(s, "E-AFF", "NO_SUCH"), C.NOT_FOUND,
     "NOT_FOUND", {"benefit_id": "NO_SUCH"}),
    ("benefits.ClaimBenefit not eligible", lambda w, s: _claim(s, "E-AFF", "HEALTH_CHECK"),
     C.FAILED_PRECONDITION, "NOT_ELIGIBLE", {"benefit_id": "HEALTH_CHECK", "tier": "AFFLUENT"}),
    ("benefits.ClaimBenefit wrong channel", lambda w, s: _claim(s, "E-AFF2", "PAYDAY_COUPON", "LOBBY"),
     C.FAILED_PRECONDITION, "CHANNEL_NOT_ALLOWED",
     {"benefit_id": "PAYDAY_COUPON", "channel": "LOBBY", "allowed_channels": "MOBILE,WECHAT"}),
    ("benefits.ClaimBenefit inactive", lambda w, s: _claim(s, "E-AFF", "INACTIVE_X"), C.FAILED_PRECONDITION,
     "BENEFIT_INACTIVE", {"benefit_id": "INACTIVE_X"}),
    ("benefits.ClaimBenefit outside validity", lambda w, s: _claim(s, "E-AFF", "EXPIRED_X"),
     C.FAILED_PRECONDITION, "OUTSIDE_VALIDITY", {"benefit_id": "EXPIRED_X", "valid_until": "2024-12-31"}),
    ("benefits.ClaimBenefit quota used", lambda w, s: _claim(s, "E-AFF", "PAYDAY_COUPON", "MOBILE"),
     C.FAILED_PRECONDITION, "QUOTA_USED",
     {"benefit_id": "PAYDAY_COUPON", "limit": "1", "used": "1", "quota_period": "MONTH"}),
    ("benefits.ClaimBenefit cool-down", lambda w, s: _claim(s, "E-AFF", "COOL_X", "WECHAT"),
     C.FAILED_PRECONDITION, "COOL_DOWN", {"benefit_id": "COOL_X", "cooldown_seconds": "3600"}),
    ("benefits.ClaimBenefit not enough points", lambda w, s: _claim(s, "E-TAIL", "POINTS_GIFT"),
     C.FAILED_PRECONDITION, "INSUFFICIENT_POINTS", {"benefit_id": "POINTS_GIFT", "points_cost": "5000",
                                                    "balance": "0"}),
    ("benefits.ClaimBenefit out of stock", lambda w, s: _claim(s, "E-TAIL", "GIFT_X"), C.RESOURCE_EXHAUSTED,
     "OUT_OF_STOCK", {"benefit_id": "GIFT_X"}),
    ("benefits.ClaimBenefit budget spent", lambda w, s: _claim(s, "E-AFF2", "PAYDAY_COUPON", "WECHAT"),
     C.RESOURCE_EXHAUSTED, "BUDGET_EXHAUSTED", {"benefit_id": "PAYDAY_COUPON", "budget_group": "PAYROLL"}),
    ("benefits.ClaimBenefit no budget set", lambda w, s: _claim(s, "E-AFF", "LOBBY_GIFT", "LOBBY"),
     C.RESOURCE_EXHAUSTED, "BUDGET_EXHAUSTED", {"budget_group": "AFFLUENT", "budget_period": ""}),
    ("benefits.ClaimBenefit request_id of another claim", lambda w, s: _claim(
        s, "E-AFF", "WECHAT_COUPON", request_id="E-AFF-COOL_X-MOBILE"), C.INVALID_ARGUMENT, "INVALID_INPUT", {}),
    ("benefits.CancelClaim unknown", lambda w, s: s.benefits.CancelClaim(
        bpb.CancelClaimRequest(claim_id="nope", reason="x"), timeout=T), C.NOT_FOUND, "NOT_FOUND",
     {"claim_id": "nope"}),
    ("benefits.CancelClaim fulfilled", lambda w, s: s.benefits.CancelClaim(
        bpb.CancelClaimRequest(claim_id=w["fulfilled"], reason="x"), timeout=T), C.FAILED_PRECONDITION,
     "WRONG_STATE", {"status": "FULFILLED"}),
    ("benefits.FulfillClaim cancelled", lambda w, s: s.benefits.FulfillClaim(
        bpb.FulfillClaimRequest(claim_id=w["cancelled"]), timeout=T), C.FAILED_PRECONDITION, "WRONG_STATE",
     {"status": "CANCELLED"}),
    ("benefits.FulfillClaim unknown", lambda w, s: s.benefits.FulfillClaim(
        bpb.FulfillClaimRequest(claim_id="nope"), timeout=T), C.NOT_FOUND, "NOT_FOUND", {"claim_id": "nope"}),
    # ---- benefits: administration
    ("benefits.UpsertBenefit bad fields", lambda w, s: s.benefits.UpsertBenefit(
        bpb.UpsertBenefitRequest(benefit=bpb.Benefit(benefit_id="bad id")), timeout=T), C.INVALID_ARGUMENT,
     "INVALID_INPUT", {}),
    ("benefits.AdjustInventory not physical", lambda w, s: s.benefits.AdjustInventory(
        bpb.AdjustInventoryRequest(benefit_id="PAYDAY_COUPON", delta=1, reason="x"), timeout=T),
     C.FAILED_PRECONDITION, "NOT_PHYSICAL", {"benefit_id": "PAYDAY_COUPON"}),
    ("benefits.AdjustInventory below held", lambda w, s: s.benefits.AdjustInventory(
        bpb.AdjustInventoryRequest(benefit_id="GIFT_X", delta=-1, reason="broken"), timeout=T),
     C.FAILED_PRECONDITION, "STOCK_HELD", {"benefit_id": "GIFT_X", "on_hand": "1", "reserved": "1"}),
    ("benefits.AdjustInventory delta 0", lambda w, s: s.benefits.AdjustInventory(
        bpb.AdjustInventoryRequest(benefit_id="GIFT_X", delta=0, reason="x"), timeout=T), C.INVALID_ARGUMENT,
     "INVALID_INPUT", {}),
    ("benefits.GetInventory unknown", lambda w, s: s.benefits.GetInventory(
        bpb.GetInventoryRequest(benefit_id="NO_SUCH"), timeout=T), C.NOT_FOUND, "NOT_FOUND",
     {"benefit_id": "NO_SUCH"}),
    ("benefits.SetBudget below spent", lambda w, s: s.benefits.SetBudget(
        bpb.SetBudgetRequest(group="PAYROLL", period=w["month"], amount_fen=10), timeout=T),
     C.FAILED_PRECONDITION, "BUDGET_BELOW_SPENT", {"budget_group": "PAYROLL", "spent_fen": "1000"}),
    ("benefits.SetBudget past period", lambda w, s: s.benefits.SetBudget(
        bpb.SetBudgetRequest(group="PAYROLL", period="2001", amount_fen=10), timeout=T), C.INVALID_ARGUMENT,
     "INVALID_INPUT", {}),
    ("benefits.GetBudget unknown", lambda w, s: s.benefits.GetBudget(
        bpb.GetBudgetRequest(group="NOBODY", period="2025"), timeout=T), C.NOT_FOUND, "NOT_FOUND",
     {"budget_group": "NOBODY", "budget_period": "2025"}),
    ("benefits.DebitPoints short", lambda w, s: s.benefits.DebitPoints(
        bpb.DebitPointsRequest(customer_id="E-TAIL", points=10, reason="x", request_id="d-1"), timeout=T),
     C.FAILED_PRECONDITION, "INSUFFICIENT_POINTS", {"customer_id": "E-TAIL", "balance": "0", "points": "10"}),
    ("benefits.CreditPoints zero", lambda w, s: s.benefits.CreditPoints(
        bpb.CreditPointsRequest(customer_id="E-TAIL", points=0, reason="x", request_id="cr-1"), timeout=T),
     C.INVALID_ARGUMENT, "INVALID_INPUT", {}),
    # ---- scoring
    ("scoring.CreatePeriod exists", lambda w, s: s.scoring.CreatePeriod(spb.CreatePeriodRequest(
        period_id="P-OPEN", starts_on="2025-01-01", ends_on="2025-12-31", due_on="2026-01-31"), timeout=T),
     C.ALREADY_EXISTS, "CONFLICT", {"period_id": "P-OPEN"}),
    ("scoring.GetPeriod unknown", lambda w, s: s.scoring.GetPeriod(spb.GetPeriodRequest(period_id="P-NONE"),
                                                                   timeout=T), C.NOT_FOUND, "NOT_FOUND",
     {"period_id": "P-NONE"}),
    ("scoring.SubmitMetrics unknown role", lambda w, s: s.scoring.SubmitMetrics(spb.SubmitMetricsRequest(
        period_id="P-OPEN", values=[_metric("X1", "NO_SUCH_ROLE", "calls_made", 1)]), timeout=T),
     C.INVALID_ARGUMENT, "INVALID_INPUT", {}),
    ("scoring.SubmitMetrics out of range", lambda w, s: s.scoring.SubmitMetrics(spb.SubmitMetricsRequest(
        period_id="P-OPEN", values=[_metric("R1", "REMOTE_MANAGER", "product_penetration", 40)]), timeout=T),
     C.INVALID_ARGUMENT, "INVALID_INPUT", {"indicator_id": "product_penetration", "min": "0", "max": "1"}),
    ("scoring.SubmitMetrics finalized", lambda w, s: s.scoring.SubmitMetrics(spb.SubmitMetricsRequest(
        period_id="P-FIN", values=[_metric("R1", "REMOTE_MANAGER", "calls_made", 1)]), timeout=T),
     C.FAILED_PRECONDITION, "PERIOD_FINALIZED", {"period_id": "P-FIN"}),
    ("scoring.CalculatePeriod finalized", lambda w, s: s.scoring.CalculatePeriod(
        spb.CalculatePeriodRequest(period_id="P-FIN"), timeout=T), C.FAILED_PRECONDITION, "PERIOD_FINALIZED",
     {"period_id": "P-FIN"}),
    ("scoring.FinalizePeriod finalized", lambda w, s: s.scoring.FinalizePeriod(
        spb.FinalizePeriodRequest(period_id="P-FIN"), timeout=T), C.FAILED_PRECONDITION, "PERIOD_FINALIZED",
     {"period_id": "P-FIN"}),
    ("scoring.FinalizePeriod open", lambda w, s: s.scoring.FinalizePeriod(
        spb.FinalizePeriodRequest(period_id="P-OPEN"), timeout=T), C.FAILED_PRECONDITION, "PERIOD_NOT_CALCULATED",
     {"period_id": "P-OPEN"}),
    ("scoring.FinalizePeriod stale", lambda w, s: s.scoring.FinalizePeriod(
        spb.FinalizePeriodRequest(period_id="P-STALE"), timeout=T), C.FAILED_PRECONDITION, "RESULTS_STALE",
     {"period_id": "P-STALE", "roles": "REMOTE_MANAGER"}),
    ("scoring.FinalizePeriod missing values", lambda w, s: s.scoring.FinalizePeriod(
        spb.FinalizePeriodRequest(period_id="P-MISS"), timeout=T), C.FAILED_PRECONDITION, "MISSING_VALUES",
     {"period_id": "P-MISS", "staff_id": "L1", "results": "1"}),
    ("scoring.ReviseScore not finalized", lambda w, s: s.scoring.ReviseScore(spb.ReviseScoreRequest(
        staff_id="R1", period_id="P-STALE", reason="x", corrections=[_metric("R1", "REMOTE_MANAGER", "calls_made",
                                                                              5)]), timeout=T),
     C.FAILED_PRECONDITION, "PERIOD_NOT_FINALIZED", {"period_id": "P-STALE"}),
    ("scoring.ReviseScore unknown staff", lambda w, s: s.scoring.ReviseScore(spb.ReviseScoreRequest(
        staff_id="NOBODY", period_id="P-FIN", reason="x", corrections=[_metric("NOBODY", "REMOTE_MANAGER",
                                                                                "calls_made", 5)]), timeout=T),
     C.NOT_FOUND, "NOT_FOUND", {"staff_id": "NOBODY", "period_id": "P-FIN"}),
    ("scoring.GetScore unknown", lambda w, s: s.scoring.GetScore(spb.GetScoreRequest(
        staff_id="NOBODY", period_id="P-FIN"), timeout=T), C.NOT_FOUND, "NOT_FOUND", {"staff_id": "NOBODY"}),
    ("scoring.ListScores bad token", lambda w, s: s.scoring.ListScores(spb.ListScoresRequest(
        period_id="P-FIN", page_token="%%%"), timeout=T), C.INVALID_ARGUMENT, "INVALID_INPUT", {}),
    # ---- rule store (scoring's)
    ("rules.PublishRuleset not a draft", lambda w, s: s.scoring_rules.PublishRuleset(rpb.PublishRulesetRequest(
        name="scoring.lobby_manager", version=w["v2"]), timeout=T), C.FAILED_PRECONDITION, "WRONG_STATE",
     {"ruleset": "scoring.lobby_manager", "status": "PUBLISHED"}),
    ("rules.PublishRuleset unknown version", lambda w, s: s.scoring_rules.PublishRuleset(
        rpb.PublishRulesetRequest(name="scoring.lobby_manager", version=99), timeout=T), C.NOT_FOUND, "NOT_FOUND",
     {"ruleset": "scoring.lobby_manager", "version": "99"}),
    ("rules.PublishRuleset not served here", lambda w, s: s.scoring_rules.PublishRuleset(
        rpb.PublishRulesetRequest(name="benefits.catalog", version=1), timeout=T), C.NOT_FOUND, "NOT_FOUND",
     {"ruleset": "benefits.catalog"}),
    ("rules.RollbackRuleset to the active version", lambda w, s: s.scoring_rules.RollbackRuleset(
        rpb.RollbackRulesetRequest(name="scoring.lobby_manager", to_version=w["v2"]), timeout=T),
     C.FAILED_PRECONDITION, "WRONG_STATE", {"status": "ACTIVE"}),
    ("rules.RollbackRuleset to a draft", lambda w, s: s.scoring_rules.RollbackRuleset(
        rpb.RollbackRulesetRequest(name="scoring.lobby_manager", to_version=w["v3"]), timeout=T),
     C.FAILED_PRECONDITION, "WRONG_STATE", {"status": "DRAFT"}),
    ("rules.CreateRulesetVersion invalid", lambda w, s: s.scoring_rules.CreateRulesetVersion(
        rpb.CreateRulesetVersionRequest(document="name: scoring.x\nkind: scoring.scorecard\n"), timeout=T),
     C.INVALID_ARGUMENT, "INVALID_INPUT", {}),
    ("rules.GetRuleset negative version", lambda w, s: s.scoring_rules.GetRuleset(
        rpb.GetRulesetRequest(name="scoring.lobby_manager", version=-1), timeout=T), C.INVALID_ARGUMENT,
     "INVALID_INPUT", {}),
    # ---- governance (issue 15): releases, population simulation, explained decisions
    ("rules.PublishRuleset four eyes", lambda w, s: s.scoring_rules.PublishRuleset(rpb.PublishRulesetRequest(
        name="scoring.lobby_manager", version=w["v3"]), timeout=T), C.FAILED_PRECONDITION, "FOUR_EYES_REQUIRED",
     {"ruleset": "scoring.lobby_manager"}),
    ("rules.ApproveRelease by its requester", lambda w, s: w["owners"][1].ApproveRelease(
        rpb.DecideReleaseRequest(release_id=w["pending"]), timeout=T), C.PERMISSION_DENIED, "SELF_APPROVAL",
     {"release_id": "*"}),
    ("rules.ApproveRelease by the version's author", lambda w, s: w["owners"][0].ApproveRelease(
        rpb.DecideReleaseRequest(release_id=w["pending"]), timeout=T), C.PERMISSION_DENIED, "SELF_APPROVAL",
     {"release_id": "*", "author": "rule_owner_1"}),
    ("rules.ApproveRelease effective too soon", lambda w, s: w["owners"][1].ApproveRelease(
        rpb.DecideReleaseRequest(release_id=w["soon"]), timeout=T), C.FAILED_PRECONDITION,
     "EFFECTIVE_FROM_TOO_SOON", {"release_id": "*", "lead_seconds": str(LEAD)}),
    ("rules.ApproveRelease already active", lambda w, s: w["owners"][0].ApproveRelease(
        rpb.DecideReleaseRequest(release_id=w["active_release"]), timeout=T), C.FAILED_PRECONDITION,
     "WRONG_STATE", {"status": "ACTIVE"}),
    ("rules.ApproveRelease unknown", lambda w, s: w["owners"][0].ApproveRelease(
        rpb.DecideReleaseRequest(release_id="0" * 32), timeout=T), C.NOT_FOUND, "NOT_FOUND", {}),
    ("rules.ApproveRelease no id", lambda w, s: w["owners"][0].ApproveRelease(
        rpb.DecideReleaseRequest(release_id=""), timeout=T), C.INVALID_ARGUMENT, "INVALID_INPUT", {}),
    ("rules.RejectRelease too late to cancel", lambda w, s: w["owners"][0].RejectRelease(
        rpb.DecideReleaseRequest(release_id=w["late"]), timeout=T), C.FAILED_PRECONDITION, "TOO_LATE_TO_CANCEL",
     {"release_id": "*", "lead_seconds": str(LEAD)}),
    ("rules.RejectRelease already rejected", lambda w, s: w["owners"][0].RejectRelease(
        rpb.DecideReleaseRequest(release_id=w["rejected"]), timeout=T), C.FAILED_PRECONDITION, "WRONG_STATE",
     {"status": "REJECTED"}),
    ("rules.RequestRelease not a draft", lambda w, s: w["owners"][0].RequestRelease(rpb.RequestReleaseRequest(
        name="scoring.lobby_manager", version=w["v2"]), timeout=T), C.FAILED_PRECONDITION, "WRONG_STATE",
     {"ruleset": "scoring.lobby_manager", "status": "PUBLISHED"}),
    ("rules.RequestRelease second open release", lambda w, s: w["owners"][0].RequestRelease(
        rpb.RequestReleaseRequest(name="scoring.remote_manager", version=w["pending_version"]), timeout=T), C.ALREADY_EXISTS,
     "CONFLICT", {"ruleset": "scoring.remote_manager", "release_id": "*"}),
    ("rules.RequestRelease in the past", lambda w, s: w["owners"][0].RequestRelease(rpb.RequestReleaseRequest(
        name="scoring.lobby_manager", version=w["v3"], effective_from=_in(-60)), timeout=T),
     C.INVALID_ARGUMENT, "INVALID_INPUT", {}),
    ("rules.RequestRelease not served here", lambda w, s: w["owners"][0].RequestRelease(rpb.RequestReleaseRequest(
        name="tiering.tiers", version=1), timeout=T), C.NOT_FOUND, "NOT_FOUND", {"ruleset": "tiering.tiers"}),
    ("rules.ListReleases bad token", lambda w, s: s.scoring_rules.ListReleases(rpb.ListReleasesRequest(
        page_token="%%%"), timeout=T), C.INVALID_ARGUMENT, "INVALID_INPUT", {}),
    ("rules.SimulatePopulation nothing stored", lambda w, s: list(s.scoring_rules.SimulatePopulation(
        rpb.SimulatePopulationRequest(name="scoring.lobby_manager", version=w["v3"]), timeout=T)),
     C.FAILED_PRECONDITION, "NO_POPULATION", {"ruleset": "scoring.lobby_manager"}),
    ("tiering.ExplainDecision unknown", lambda w, s: s.tiering.ExplainDecision(tpb.ExplainDecisionRequest(
        decision_id="0" * 32), timeout=T), C.NOT_FOUND, "NOT_FOUND", {"decision_id": "0" * 32}),
    ("tiering.ExplainDecision no id", lambda w, s: s.tiering.ExplainDecision(tpb.ExplainDecisionRequest(
        decision_id=""), timeout=T), C.INVALID_ARGUMENT, "INVALID_INPUT", {}),
    ("tiering.ExplainDecision input not stored", lambda w, s: s.tiering.ExplainDecision(
        tpb.ExplainDecisionRequest(decision_id=w["old_decision"]), timeout=T), C.FAILED_PRECONDITION,
     "INPUT_NOT_STORED", {"decision_id": "*"}),
]


@pytest.mark.parametrize("call, code, reason, metadata", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_refusal_carries_its_reason(world, call, code, reason, metadata):
    got_code, info, retry = refusal(lambda: call(world, world["stubs"]))
    assert (got_code, info.reason) == (code, reason)
    # "*": the key must be there, whatever its value (e.g. a generated release id).
    assert {k: "*" if v == "*" and info.metadata.get(k) else info.metadata.get(k) for k, v in metadata.items()} \
        == metadata
    assert retry is None  # none of these gets better by waiting


def test_a_sold_out_gift_is_told_apart_from_a_busy_server_without_reading_text(world):
    code, info, retry = refusal(lambda: _claim(world["stubs"], "E-AFF2", "GIFT_X"))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.reason == "OUT_OF_STOCK" and retry is None  # not OVERLOADED, and no RetryInfo: do not retry


def test_the_caller_can_tell_who_it_is_and_what_it_may_do(suite, world):
    anonymous = tiering_pb2_grpc.TieringServiceStub(suite.channel("tiering", None))
    code, info, _ = refusal(lambda: anonymous.GetCustomerTier(tpb.GetCustomerTierRequest(customer_id="E-AFF"),
                                                              timeout=T))
    assert (code, info.reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    mobile = Stubs(suite, "mobile_banking")
    code, info, _ = refusal(lambda: mobile.benefits.SetBudget(bpb.SetBudgetRequest(
        group="PAYROLL", period=world["month"], amount_fen=1), timeout=T))
    assert (code, info.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")


def test_publish_answers_once_the_publishing_process_serves_the_new_card(suite, world):
    """Polls every 600 s here: only the approval itself can have loaded the card."""
    s = world["stubs"]
    text = (CARDS / "remote_manager.yaml").read_text(encoding="utf-8").replace(
        "scoring.remote_manager", "scoring.night_manager").replace("role: REMOTE_MANAGER", "role: NIGHT_MANAGER")
    values = [_metric("N1", "NIGHT_MANAGER", "calls_made", 10)]
    code, info, _ = refusal(lambda: s.scoring.SubmitMetrics(spb.SubmitMetricsRequest(
        period_id="P-OPEN", values=values), timeout=T))
    assert (code, info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUT")  # no such card yet
    created = s.scoring_rules.CreateRulesetVersion(rpb.CreateRulesetVersionRequest(
        name="scoring.night_manager", document=text), timeout=T).ruleset_version
    # Four eyes; an approval without effective_from answers once this process serves the card.
    _released(suite, created.name, created.version)
    assert s.scoring.SubmitMetrics(spb.SubmitMetricsRequest(period_id="P-OPEN", values=values),
                                   timeout=T).accepted == 1


def test_assignment_down_is_a_dependency_refusal_with_retry_info(world):
    """Assignment is not running here: wealth managers' cards need its book sizes."""
    code, info, retry = refusal(lambda: world["stubs"].scoring.CalculatePeriod(spb.CalculatePeriodRequest(
        period_id="P-BOOK", role="WEALTH_MANAGER"), timeout=T))
    assert (code, info.reason, info.metadata["dependency"]) == (grpc.StatusCode.UNAVAILABLE,
                                                                "DEPENDENCY_UNAVAILABLE", "assignment")
    assert retry is not None and retry.retry_delay.ToNanoseconds() > 0


def test_zz_tiering_down_is_a_dependency_refusal_with_retry_info(suite, world):
    """Last: it stops tiering."""
    suite.stop("tiering")
    code, info, retry = refusal(lambda: world["stubs"].benefits.ListEntitlements(
        bpb.ListEntitlementsRequest(customer_id="NEVER-SEEN"), timeout=T))
    assert (code, info.reason, info.metadata["dependency"]) == (grpc.StatusCode.UNAVAILABLE,
                                                                "DEPENDENCY_UNAVAILABLE", "tiering")
    assert retry is not None and retry.retry_delay.ToNanoseconds() > 0
