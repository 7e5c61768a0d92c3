"""Entitlement reasons that name the employer and market, end to end: real
tiering and benefits processes on PostgreSQL, over gRPC. Tiering keeps the
group keys the snapshot carried, GetCustomerTier answers them
(TierDecision.group_keys), and benefits fills its rule descriptions' optional
parts with them; a customer without keys gets clean words. A description
whose placeholder could stay unfilled is refused before it is stored."""
from __future__ import annotations

from pathlib import Path

import grpc
import pytest
import yaml
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from kequn.benefits.v1 import benefits_pb2 as bpb
from kequn.benefits.v1 import benefits_pb2_grpc
from kequn.rules.v1 import rules_pb2 as rpb
from kequn.rules.v1 import rules_pb2_grpc
from kequn.tiering.v1 import tiering_pb2 as tpb
from kequn.tiering.v1 import tiering_pb2_grpc
from tests.e2e.harness import released, suite_on_postgres

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
T = 30
BRACES = set("{}[]")
CATALOG = Path(__file__).resolve().parents[3] / "services" / "benefits" / "rulesets" / "catalog.yaml"


@pytest.fixture(scope="module")
def suite(tmp_path_factory, _pg_database):
    with suite_on_postgres(tmp_path_factory.mktemp("reason-keys"), _pg_database, ("tiering", "benefits")) as s:
        yield s


@pytest.fixture(scope="module")
def stubs(suite):
    tiering = tiering_pb2_grpc.TieringServiceStub(suite.channel("tiering", "core_banking"))
    for customer_id, fields in (
            ("K-PAY", {"payroll_employer_id": "EMP-0042", "mobile_banking_active": True}),
            ("K-MER", {"is_merchant": True, "attributes": {"merchant_market_id": "MKT-7"}}),
            ("K-BARE", {"is_merchant": True, "mobile_banking_active": True})):
        fen = 10_000_000
        tiering.EvaluateCustomer(tpb.EvaluateCustomerRequest(customer=tpb.CustomerSnapshot(
            customer_id=customer_id, as_of="2025-03-01", annual_avg_aum_fen=fen, monthly_avg_aum_fen=fen,
            point_in_time_aum_fen=fen, **fields), request_id=f"eval-{customer_id}"), timeout=T)
    return {"tiering": tiering_pb2_grpc.TieringServiceStub(suite.channel("tiering", "service")),
            "benefits": benefits_pb2_grpc.BenefitsServiceStub(suite.channel("benefits", "mobile_banking")),
            "rules": rules_pb2_grpc.RuleStoreServiceStub(suite.channel("benefits", "admin"))}


def entitlements(stubs, customer_id) -> dict[str, bpb.Entitlement]:
    answer = stubs["benefits"].ListEntitlements(bpb.ListEntitlementsRequest(customer_id=customer_id,
                                                                            include_locked=True), timeout=T)
    return {e.benefit_id: e for e in answer.entitlements}


def test_get_customer_tier_answers_the_group_keys(stubs):
    tier = stubs["tiering"].GetCustomerTier(tpb.GetCustomerTierRequest(customer_id="K-PAY"), timeout=T)
    assert dict(tier.group_keys) == {"payroll_employer_id": "EMP-0042"}
    tier = stubs["tiering"].GetCustomerTier(tpb.GetCustomerTierRequest(customer_id="K-BARE"), timeout=T)
    assert dict(tier.group_keys) == {}


def test_a_payroll_customer_is_told_his_employer(stubs):
    got = entitlements(stubs, "K-PAY")
    payday = got["PAYDAY_COUPON"]
    assert payday.reason_text == "payroll customers of employer EMP-0042, on payday (group PAYROLL)"
    assert payday.reason_text_zh == "代发工资客户（代发单位 EMP-0042），开薪日专享（PAYROLL 客群）"
    assert "EMP-0042" in got["SCAN_PAY_GIFT"].reason_text and "EMP-0042" in got["SCAN_PAY_GIFT"].reason_text_zh


def test_a_merchant_is_told_his_market_and_one_without_keys_gets_clean_words(stubs):
    assert entitlements(stubs, "K-MER")["MERCHANT_FEE_WAIVER"].reason_text == \
        "merchant customers of market MKT-7 (group MERCHANT)"
    bare = entitlements(stubs, "K-BARE")
    fee = bare["MERCHANT_FEE_WAIVER"]
    assert (fee.reason_text, fee.reason_text_zh) == ("merchant customers (group MERCHANT)",
                                                     "收单商户客户（MERCHANT 客群）")
    assert bare and all(not BRACES & set(e.reason_text + e.reason_text_zh + e.reason) for e in bare.values())


def _details(err: grpc.RpcError) -> tuple[error_details_pb2.ErrorInfo, dict[str, str]]:
    """The ErrorInfo and the BadRequest violations (field → description)."""
    info, violations = None, {}
    for detail in rpc_status.from_call(err).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.update({v.field: v.description for v in bad.field_violations})
    assert info is not None, "no ErrorInfo"
    return info, violations


def _catalog(rule_id: str, description: str) -> str:
    doc = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))
    for rule in doc["rules"]:
        if rule["id"] == rule_id:
            rule["description"] = description
    return yaml.safe_dump(doc, allow_unicode=True)


def test_zz_a_bare_placeholder_is_refused_and_an_optional_one_is_served_once_published(suite, stubs):
    rules = stubs["rules"]
    with pytest.raises(grpc.RpcError) as err:
        rules.CreateRulesetVersion(rpb.CreateRulesetVersionRequest(name="benefits.catalog", document=_catalog(
            "benefit.merchant_fee_waiver", "商户 {merchant_market_id} / merchants of {merchant_market_id}")),
            timeout=T)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, violations = _details(err.value)
    assert (info.reason, info.domain) == ("INVALID_INPUT", "kequn.bank")
    assert list(violations) == ["document.rules[12].description"]
    assert "outside an optional [...] part" in violations["document.rules[12].description"]
    # Nothing was stored: the served text is still the shipped one.
    assert entitlements(stubs, "K-MER")["MERCHANT_FEE_WAIVER"].reason_text == \
        "merchant customers of market MKT-7 (group MERCHANT)"

    created = rules.CreateRulesetVersion(rpb.CreateRulesetVersionRequest(name="benefits.catalog", document=_catalog(
        "benefit.merchant_fee_waiver",
        "[{tier} ]商户[（{merchant_market_id}）] / [tier {tier} ]merchants[ of market {merchant_market_id}]")),
        timeout=T).ruleset_version
    released(suite, "benefits", created.name, created.version, timeout=T)  # four eyes
    tier = stubs["tiering"].GetCustomerTier(tpb.GetCustomerTierRequest(customer_id="K-MER"), timeout=T).tier
    fee = entitlements(stubs, "K-MER")["MERCHANT_FEE_WAIVER"]
    assert fee.ruleset.version == created.version
    assert (fee.reason_text, fee.reason_text_zh) == (f"tier {tier} merchants of market MKT-7", f"{tier} 商户（MKT-7）")
    assert entitlements(stubs, "K-BARE")["MERCHANT_FEE_WAIVER"].reason_text == f"tier {tier} merchants"
