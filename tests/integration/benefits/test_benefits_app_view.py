"""What an app draws (DOMAIN.md §6): why in words, how many left in which
period, through which channels, in stock or not, until when; and the catalog
pages (ListBenefits, GetBenefit). Real database, real default catalog."""
from __future__ import annotations

import pytest

from services.common.errors import NotFound, ResourceExhausted


def shown(svc, customer, **kw):
    return {e.benefit_id: e for e in svc.list_entitlements(customer, **kw).entitlements}


def test_entitlements_say_why_in_words_the_period_channels_and_end_date(svc):
    for customer in ("C-PB", "C-WEALTH", "C-AFF-PAY", "C-AFF-OLD", "C-MASS-OLD", "C-TAIL"):
        for e in shown(svc, customer).values():
            assert e.reason_text and e.reason_text != e.rule_id and e.reason == e.reason_text
            assert e.reason_text_zh and not e.reason_text_zh.isascii()
    pay = shown(svc, "C-AFF-PAY")
    payday = pay["PAYDAY_COUPON"]
    assert "payroll" in payday.reason_text and "代发" in payday.reason_text_zh
    assert (payday.remaining, payday.quota_period, payday.channels) == (1, "MONTH", ("MOBILE", "WECHAT"))
    assert payday.valid_until.isoformat() == "2027-12-31" and payday.in_stock
    assert "tier AFFLUENT" in pay["LOBBY_GIFT"].reason_text
    assert pay["WECHAT_COUPON"].quota_period == "WEEK"
    fee = shown(svc, "C-PB")["TRANSFER_FEE_WAIVER"]
    assert fee.channels == () and fee.quota_period == "MONTH"  # every channel


def test_locked_entitlements_say_which_tier_unlocks_them_in_words(svc):
    lounge = shown(svc, "C-AFF-PAY", include_locked=True)["AIRPORT_LOUNGE"]
    assert lounge.locked and "WEALTH" in lounge.reason_text and "WEALTH" in lounge.reason_text_zh


def test_a_sold_out_gift_is_shown_out_of_stock_before_anyone_claims_it(svc):
    assert not shown(svc, "C-AFF-PAY")["SCAN_PAY_GIFT"].in_stock  # no stock booked in yet
    svc.adjust_inventory("SCAN_PAY_GIFT", 1, "opening stock", "stock-1")
    svc.adjust_inventory("LOBBY_GIFT", 5, "opening stock", "stock-2")
    svc.set_budget("PAYROLL", "2025-03", 100_000, "budget-1")
    view = shown(svc, "C-AFF-PAY")
    assert view["SCAN_PAY_GIFT"].in_stock and view["LOBBY_GIFT"].in_stock
    svc.claim("C-AFF-PAY", "SCAN_PAY_GIFT", "MOBILE", "claim-1")
    after = shown(svc, "C-AFF-PAY")
    assert not after["SCAN_PAY_GIFT"].in_stock and after["SCAN_PAY_GIFT"].remaining == 0
    assert after["LOBBY_GIFT"].in_stock
    assert not svc.get_benefit("SCAN_PAY_GIFT").in_stock


def test_list_benefits_pages_through_the_catalog_in_id_order(svc):
    seen, token = [], ""
    for _ in range(10):
        page, token = svc.list_benefits(size=5, token=token)
        assert len(page) <= 5
        seen += [c.definition.benefit_id for c in page]
        if not token:
            break
    assert seen == sorted(seen) and len(seen) == 14
    lounge = svc.get_benefit("AIRPORT_LOUNGE")
    assert "tier WEALTH" in lounge.eligibility_text and "WEALTH" in lounge.eligibility_text_zh
    assert lounge.definition.channels == ("MOBILE", "RM") and lounge.in_stock


def test_list_benefits_hides_what_cannot_be_claimed_today_unless_asked(svc):
    svc.upsert_benefit("OLD_PROMO", {"name": "旧活动 Old promo", "kind": "COUPON", "valid_until": "2024-12-31",
                                     "eligibility_rule": "benefit.payday_coupon"}, "up-1")
    current = {c.definition.benefit_id for c in svc.list_benefits()[0]}
    everything = {c.definition.benefit_id for c in svc.list_benefits(include_inactive=True)[0]}
    assert "OLD_PROMO" not in current and "OLD_PROMO" in everything
    assert "payroll" in svc.get_benefit("OLD_PROMO").eligibility_text


def test_get_benefit_of_an_unknown_id_is_not_found_with_its_id(svc):
    with pytest.raises(NotFound) as err:
        svc.get_benefit("NO_SUCH_BENEFIT")
    assert err.value.reason == "NOT_FOUND" and err.value.metadata == {"benefit_id": "NO_SUCH_BENEFIT"}


def test_claiming_the_last_unit_twice_is_out_of_stock_not_a_busy_server(svc):
    svc.adjust_inventory("LOBBY_GIFT", 1, "opening stock", "stock-1")
    svc.set_budget("AFFLUENT", "2025-03", 100_000, "budget-1")
    svc.claim("C-AFF-PAY", "LOBBY_GIFT", "LOBBY", "claim-1")
    with pytest.raises(ResourceExhausted) as err:
        svc.claim("C-AFF-OLD", "LOBBY_GIFT", "LOBBY", "claim-2")
    assert err.value.reason == "OUT_OF_STOCK" and err.value.retry_after is None
    assert err.value.metadata == {"benefit_id": "LOBBY_GIFT"}
