"""Benefits use cases against a real database (SQLite and PostgreSQL), the real
default catalog ruleset and durable-rules."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from services.benefits.domain import UNLIMITED
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, Unavailable

from .conftest import shanghai


def ids(view):
    return {e.benefit_id for e in view.entitlements}


def stock(svc, benefit_id, units=10, request_id=None):
    return svc.adjust_inventory(benefit_id, units, "opening stock", request_id or f"stock-{benefit_id}")


# ------------------------------------------------------------- eligibility

@pytest.mark.parametrize("customer, expected", [
    ("C-PB", {"PB_FAMILY_EDUCATION", "LOBBY_GIFT", "POINTS_GIFT", "TRANSFER_FEE_WAIVER", "AIRPORT_LOUNGE",
              "HEALTH_CHECK"}),
    ("C-WEALTH", {"CAR_OWNER_DAY", "LOBBY_GIFT", "POINTS_GIFT", "TRANSFER_FEE_WAIVER", "AIRPORT_LOUNGE",
                  "PB_PROSPECT_CONSULT"}),
    ("C-AFF-PAY", {"SCAN_PAY_GIFT", "PAYDAY_COUPON", "LOBBY_GIFT", "WECHAT_COUPON", "POINTS_GIFT"}),
    ("C-AFF-OLD", {"SENIOR_HEALTH_CHECK", "SILVER_HAIR_EVENT", "LOBBY_GIFT", "POINTS_GIFT"}),
    ("C-MASS-OLD", {"SILVER_HAIR_EVENT"}),
    ("C-TAIL", {"POINTS_GIFT"}),
    ("C-MASS", set()),
])
def test_entitlements_follow_tier_and_groups_of_the_default_catalog(svc, customer, expected):
    view = svc.list_entitlements(customer)
    assert ids(view) == expected
    for e in view.entitlements:
        assert e.rule_id.startswith("benefit.") and not e.locked
    assert view.ruleset == "benefits.catalog" and view.version == 1


def test_entitlement_says_why_how_many_left_and_points_cost(svc):
    view = svc.list_entitlements("C-TAIL")
    (gift,) = view.entitlements
    assert (gift.rule_id, gift.remaining, gift.points_cost) == ("benefit.points_gift", 2, 5000)
    fee = {e.benefit_id: e for e in svc.list_entitlements("C-PB").entitlements}["TRANSFER_FEE_WAIVER"]
    assert fee.remaining == 10


def test_include_locked_shows_what_the_next_tier_unlocks_and_the_gap(svc):
    view = svc.list_entitlements("C-AFF-PAY", include_locked=True)
    locked = {e.benefit_id: e for e in view.entitlements if e.locked}
    assert set(locked) == {"TRANSFER_FEE_WAIVER", "AIRPORT_LOUNGE"}
    assert {(e.unlock_tier, e.unlock_gap_fen) for e in locked.values()} == {("WEALTH", 5_000_000)}
    assert ids(svc.list_entitlements("C-AFF-PAY")) == ids(view) - set(locked)


def test_unknown_customer_is_not_found_and_tiering_down_is_unavailable(svc_and_profiles):
    svc, profiles = svc_and_profiles
    with pytest.raises(NotFound):
        svc.list_entitlements("NOBODY")
    profiles.down = True
    with pytest.raises(Unavailable):
        svc.list_entitlements("C-PB")


# ------------------------------------------------------------------ claims

def test_claim_is_idempotent_by_request_id(svc):
    svc.set_budget("PAYROLL", "2025-03", 100_000, "b-1")
    first = svc.claim("C-AFF-PAY", "PAYDAY_COUPON", "WECHAT", "r-1")
    again = svc.claim("C-AFF-PAY", "PAYDAY_COUPON", "WECHAT", "r-1")
    assert again == first
    assert len(svc.list_claims("C-AFF-PAY")[0]) == 1
    with pytest.raises(InvalidArgument):
        svc.claim("C-AFF-PAY", "WECHAT_COUPON", "WECHAT", "r-1")


def test_not_eligible_unknown_benefit_and_wrong_channel_change_nothing(svc):
    with pytest.raises(FailedPrecondition, match="not eligible"):
        svc.claim("C-MASS", "PAYDAY_COUPON", "MOBILE", "r-1")
    with pytest.raises(NotFound):
        svc.claim("C-AFF-PAY", "NO_SUCH_BENEFIT", "MOBILE", "r-2")
    with pytest.raises(FailedPrecondition, match="LOBBY"):
        svc.claim("C-AFF-PAY", "PAYDAY_COUPON", "LOBBY", "r-3")
    with pytest.raises(NotFound):
        svc.claim("NOBODY", "PAYDAY_COUPON", "MOBILE", "r-4")
    with pytest.raises(InvalidArgument):
        svc.claim("C-AFF-PAY", "PAYDAY_COUPON", "MOBILE", "")
    assert svc.list_claims("C-AFF-PAY")[0] == [] and svc.list_claims("C-MASS")[0] == []


def test_quota_is_per_calendar_period_in_shanghai_and_rolls_over(svc, clock):
    svc.set_budget("PAYROLL", "2025", 1_000_000, "b-1")
    clock.now = shanghai(2025, 3, 31, 23, 59)
    svc.claim("C-AFF-PAY", "PAYDAY_COUPON", "MOBILE", "r-mar")
    with pytest.raises(FailedPrecondition, match="quota"):
        svc.claim("C-AFF-PAY", "PAYDAY_COUPON", "WECHAT", "r-mar-2")
    assert {e.benefit_id: e.remaining for e in svc.list_entitlements("C-AFF-PAY").entitlements}["PAYDAY_COUPON"] == 0
    clock.now = shanghai(2025, 4, 1, 0, 0)  # 16:00 UTC on March 31st: already April in Beijing
    assert {e.benefit_id: e.remaining for e in svc.list_entitlements("C-AFF-PAY").entitlements}["PAYDAY_COUPON"] == 1
    svc.claim("C-AFF-PAY", "PAYDAY_COUPON", "MOBILE", "r-apr")


def test_cool_down_between_claims(svc, clock):
    svc.set_budget("CAR_OWNER", "2025-03", 1_000_000, "b-1")
    first = svc.claim("C-WEALTH", "CAR_OWNER_DAY", "MOBILE", "r-1")
    clock.advance(days=6, hours=23)
    with pytest.raises(FailedPrecondition, match="cool-down"):
        svc.claim("C-WEALTH", "CAR_OWNER_DAY", "MOBILE", "r-2")
    ent = {e.benefit_id: e for e in svc.list_entitlements("C-WEALTH").entitlements}["CAR_OWNER_DAY"]
    assert ent.next_claim_at == first.claimed_at + timedelta(days=7)
    clock.advance(hours=1)
    svc.claim("C-WEALTH", "CAR_OWNER_DAY", "MOBILE", "r-3")


def test_points_stock_and_budget_are_taken_and_cancel_gives_them_back_once(svc):
    svc.upsert_benefit("TEST_GIFT", {
        "name": "test gift", "kind": "GIFT", "quota_per_period": 1, "quota_period": "YEAR", "points_cost": 300,
        "physical": True, "budget_group": "AFFLUENT", "unit_cost_fen": 2500,
        "eligibility_rule": "benefit.lobby_gift"}, "u-1")
    stock(svc, "TEST_GIFT", 3)
    svc.set_budget("AFFLUENT", "2025-03", 10_000, "b-1")
    svc.credit_points("C-AFF-OLD", 1000, "test", "p-1")

    claim = svc.claim("C-AFF-OLD", "TEST_GIFT", "LOBBY", "r-1")
    assert (claim.points_spent, claim.budget_spent_fen, claim.budget_group) == (300, 2500, "AFFLUENT")
    assert svc.points_balance("C-AFF-OLD") == 700
    assert svc.get_inventory("TEST_GIFT").available == 2
    assert svc.get_budget("AFFLUENT", "2025-03").remaining_fen == 7500
    with pytest.raises(FailedPrecondition, match="quota"):
        svc.claim("C-AFF-OLD", "TEST_GIFT", "MOBILE", "r-2")

    for _ in range(2):  # a retried cancel gives nothing back twice
        cancelled = svc.cancel(claim.claim_id, "changed mind")
        assert cancelled.status == "CANCELLED"
        assert svc.points_balance("C-AFF-OLD") == 1000
        assert svc.get_inventory("TEST_GIFT").available == 3
        assert svc.get_budget("AFFLUENT", "2025-03").remaining_fen == 10_000
    again = svc.claim("C-AFF-OLD", "TEST_GIFT", "LOBBY", "r-3")  # the quota came back too
    assert again.status == "CLAIMED"
    assert svc.reconcile() == []


def test_fulfilled_claim_cannot_be_cancelled_and_stock_leaves_the_store(svc):
    stock(svc, "POINTS_GIFT", 2)
    svc.credit_points("C-TAIL", 5000, "test", "p-1")
    claim = svc.claim("C-TAIL", "POINTS_GIFT", "MOBILE", "r-1")
    done = svc.fulfill(claim.claim_id)
    assert done.status == "FULFILLED" and svc.fulfill(claim.claim_id).status == "FULFILLED"
    inv = svc.get_inventory("POINTS_GIFT")
    assert (inv.on_hand, inv.reserved) == (1, 0)
    with pytest.raises(FailedPrecondition):
        svc.cancel(claim.claim_id, "too late")
    with pytest.raises(NotFound):
        svc.cancel("nope", "x")
    assert svc.reconcile() == []


def test_not_enough_points_out_of_stock_and_no_budget(svc):
    stock(svc, "POINTS_GIFT", 1)
    with pytest.raises(FailedPrecondition, match="points"):
        svc.claim("C-TAIL", "POINTS_GIFT", "MOBILE", "r-1")
    svc.credit_points("C-TAIL", 10_000, "test", "p-1")
    svc.claim("C-TAIL", "POINTS_GIFT", "MOBILE", "r-2")
    svc.credit_points("C-PB", 10_000, "test", "p-2")
    with pytest.raises(ResourceExhausted, match="stock"):
        svc.claim("C-PB", "POINTS_GIFT", "MOBILE", "r-3")
    with pytest.raises(ResourceExhausted, match="budget"):
        svc.claim("C-PB", "HEALTH_CHECK", "MOBILE", "r-4")  # no PRIVATE_BANKING budget set
    assert svc.points_balance("C-TAIL") == 5000
    assert svc.points_balance("C-PB") == 10_000  # the refused claim debited nothing


def test_budget_is_spent_to_the_fen_and_no_further(svc):
    svc.set_budget("PAYROLL", "2025-03", 2_499, "b-1")
    stock(svc, "SCAN_PAY_GIFT", 5)
    svc.claim("C-AFF-PAY", "PAYDAY_COUPON", "MOBILE", "r-1")  # 1,000 fen
    with pytest.raises(ResourceExhausted, match="budget"):
        svc.claim("C-AFF-PAY", "SCAN_PAY_GIFT", "MOBILE", "r-2")  # 1,500 fen, one fen short
    assert svc.get_inventory("SCAN_PAY_GIFT").available == 5  # the refused claim reserved nothing
    svc.set_budget("PAYROLL", "2025-03", 2_500, "b-2")
    svc.claim("C-AFF-PAY", "SCAN_PAY_GIFT", "MOBILE", "r-3")
    assert svc.get_budget("PAYROLL", "2025-03").remaining_fen == 0
    assert svc.reconcile() == []


# ---------------------------------------------------------------- admin

def test_inventory_adjustments_are_ledgered_and_never_below_zero(svc):
    stock(svc, "LOBBY_GIFT", 5)
    with pytest.raises(FailedPrecondition):
        svc.adjust_inventory("LOBBY_GIFT", -6, "damaged", "a-2")
    assert svc.get_inventory("LOBBY_GIFT").on_hand == 5
    assert svc.adjust_inventory("LOBBY_GIFT", -2, "damaged 破损出库", "a-3").on_hand == 3
    assert svc.adjust_inventory("LOBBY_GIFT", -2, "damaged 破损出库", "a-3").on_hand == 3  # retried
    with pytest.raises(FailedPrecondition):
        svc.adjust_inventory("PAYDAY_COUPON", 5, "coupons have no stock", "a-4")
    with pytest.raises(NotFound):
        svc.adjust_inventory("NO_SUCH", 5, "x", "a-5")
    with pytest.raises(InvalidArgument):
        svc.adjust_inventory("LOBBY_GIFT", 5, "", "a-6")
    assert svc.reconcile() == []


def test_budget_in_the_past_or_below_spent_is_refused(svc):
    with pytest.raises(InvalidArgument, match="past"):
        svc.set_budget("PAYROLL", "2025-02", 1000, "b-1")
    with pytest.raises(InvalidArgument):
        svc.set_budget("PAYROLL", "2025-13", 1000, "b-2")
    svc.set_budget("PAYROLL", "2025-03", 5000, "b-3")
    svc.claim("C-AFF-PAY", "PAYDAY_COUPON", "MOBILE", "r-1")
    with pytest.raises(FailedPrecondition):
        svc.set_budget("PAYROLL", "2025-03", 999, "b-4")
    assert svc.set_budget("PAYROLL", "2025-03", 1000, "b-5").remaining_fen == 0
    assert svc.reconcile() == []


def test_points_credit_and_debit_are_idempotent(svc):
    assert svc.credit_points("C-1", 100, "salary day", "p-1") == 100
    assert svc.credit_points("C-1", 100, "salary day", "p-1") == 100
    assert svc.debit_points("C-1", 40, "mall", "p-2") == 60
    with pytest.raises(FailedPrecondition):
        svc.debit_points("C-1", 61, "mall", "p-3")
    with pytest.raises(InvalidArgument):
        svc.credit_points("C-1", 0, "nothing", "p-4")
    assert svc.points_balance("C-1") == 60
    assert svc.reconcile() == []


def test_ledgers_stop_at_their_caps_instead_of_overflowing_bigint(svc, monkeypatch):
    """Sums of values within their edge bounds must not overflow a BIGINT: the balance and the
    stock have caps (services/common/limits.py), lowered here so a test reaches them in a few calls."""
    import services.benefits.service as service_module
    import services.benefits.store as store_module
    for module in (service_module, store_module):
        monkeypatch.setattr(module, "MAX_POINTS_BALANCE", 250)
        monkeypatch.setattr(module, "MAX_STOCK", 30)
    assert svc.credit_points("C-RICH", 100, "bulk", "cap-1") == 100
    assert svc.credit_points("C-RICH", 150, "bulk", "cap-2") == 250  # exactly the cap
    with pytest.raises(FailedPrecondition) as caught:
        svc.credit_points("C-RICH", 1, "bulk", "cap-3")
    assert caught.value.reason == "LIMIT_EXCEEDED" and caught.value.metadata["limit"] == "250"
    assert svc.points_balance("C-RICH") == 250
    stock(svc, "LOBBY_GIFT", 30)
    with pytest.raises(FailedPrecondition) as caught:
        svc.adjust_inventory("LOBBY_GIFT", 1, "one more", "stock-over")
    assert caught.value.reason == "LIMIT_EXCEEDED"
    assert svc.get_inventory("LOBBY_GIFT").on_hand == 30
    assert svc.reconcile() == []


def test_upsert_benefit_validates_and_overrides_the_ruleset_entry(svc):
    with pytest.raises(InvalidArgument) as err:
        svc.upsert_benefit("BAD", {"name": "", "kind": "NOPE", "quota_period": "DECADE"})
    assert {f for f, _ in err.value.violations} >= {"benefit.name", "benefit.kind", "benefit.quota_period"}
    with pytest.raises(InvalidArgument):
        svc.upsert_benefit("X_GIFT", {"name": "x", "kind": "GIFT", "eligibility_rule": "no.such.rule"})
    _, created = svc.upsert_benefit("TRANSFER_FEE_WAIVER", {"name": "fee waiver", "kind": "FEE_WAIVER",
                                                            "quota_per_period": 3, "quota_period": "MONTH"})
    assert created is False
    fee = {e.benefit_id: e for e in svc.list_entitlements("C-PB").entitlements}["TRANSFER_FEE_WAIVER"]
    assert fee.remaining == 3
    _, created = svc.upsert_benefit("OPEN_EVENT", {"name": "open", "kind": "EVENT", "quota_period": "DAY",
                                                   "eligibility_rule": "benefit.points_gift"})
    assert created is True
    assert {e.benefit_id: e.remaining for e in svc.list_entitlements("C-TAIL").entitlements}["OPEN_EVENT"] \
        == UNLIMITED


def test_reconcile_finds_a_balance_changed_behind_the_ledgers_back(svc, db_url):
    stock(svc, "LOBBY_GIFT", 5)
    svc.credit_points("C-1", 100, "x", "p-1")
    assert svc.reconcile() == []
    with svc._uow() as uow:
        uow.session.execute(text("UPDATE benefits_inventory SET on_hand = on_hand + 1"))
        uow.session.execute(text("UPDATE benefits_points SET balance = balance - 1"))
        uow.commit()
    found = {(m.kind, m.subject) for m in svc.reconcile()}
    assert found == {("INVENTORY", "benefit/LOBBY_GIFT"), ("POINTS", "customer/C-1")}
    assert svc.metrics.reconciliation_ok._value.get() == 0


def test_list_claims_pages_newest_first(svc, clock):
    svc.set_budget("MOBILE_BANKING", "2025", 1_000_000, "b-1")
    made = []
    for week in range(5):
        made.append(svc.claim("C-AFF-PAY", "WECHAT_COUPON", "MOBILE", f"r-{week}").claim_id)
        clock.advance(days=7)
    seen, token = [], ""
    while True:
        page, token = svc.list_claims("C-AFF-PAY", 2, token)
        seen += [c.claim_id for c in page]
        if not token:
            break
    assert seen == made[::-1]
    with pytest.raises(InvalidArgument):
        svc.list_claims("C-AFF-PAY", -1)
