"""The shipped rulesets, evaluated by the real durable-rules engine."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.rules.validation import validate_text
from services.tiering.domain import Snapshot, next_tier, rule_facts
from services.tiering.scheme import tier_scheme

from .conftest import KIND_REGISTRY, RULESETS, load_active

ALTERNATIVES = sorted((RULESETS / "alternatives").glob("*.yaml"))
YUAN = 100


def reference_tier(document, amount: int) -> str:
    """The plain answer, straight from the published band table."""
    table = document.band_table("tier")
    hits = [b.value for b in table.bands
            if (b.lower is None or amount >= b.lower) and (b.upper is None or amount < b.upper)]
    assert len(hits) == 1
    return hits[0]


@pytest.mark.parametrize("path", [RULESETS / "tiers.yaml", RULESETS / "groups.yaml", *ALTERNATIVES],
                         ids=lambda p: p.name)
def test_every_shipped_ruleset_validates_and_its_examples_pass(path):
    from services.rules.engine import default_engine
    result = validate_text(path.read_text(encoding="utf-8"), KIND_REGISTRY, default_engine())
    assert result.ok, result.problems


@pytest.mark.parametrize("amount, tier", [
    (600_000_000, "PRIVATE_BANKING"), (599_999_999, "WEALTH"),
    (20_000_000, "WEALTH"), (19_999_999, "AFFLUENT"),
    (5_000_000, "AFFLUENT"), (4_999_999, "LONG_TAIL"),
    (1_000_000, "LONG_TAIL"), (999_999, "MASS"), (0, "MASS"),
])
def test_seed_003_boundaries_to_the_fen(tiers, amount, tier):
    evaluation = tiers.evaluate({"annual_avg_aum_fen": amount})
    assert evaluation.outcome["tier"] == tier
    assert evaluation.rule_ids == [f"tier.{tier}"]


amounts = st.integers(min_value=0, max_value=10**13)


@settings(max_examples=300, deadline=None)
@given(st.lists(amounts, min_size=1, max_size=60))
def test_one_tier_each_equal_to_the_plain_reference(tiers, batch):
    evaluations = tiers.evaluate_many([{"annual_avg_aum_fen": a} for a in batch])
    for amount, evaluation in zip(batch, evaluations):
        tier_rules = [r for r in evaluation.rule_ids if r.startswith("tier.")]
        assert len(tier_rules) == 1
        assert evaluation.outcome["tier"] == reference_tier(tiers.document, amount)


@settings(max_examples=200, deadline=None)
@given(amounts, amounts)
def test_the_tier_never_falls_as_aum_rises(tiers, a, b):
    low, high = sorted((a, b))
    order = tier_scheme(tiers.document).order
    got = [e.outcome["tier"] for e in tiers.evaluate_many([{"annual_avg_aum_fen": low},
                                                           {"annual_avg_aum_fen": high}])]
    assert order.index(got[0]) <= order.index(got[1])


@settings(max_examples=200, deadline=None)
@given(amounts)
def test_the_gap_is_exactly_what_lifts_the_customer(tiers, amount):
    scheme = tier_scheme(tiers.document)
    tier = tiers.evaluate({"annual_avg_aum_fen": amount}).outcome["tier"]
    target, gap = next_tier(scheme, tier, {"annual_avg_aum_fen": amount})
    if not target:
        assert tier == scheme.order[-1]
        return
    assert gap > 0
    assert tiers.evaluate({"annual_avg_aum_fen": amount + gap}).outcome["tier"] == target
    assert tiers.evaluate({"annual_avg_aum_fen": amount + gap - 1}).outcome["tier"] == tier


def test_groups_and_flags_from_a_real_snapshot(groups):
    snapshot = Snapshot("C1", as_of="2026-06-30", annual_avg_aum_fen=500_000_000, monthly_avg_aum_fen=200_000_000,
                        previous_annual_avg_aum_fen=800_000_000, age=66, card_level="BLACK",
                        payroll_employer_id="EMP-7", has_school_age_child=True, car_owner=True,
                        last_customer_txn_date="2025-06-30", other_bank_vip=True)
    outcome = groups.evaluate(rule_facts(snapshot, "OUT-001")).outcome
    assert set(outcome["segments"]) == {"PAYROLL", "CREDIT_CARD", "HIGH_SPEND", "SILVER_HAIR", "EDUCATION",
                                        "CAR_OWNER", "DORMANT"}
    # 5M >= 80% of 6M; annual 5M vs previous 8M is -37.5%; monthly 2M vs annual 5M is -60%
    assert set(outcome["flags"]) == {"PB_PROSPECT", "OTHER_BANK_VIP", "CHURN_RISK"}


def test_a_custom_attribute_reaches_the_rules(groups):
    base = Snapshot("C1", annual_avg_aum_fen=10 * YUAN)
    plain = groups.evaluate(rule_facts(base, "")).outcome["segments"]
    tagged = groups.evaluate(rule_facts(Snapshot("C1", annual_avg_aum_fen=10 * YUAN,
                                                 attributes={"cash_only": "true"}), "")).outcome["segments"]
    assert "LOW_VALUE" not in plain and "LOW_VALUE" in tagged


# ---------------------------------------------------------------- alternative schemes

def test_seed_001_scheme_loads_as_rules_alone():
    seed001 = load_active(RULESETS / "alternatives" / "seed001_sub_branch.yaml")
    scheme = tier_scheme(seed001.document)
    assert scheme.order == ("MASS", "POTENTIAL", "GENERAL", "KEY")
    cases = [({"annual_avg_aum_fen": 20_000_000, "point_in_time_aum_fen": 0}, "KEY"),
             ({"annual_avg_aum_fen": 5_000_000, "point_in_time_aum_fen": 0}, "GENERAL"),
             ({"annual_avg_aum_fen": 2_000_000, "point_in_time_aum_fen": 0}, "POTENTIAL"),
             ({"annual_avg_aum_fen": 0, "point_in_time_aum_fen": 5_000_000}, "POTENTIAL"),
             ({"annual_avg_aum_fen": 1_999_999, "point_in_time_aum_fen": 4_999_999}, "MASS")]
    evaluations = seed001.evaluate_many([facts for facts, _ in cases])
    for (facts, tier), evaluation in zip(cases, evaluations):
        assert evaluation.outcome["tier"] == tier, facts
        assert len(evaluation.fired) == 1
    # the gap to POTENTIAL is the cheaper of its two ways in
    assert next_tier(scheme, "MASS", {"annual_avg_aum_fen": 1_500_000, "point_in_time_aum_fen": 4_900_000}) \
        == ("POTENTIAL", 100_000)
    assert next_tier(scheme, "POTENTIAL", {"annual_avg_aum_fen": 2_000_000}) == ("GENERAL", 3_000_000)


def test_seed_002_scheme_tiers_by_monthly_average():
    seed002 = load_active(RULESETS / "alternatives" / "seed002_monthly.yaml")
    scheme = tier_scheme(seed002.document)
    assert scheme.order == ("MASS", "GOLD_SUNFLOWER", "DIAMOND_SUNFLOWER", "PRIVATE_BANKING")
    cases = {49_999_999: "MASS", 50_000_000: "GOLD_SUNFLOWER", 499_999_999: "GOLD_SUNFLOWER",
             500_000_000: "DIAMOND_SUNFLOWER", 999_999_999: "DIAMOND_SUNFLOWER", 1_000_000_000: "PRIVATE_BANKING"}
    evaluations = seed002.evaluate_many([{"monthly_avg_aum_fen": m, "annual_avg_aum_fen": 10**12} for m in cases])
    assert [e.outcome["tier"] for e in evaluations] == list(cases.values())
    assert next_tier(scheme, "GOLD_SUNFLOWER", {"monthly_avg_aum_fen": 60_000_000}) == ("DIAMOND_SUNFLOWER",
                                                                                         440_000_000)


def test_a_tier_scheme_without_an_order_is_refused():
    text = (RULESETS / "alternatives" / "seed001_sub_branch.yaml").read_text().replace(
        "  tier_order: [MASS, POTENTIAL, GENERAL, KEY]           # lowest first\n", "")
    from services.rules.engine import default_engine
    result = validate_text(text, KIND_REGISTRY, default_engine())
    assert [p.path for p in result.problems] == ["parameters.tier_order"]


def test_projecting_facts_to_the_named_fields_changes_no_answer(tiers, groups):
    from services.tiering.demo import synthetic_customers
    from services.tiering.domain import home_branch, project
    facts = [rule_facts(s, home_branch(s.holdings, "")) for s in synthetic_customers(400, seed=21)]
    for active in (tiers, groups):
        full = active.evaluate_many(facts)
        projected = active.evaluate_many([project(f, active.loaded.compiled.fields) for f in facts])
        assert [e.outcome for e in full] == [e.outcome for e in projected]
        assert [e.rule_ids for e in full] == [e.rule_ids for e in projected]
