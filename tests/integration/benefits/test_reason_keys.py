"""Reason texts naming the employer and market (issue 14): the service
fills the shipped descriptions' optional parts from the profile's group
keys, drops them cleanly without, and the catalog pages never show a
placeholder. Real database, real default catalog."""
from __future__ import annotations

from services.benefits.domain import Profile

BRACES = set("{}[]")
KEYS = (("merchant_market_id", "MKT-7"), ("payroll_employer_id", "EMP-0042"))


def shown(svc, customer):
    return {e.benefit_id: e for e in svc.list_entitlements(customer, include_locked=True).entitlements}


def test_payroll_and_merchant_texts_name_the_employer_and_market(svc_and_profiles):
    svc, profiles = svc_and_profiles
    profiles.put(Profile("C-KEYS", "AFFLUENT", ("MERCHANT", "MOBILE_BANKING", "PAYROLL"), (), "WEALTH", 5_000_000,
                         group_keys=KEYS))
    got = shown(svc, "C-KEYS")
    for benefit in ("PAYDAY_COUPON", "SCAN_PAY_GIFT"):
        assert "of employer EMP-0042" in got[benefit].reason_text, got[benefit].reason_text
        assert "代发单位 EMP-0042" in got[benefit].reason_text_zh
        assert got[benefit].reason == got[benefit].reason_text
    fee = got["MERCHANT_FEE_WAIVER"]
    assert (fee.reason_text, fee.reason_text_zh) == ("merchant customers of market MKT-7 (group MERCHANT)",
                                                     "收单商户客户（商圈 MKT-7）（MERCHANT 客群）")
    for e in got.values():
        assert not BRACES & set(e.reason_text + e.reason_text_zh), e


def test_without_keys_the_text_is_clean(svc_and_profiles):
    svc, profiles = svc_and_profiles
    profiles.put(Profile("C-NOKEYS", "AFFLUENT", ("MERCHANT", "PAYROLL")))
    got = shown(svc, "C-NOKEYS")
    assert got["PAYDAY_COUPON"].reason_text == "payroll customers, on payday (group PAYROLL)"
    assert got["PAYDAY_COUPON"].reason_text_zh == "代发工资客户，开薪日专享（PAYROLL 客群）"
    assert got["MERCHANT_FEE_WAIVER"].reason_text == "merchant customers (group MERCHANT)"
    for e in got.values():
        assert not BRACES & set(e.reason_text + e.reason_text_zh), e


def test_hostile_key_values_are_shown_as_plain_bounded_text(svc_and_profiles):
    svc, profiles = svc_and_profiles
    profiles.put(Profile("C-HOSTILE", "MASS", ("PAYROLL",), group_keys=(
        ("payroll_employer_id", "{merchant_market_id}]\u202e\n<b>" + "X" * 300),)))
    text = shown(svc, "C-HOSTILE")["PAYDAY_COUPON"].reason_text
    assert text.startswith("payroll customers of employer merchant_market_id <b>XXX")
    assert not BRACES & set(text) and "\u202e" not in text and "\n" not in text and len(text) < 200


def test_catalog_pages_show_the_texts_without_placeholders(svc):
    entries, _ = svc.list_benefits(include_inactive=True, size=100)
    texts = {e.definition.benefit_id: (e.eligibility_text, e.eligibility_text_zh) for e in entries}
    assert texts["MERCHANT_FEE_WAIVER"] == ("merchant customers (group MERCHANT)", "收单商户客户（MERCHANT 客群）")
    assert all(not BRACES & set(en + zh) for en, zh in texts.values())
    assert svc.get_benefit("PAYDAY_COUPON").eligibility_text == "payroll customers, on payday (group PAYROLL)"
