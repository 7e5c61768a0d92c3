"""Pure tiering rules: validation, facts, home branch, grace, gap."""
import pytest

from services.common.errors import InvalidArgument
from services.tiering.domain import (DOWNGRADE, NEW, UNCHANGED, UPGRADE, CustomerState, Holding, Snapshot,
                                     TierScheme, apply_grace, change_bp, home_branch, next_tier, rule_facts,
                                     validate)

CARDS = ["CLASSIC", "GOLD", "PLATINUM", "BLACK"]
ORDER = ("MASS", "LONG_TAIL", "AFFLUENT", "WEALTH", "PRIVATE_BANKING")
SCHEME = TierScheme(ORDER, 3, {
    "LONG_TAIL": ((("annual_avg_aum_fen", 1_000_000),),),
    "AFFLUENT": ((("annual_avg_aum_fen", 5_000_000),),),
    "WEALTH": ((("annual_avg_aum_fen", 20_000_000),),),
    "PRIVATE_BANKING": ((("annual_avg_aum_fen", 600_000_000),),),
})


def violations(snapshot):
    with pytest.raises(InvalidArgument) as err:
        validate(snapshot, CARDS)
    return dict(err.value.violations)


def test_a_sane_snapshot_passes():
    validate(Snapshot("C1", as_of="2026-01-31", point_in_time_aum_fen=300, age=150, card_level="GOLD",
                      holdings=(Holding("OUT-001", 100), Holding("OUT-002", 200)),
                      last_customer_txn_date="2026-01-31", attributes={"cash_only": "true"}), CARDS)


@pytest.mark.parametrize("snapshot, field", [
    (Snapshot(""), "customer.customer_id"),
    (Snapshot("  "), "customer.customer_id"),
    (Snapshot("C", annual_avg_aum_fen=-1), "customer.annual_avg_aum_fen"),
    (Snapshot("C", monthly_avg_aum_fen=-1), "customer.monthly_avg_aum_fen"),
    (Snapshot("C", point_in_time_aum_fen=-1), "customer.point_in_time_aum_fen"),
    (Snapshot("C", previous_annual_avg_aum_fen=-5), "customer.previous_annual_avg_aum_fen"),
    (Snapshot("C", annual_card_spend_fen=-1), "customer.annual_card_spend_fen"),
    (Snapshot("C", holdings=(Holding("B", -1),)), "customer.holdings[0].aum_fen"),
    (Snapshot("C", holdings=(Holding("", 1),)), "customer.holdings[0].branch_id"),
    (Snapshot("C", holdings=(Holding("B", 1), Holding("B", 1))), "customer.holdings[1].branch_id"),
    (Snapshot("C", point_in_time_aum_fen=100, holdings=(Holding("A", 60), Holding("B", 41))), "customer.holdings"),
    (Snapshot("C", holdings=(Holding("A", 2**62), Holding("B", 2**62))), "customer.holdings"),
    (Snapshot("C", card_level="DIAMOND"), "customer.card_level"),
    (Snapshot("C", as_of="2026-02-30"), "customer.as_of"),
    (Snapshot("C", as_of="31/01/2026"), "customer.as_of"),
    (Snapshot("C", last_customer_txn_date="yesterday"), "customer.last_customer_txn_date"),
    (Snapshot("C", as_of="2026-01-01", last_customer_txn_date="2026-01-02"), "customer.last_customer_txn_date"),
    (Snapshot("C", age=151), "customer.age"),
    (Snapshot("C", age=-1), "customer.age"),
    (Snapshot("C", attributes={"bad key": "x"}), "customer.attributes[bad key]"),
])
def test_bad_input_names_the_field(snapshot, field):
    assert field in violations(snapshot)


def test_every_bad_field_is_named_at_once():
    bad = violations(Snapshot("", annual_avg_aum_fen=-1, age=200, card_level="X"))
    assert {"customer.customer_id", "customer.annual_avg_aum_fen", "customer.age", "customer.card_level"} <= set(bad)


def test_holdings_equal_to_point_in_time_are_sane():
    validate(Snapshot("C", point_in_time_aum_fen=100, holdings=(Holding("A", 60), Holding("B", 40))), CARDS)


def test_facts_drop_unknowns_and_derive_integers():
    facts = rule_facts(Snapshot("C", as_of="2026-03-01", annual_avg_aum_fen=700, previous_annual_avg_aum_fen=1000,
                                monthly_avg_aum_fen=350, last_customer_txn_date="2025-03-01",
                                attributes={"district": "east"}), "OUT-1")
    assert facts["days_since_last_txn"] == 365
    assert facts["annual_avg_change_bp"] == -3000
    assert facts["monthly_vs_annual_change_bp"] == -5000
    assert facts["age"] is None and facts["card_level"] is None and facts["payroll_employer_id"] is None
    assert facts["attributes"] == {"district": "east"} and facts["home_branch_id"] == "OUT-1"


