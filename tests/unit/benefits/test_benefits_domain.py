"""Pure rules of benefits: calendar periods, quota, cool-down, grants, catalog checks."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from services.benefits import domain
from services.benefits.domain import BenefitDefinition, Calendar, Grant, Profile, Usage
from services.common.errors import FailedPrecondition

CAL = Calendar.named("Asia/Shanghai")


def bj(*args) -> datetime:  # Beijing wall clock → UTC instant
    return (datetime(*args) - timedelta(hours=8)).replace(tzinfo=timezone.utc)


@pytest.mark.parametrize("period, instant, key", [
    ("DAY", bj(2025, 3, 31, 23, 59), "2025-03-31"),
    ("DAY", bj(2025, 4, 1, 0, 0), "2025-04-01"),
    ("WEEK", bj(2025, 1, 1, 12), "2025-W01"),
    ("WEEK", bj(2024, 12, 30, 0), "2025-W01"),   # ISO week-year
    ("MONTH", bj(2025, 4, 1, 0, 0), "2025-04"),
    ("QUARTER", bj(2025, 3, 31, 23, 59), "2025Q1"),
    ("QUARTER", bj(2025, 4, 1, 0, 0), "2025Q2"),
    ("YEAR", bj(2025, 1, 1, 0, 0), "2025"),
])
def test_period_keys_are_beijing_calendar_periods(period, instant, key):
    assert CAL.period_key(period, instant) == key


def test_utc_evening_is_already_the_next_day_in_beijing():
    assert CAL.period_key("MONTH", datetime(2025, 3, 31, 16, 0, tzinfo=timezone.utc)) == "2025-04"
    assert CAL.period_key("MONTH", datetime(2025, 3, 31, 15, 59, tzinfo=timezone.utc)) == "2025-03"


@pytest.mark.parametrize("period, end", [
    ("DAY", bj(2025, 3, 11)), ("WEEK", bj(2025, 3, 17)), ("MONTH", bj(2025, 4, 1)),
    ("QUARTER", bj(2025, 4, 1)), ("YEAR", bj(2026, 1, 1)),
])
def test_period_end_is_the_first_instant_of_the_next(period, end):
    assert CAL.period_end(period, bj(2025, 3, 10, 15)) == end


def test_budget_period_labels():
    assert CAL.budget_periods(bj(2025, 5, 2)) == ["2025-05", "2025Q2", "2025"]
    assert CAL.budget_period_end("2025Q4") == bj(2026, 1, 1)
    assert CAL.budget_period_end("2025-02") == bj(2025, 3, 1)
    for bad in ("2025-13", "25Q1", "2025Q5", ""):
        with pytest.raises(ValueError):
            CAL.budget_period_end(bad)


def coupon(**kw) -> BenefitDefinition:
    return BenefitDefinition(**{"benefit_id": "C", "name": "c", "kind": "COUPON", **kw})


def test_quota_then_cool_down():
    now = bj(2025, 3, 10, 12)
    d = coupon(quota_per_period=2, quota_period="MONTH", cooldown_seconds=3600)
    domain.check_usage(d, Usage(1, now - timedelta(hours=2)), now)
    with pytest.raises(FailedPrecondition, match="quota"):
        domain.check_usage(d, Usage(2, now - timedelta(days=2)), now)
    with pytest.raises(FailedPrecondition, match="cool-down"):
        domain.check_usage(d, Usage(1, now - timedelta(minutes=59)), now)
    assert domain.next_claim_at(d, Usage(1, now - timedelta(minutes=59)), now) == now + timedelta(minutes=1)
    assert domain.remaining(d, Usage(1)) == 1
    assert domain.remaining(coupon(quota_per_period=0), Usage(50)) == domain.UNLIMITED


def test_usage_counts_only_the_current_period():
    t = bj(2025, 3, 10)
    u = domain.usage_from_claims([("2025-02", t - timedelta(days=20)), ("2025-03", t)], "2025-03")
    assert u == Usage(1, t)


def test_usage_from_per_period_counts_matches_usage_from_claims():
    t = bj(2025, 3, 10)
    claims = [("2025-02", t - timedelta(days=20)), ("2025-03", t - timedelta(days=2)), ("2025-03", t)]
    counts = [("2025-02", 1, t - timedelta(days=20)), ("2025-03", 2, t)]
    assert domain.usage_from_counts(counts, "2025-03") == domain.usage_from_claims(claims, "2025-03") == Usage(2, t)
    assert domain.usage_from_counts(counts[:1], "2025-03") == Usage(0, t - timedelta(days=20))


def test_offer_checks_channel_window_and_active():
    d = coupon(channels=("MOBILE",), valid_from=date(2025, 3, 1), valid_until=date(2025, 3, 31))
    domain.check_offer(d, "MOBILE", date(2025, 3, 31))
    for channel, day in (("LOBBY", date(2025, 3, 5)), ("MOBILE", date(2025, 4, 1)), ("MOBILE", date(2025, 2, 28))):
        with pytest.raises(FailedPrecondition):
            domain.check_offer(d, channel, day)
    with pytest.raises(FailedPrecondition, match="not active"):
        domain.check_offer(coupon(active=False), "MOBILE", date(2025, 3, 5))


def test_parse_definition_reports_every_problem_with_its_path():
    d, problems = domain.parse_definition("lower", {"name": "", "kind": "X", "quota_period": "DECADE",
                                                    "unit_cost_fen": 5, "points_cost": -1,
                                                    "valid_from": "2025-05-01", "valid_until": "2025-04-01",
                                                    "channels": ["ok"]})
    assert d is None
    assert {p for p, _ in problems} == {"benefit.benefit_id", "benefit.name", "benefit.kind", "benefit.quota_period",
                                        "benefit.unit_cost_fen", "benefit.points_cost", "benefit.valid_until",
                                        "benefit.channels"}


def test_grants_name_the_first_rule_and_follow_eligibility_rule_links():
    catalog = {"A": coupon(benefit_id="A"), "B": coupon(benefit_id="B", eligibility_rule="r2")}
    fired = [("r1", {"benefits": ["A", "GONE"]}, "first"), ("r2", {"benefits": ["A"]}, "")]
    assert domain.grants(fired, catalog) == {"A": Grant("A", "r1", "first"), "B": Grant("B", "r2", "")}


def test_locked_entitlements_only_with_include_locked_and_a_next_tier():
    catalog = {"A": coupon(benefit_id="A"), "B": coupon(benefit_id="B")}
    profile = Profile("C1", "AFFLUENT", next_tier="WEALTH", next_tier_gap_fen=123)
    now = bj(2025, 3, 10)
    shown = domain.build_entitlements(profile, {"A": Grant("A", "r1")}, {"A": Grant("A", "r1"), "B": Grant("B", "r2")},
                                      catalog, {}, now, CAL, include_locked=True)
    assert [(e.benefit_id, e.locked, e.unlock_tier, e.unlock_gap_fen) for e in shown] == \
        [("A", False, "", 0), ("B", True, "WEALTH", 123)]
    assert [e.benefit_id for e in domain.build_entitlements(profile, {"A": Grant("A", "r1")}, {}, catalog, {}, now,
                                                            CAL)] == ["A"]
