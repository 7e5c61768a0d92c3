"""A scorecard that breaks its constraints is refused with the reason and the path."""
import copy
from pathlib import Path

import pytest
import yaml

from services.scoring.rules_kind import check_scorecard

RULESETS = Path(__file__).parents[3] / "services" / "scoring" / "rulesets"


def raw(role):
    return yaml.safe_load((RULESETS / f"{role}.yaml").read_text())


def problems(doc):
    return [(p.path, p.message) for p in check_scorecard(doc)]


@pytest.mark.parametrize("role", ["branch_head", "wealth_advisor", "wealth_manager", "lobby_manager",
                                  "loan_manager", "remote_manager"])
def test_shipped_cards_pass(role):
    assert problems(raw(role)) == []


def indicator(doc, indicator_id):
    return next(i for i in doc["parameters"]["indicators"] if i["id"] == indicator_id)


def test_weights_that_do_not_add_up():
    doc = raw("wealth_advisor")
    indicator(doc, "pb_revenue")["weight"] = 25
    found = problems(doc)
    assert ("parameters.parts[1]", "indicator weights of part 'business_efficiency' add up to 25%, not its 30%") in found


def test_part_weights_must_total_100():
    doc = raw("remote_manager")
    doc["parameters"]["parts"][1]["weight"] = 20
    indicator(doc, "daily_management")["weight"] = 10
    assert any(p == "parameters.parts" and "add up to 105%" in m for p, m in problems(doc))


def test_quantitative_share_below_its_floor():
    doc = raw("lobby_manager")      # 70% floor
    doc["parameters"]["parts"][2]["weight"] = 18
    indicator(doc, "precious_metals")["weight"] = -3 + 7
    doc["parameters"]["parts"][3]["weight"] = 40
    indicator(doc, "composite_evaluation")["weight"] = 25
    found = problems(doc)
    assert ("parameters.parts", "quantitative share 60% is below its floor 70%") in found
    assert ("parameters.parts", "qualitative share 40% is above its ceiling 30%") in found


def test_loan_manager_indicator_above_the_1_2_cap():
    doc = raw("loan_manager")
    indicator(doc, "loan_balance_increase")["hi"] = 1.5
    assert ("parameters.indicators[1].hi", "hi 1.5 is above the card's max_factor 1.2") in problems(doc)


def test_remote_manager_call_deduction_above_100_and_uncapped():
    doc = raw("remote_manager")
    indicator(doc, "calls_shortfall")["cap"] = 150
    assert ("parameters.indicators[8].cap", "cap 150 is above the card's max_deduction 100") in problems(doc)
    del indicator(doc, "calls_shortfall")["cap"]
    assert any(p == "parameters.indicators[8].cap" and "always capped" in m for p, m in problems(doc))


def test_remote_manager_indicator_above_150_percent():
    doc = raw("remote_manager")
    indicator(doc, "calls_made")["hi"] = 2
    assert ("parameters.indicators[4].hi", "hi 2 is above the card's max_factor 1.5") in problems(doc)


@pytest.mark.parametrize("change, path, words", [
    (lambda d: indicator(d, "complaints").update(lo=1, hi=0.8), "parameters.indicators[2].hi", "below 1"),
    (lambda d: indicator(d, "complaints").update(method="AVERAGE"), "parameters.indicators[2].method", "one of"),
    (lambda d: indicator(d, "debit_cards").pop("target"), "parameters.indicators[4].target", "required"),
    (lambda d: indicator(d, "debit_cards").update(weight="lots"), "parameters.indicators[4].weight", "not a plain"),
    (lambda d: indicator(d, "duty_violations").update(weight=5), "parameters.indicators[10].weight", "no weight"),
    (lambda d: d["parameters"]["parts"][3].update(floor_at_zero=False), "parameters.indicators[10].part",
     "floor_at_zero"),
    (lambda d: d["parameters"].update(role="REMOTE_MANAGER"), "name", "must be named"),
])
def test_each_refusal_names_its_path(change, path, words):
    doc = copy.deepcopy(raw("lobby_manager"))
    change(doc)
    assert any(p == path and words in m for p, m in problems(doc)), problems(doc)


def test_conversion_rates_must_be_positive():
    doc = raw("loan_manager")
    indicator(doc, "loan_count")["rates"]["other"] = 0
    assert ("parameters.indicators[0].rates.other", "must be above 0") in problems(doc)


def test_a_declared_range_upside_down_or_an_unknown_missing_policy_is_refused():
    doc = raw("remote_manager")
    indicator(doc, "product_penetration").update({"min": 2, "max": 1})
    indicator(doc, "calls_made")["required"] = "yes"
    doc["parameters"]["missing_values"] = "ignore"
    found = dict(problems(doc))
    assert "min 2 is above max 1" in found["parameters.indicators[3].min"]
    assert found["parameters.indicators[4].required"] == "true or false"
    assert found["parameters.missing_values"] == "one of warn, block"