def test_change_bp_rounds_up_so_thresholds_are_exact():
    assert change_bp(7000, 10000) == -3000
    assert change_bp(7001, 10000) == -2999       # -29.99%: not "down 30%"
    assert change_bp(6999, 10000) == -3001
    assert change_bp(2, 3) == -3333              # -33.33..% rounds up
    assert change_bp(5, 0) is None and change_bp(5, None) is None


def test_home_branch_is_the_largest_holding():
    assert home_branch((Holding("B", 5), Holding("A", 9)), "") == "A"


def test_home_branch_tie_keeps_the_current_one_else_lowest_id():
    tied = (Holding("OUT-3", 5), Holding("OUT-2", 5), Holding("OUT-1", 1))
    assert home_branch(tied, "OUT-3") == "OUT-3"
    assert home_branch(tied, "OUT-1") == "OUT-2"
    assert home_branch(tied, "") == "OUT-2"
    assert home_branch((), "OUT-9") == "OUT-9"


def state(tier, below=0, last=""):
    return CustomerState("C", tier, below_count=below, last_below_as_of=last)


def test_first_evaluation_is_new():
    assert apply_grace(None, "WEALTH", SCHEME, "2026-01-31").change == NEW


def test_upgrade_is_immediate():
    g = apply_grace(state("AFFLUENT", below=2, last="2026-01-31"), "WEALTH", SCHEME, "2026-02-28")
    assert (g.tier, g.change, g.below_count) == ("WEALTH", UPGRADE, 0)


def test_downgrade_after_n_consecutive_evaluations_below():
    s, seen = state("WEALTH"), []
    for month in ("01", "02", "03"):
        g = apply_grace(s, "AFFLUENT", SCHEME, f"2026-{month}-28")
        seen.append((g.tier, g.change, g.downgrade_pending))
        s = CustomerState("C", g.tier, below_count=g.below_count, last_below_as_of=g.last_below_as_of)
    assert seen == [("WEALTH", UNCHANGED, 2), ("WEALTH", UNCHANGED, 1), ("AFFLUENT", DOWNGRADE, 0)]


def test_an_evaluation_back_in_the_band_resets_the_grace():
    g = apply_grace(state("WEALTH", below=2, last="2026-02-28"), "WEALTH", SCHEME, "2026-03-31")
    assert (g.change, g.below_count, g.downgrade_pending) == (UNCHANGED, 0, 0)
    g = apply_grace(state("WEALTH", below=g.below_count), "AFFLUENT", SCHEME, "2026-04-30")
    assert (g.tier, g.downgrade_pending) == ("WEALTH", 2)


def test_the_same_day_twice_counts_once():
    g = apply_grace(state("WEALTH", below=1, last="2026-01-31"), "AFFLUENT", SCHEME, "2026-01-31")
    assert (g.tier, g.below_count, g.downgrade_pending) == ("WEALTH", 1, 2)


@pytest.mark.parametrize("grace", [0, 1])
def test_grace_zero_or_one_downgrades_at_once(grace):
    scheme = TierScheme(ORDER, grace, SCHEME.entry)
    g = apply_grace(state("WEALTH"), "MASS", scheme, "2026-01-31")
    assert (g.tier, g.change) == ("MASS", DOWNGRADE)


def test_a_tier_the_scheme_no_longer_knows_is_replaced_at_once():
    g = apply_grace(state("KEY"), "MASS", SCHEME, "2026-01-31")
    assert g.tier == "MASS" and g.change == UPGRADE


def test_next_tier_and_the_fen_missing():
    assert next_tier(SCHEME, "AFFLUENT", {"annual_avg_aum_fen": 19_999_999}) == ("WEALTH", 1)
    assert next_tier(SCHEME, "MASS", {"annual_avg_aum_fen": 0}) == ("LONG_TAIL", 1_000_000)
    assert next_tier(SCHEME, "PRIVATE_BANKING", {"annual_avg_aum_fen": 10**12}) == ("", 0)


def test_next_tier_during_grace_counts_from_the_kept_tier():
    # kept WEALTH while the figures say AFFLUENT: the next tier is still PRIVATE_BANKING
    assert next_tier(SCHEME, "WEALTH", {"annual_avg_aum_fen": 10_000_000}) == ("PRIVATE_BANKING", 590_000_000)


def test_next_tier_takes_the_cheapest_alternative():
    scheme = TierScheme(("MASS", "POTENTIAL"), 0, {
        "POTENTIAL": ((("annual_avg_aum_fen", 2_000_000),), (("point_in_time_aum_fen", 5_000_000),))})
    facts = {"annual_avg_aum_fen": 1_000_000, "point_in_time_aum_fen": 4_900_000}
    assert next_tier(scheme, "MASS", facts) == ("POTENTIAL", 100_000)
