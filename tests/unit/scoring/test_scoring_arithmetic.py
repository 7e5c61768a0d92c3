"""SCORING.md's arithmetic, to the cent, on the published scorecards."""
from decimal import Decimal as D
from pathlib import Path

import yaml

from services.scoring.domain import (Person, parse_scorecard, score_people, score_person,
                                     stats_of)

RULESETS = Path(__file__).parents[3] / "services" / "scoring" / "rulesets"


def card(role: str, **overrides):
    raw = yaml.safe_load((RULESETS / f"{role}.yaml").read_text())
    raw["parameters"].update(overrides)
    return parse_scorecard(raw["parameters"], raw["name"], 1)


def person(staff, branch="B1", book=None, **values):
    return Person(staff, branch, {k.replace("__", "."): D(str(v)) for k, v in values.items()}, book)


def by_staff(scores):
    return {s.staff_id: s for s in scores}


def ind(score, indicator_id):
    return next(i for i in score.indicators if i.indicator_id == indicator_id)


def shown(value):
    return str(value.quantize(D("0.01")))


WORKED = {"parts": [{"id": "q", "kind": "quantitative", "weight": 100}],
          "indicators": [{"id": "new_wealth_customers", "part": "q", "method": "STDDEV", "weight": 20},
                         {"id": "other", "part": "q", "method": "RATING", "weight": 80}],
          "role": "WEALTH_MANAGER", "total": 100}


def test_worked_example_to_the_cent():
    c = parse_scorecard(WORKED)
    people = [person(f"W{x}", new_wealth_customers=x) for x in (10, 20, 30, 40)]
    scores = by_staff(score_people(c, people))
    top = ind(scores["W40"], "new_wealth_customers")
    assert top.peer_mean == D(25) and top.peer_count == 4
    assert str(top.peer_stddev)[:10] == "11.1803398"          # √125
    assert shown(top.score) == "26.71"
    assert shown(ind(scores["W10"], "new_wealth_customers").score) == "13.29"
    assert scores["W40"].total == D("26.71") and scores["W40"].rank == 1 and scores["W10"].rank == 4
    at_mean = score_person(c, person("X", new_wealth_customers=25),
                           {("B1", "new_wealth_customers"): stats_of([D(10), D(20), D(30), D(40)])})
    assert shown(ind(at_mean, "new_wealth_customers").score) == "20.00"


def test_sigma_zero_and_lonely_peer_score_full_marks_with_the_reason():
    c = parse_scorecard(WORKED)
    scores = by_staff(score_people(c, [person("A", new_wealth_customers=5), person("B", new_wealth_customers=5),
                                       person("C", "B2", new_wealth_customers=1)]))
    a, lonely = ind(scores["A"], "new_wealth_customers"), ind(scores["C"], "new_wealth_customers")
    assert a.score == 20 and "sigma = 0" in a.note and a.peer_stddev == 0
    assert lonely.score == 20 and "fewer than 2 peers" in lonely.note and lonely.peer_count == 1


def test_stddev_factor_is_clamped_to_its_bounds():
    steep = dict(WORKED, indicators=[dict(WORKED["indicators"][0], k=1), WORKED["indicators"][1]])
    c = parse_scorecard(steep)
    # nine 0s and one 100: μ = 10, σ = 30; z = 3 → 1 + 3 = 4 → capped 1.5; z = -1/3 → 2/3
    people = [person(f"Z{i}", new_wealth_customers=0) for i in range(9)] + [person("TOP", new_wealth_customers=100)]
    scores = by_staff(score_people(c, people))
    assert ind(scores["TOP"], "new_wealth_customers").score == D(30)
    assert shown(ind(scores["Z0"], "new_wealth_customers").score) == "13.33"
    # nine 100s and one 0: z = -3 → 1 - 3 < 0 → clamped to lo = 0
    people = [person(f"H{i}", new_wealth_customers=100) for i in range(9)] + [person("LOW", new_wealth_customers=0)]
    assert ind(by_staff(score_people(c, people))["LOW"], "new_wealth_customers").score == 0


def test_remote_manager_calls_worked_example():
    c = card("remote_manager")
    scores = by_staff(score_people(c, [person("R1", calls_made=1800), person("R2", calls_made=500)]))
    assert ind(scores["R1"], "calls_made").score == D(120) and ind(scores["R1"], "calls_shortfall").score == 0
    assert shown(ind(scores["R2"], "calls_made").score) == "40.00"
    shortfall = ind(scores["R2"], "calls_shortfall")
    assert shown(shortfall.score) == "-100.00" and "capped at 100.00" not in shortfall.note  # exactly 100
    assert scores["R1"].total == D("120.00")
    assert scores["R2"].total == D("0.00")            # 40 - 100 → not below 0


def test_remote_manager_hand_computed_1000_point_card():
    c = card("remote_manager")
    r1 = person("R1", customer_development=300, aum_increase=500, key_product_sales=100, product_penetration="0.5",
                calls_made=1800, sms_sent=2500, training_tests=90, daily_management=40)
    r2 = person("R2", customer_development=200, calls_made=500)
    r3 = person("R3", calls_made=300)
    scores = by_staff(score_people(c, [r1, r2, r3]))
    # 150·1.5 + 100·0.5 + 250·1 + 250·1.25 + 80·1.5 + 20·0.5 + 90 + 40
    assert scores["R1"].total == D("1097.50")
    assert ind(scores["R1"], "customer_development").score == D("225")   # 150% of its base, not 150·(300/200)
    assert scores["R2"].total == D("90.00")           # 150 + 40 - 100
    # 700 calls short · 0.2 = 140 → capped at 100; 80·0.3 = 24 → 24 - 100 → total 0
    assert ind(scores["R3"], "calls_shortfall").score == D(-100) and "capped at 100.00" in ind(
        scores["R3"], "calls_shortfall").note
    assert scores["R3"].total == 0
    assert [scores[s].rank for s in ("R1", "R2", "R3")] == [1, 2, 3]


def test_branch_head_hand_computed_with_risk_deductions_stopping_at_zero():
    c = card("branch_head")
    h1 = person("H1", "SUB-1", pb_contribution=30, intermediate_income=5, monthly_avg_customers=1000,
                pb_product_balance=200, internal_control=4, aml=2, operations=3, management_bonus=80)
    h2 = person("H2", "SUB-2", pb_contribution=10, intermediate_income=5, monthly_avg_customers=600,
                pb_product_balance=100, management_bonus=20)
    scores = by_staff(score_people(c, [h1, h2]))       # peer scope "all": two sub-branches compared
    s1 = scores["H1"]
    assert ind(s1, "pb_contribution").score == 25      # μ 20, σ 10, z 1 → 1.25 · 20
    assert ind(s1, "intermediate_income").score == 20 and "sigma = 0" in ind(s1, "intermediate_income").note
    assert ind(s1, "monthly_avg_customers").score == D("31.25")
    # risk 10: internal control -8, AML -4 takes only the 2 left, operations takes nothing
    assert ind(s1, "internal_control").score == -8
    assert ind(s1, "aml").score == -2 and "stops at 0" in ind(s1, "aml").note
    assert ind(s1, "operations").score == 0
    assert ind(s1, "management_bonus").score == 5      # 8 capped at 5
    assert s1.total == D("112.50")                     # 25 + 20 + 0 + 31.25 + 31.25 + 5
    assert scores["H2"].total == D("84.50")            # 15 + 20 + 10 + 18.75 + 18.75 + 2
    assert (s1.rank, scores["H2"].rank, s1.peer_group_size) == (1, 2, 2)


def test_wealth_advisor_hand_computed_per_branch_peer_groups():
    c = card("wealth_advisor")
    a1 = person("A1", new_pb_customers=12, pb_aum_growth=500, pb_revenue=80, allocation_rate="0.5",
                value_added_service=7, team_building=5, compliance=6)
    a2 = person("A2", new_pb_customers=8, pb_aum_growth=-100, pb_revenue=40, allocation_rate="0.3",
                value_added_service=6, team_building=6, compliance=6)
    a3 = person("A3", "B2", new_pb_customers=1, pb_aum_growth=1, pb_revenue=1, allocation_rate="0.1",
                value_added_service=8, team_building=6, compliance=6)
    scores = by_staff(score_people(c, [a1, a2, a3]))
    assert scores["A1"].total == D("118.00")           # 18.75 + 18.75 + 37.5 + 25 + 18
    assert scores["A2"].total == D("78.00")            # 11.25 + 11.25 + 22.5 + 15 + 18
    assert scores["A3"].total == D("100.00")           # alone in B2: full marks, with the reason
    assert scores["A3"].rank == 1 and scores["A3"].peer_group_size == 1
    assert ind(scores["A2"], "pb_aum_growth").peer_mean == 200


def test_wealth_manager_points_and_book_size_items():
    c = card("wealth_manager")
    w1 = person("W1", book=400, deposit_points__demand_deposit=200, deposit_points__time_deposit=250,
                deposit_points__large_cd=100, product_points__wealth_management=300, product_points__mutual_fund=100,
                product_points__insurance=50, product_points__precious_metals=100, optional_points__credit_card=100,
                optional_points__mobile_banking=150, optional_points__payroll_account=10, risk=4,
                sales_compliance="3.5", training=3, service=2, teamwork=3, duty=3, penetration=200, maintenance=300)
    w2 = person("W2", book=500, deposit_points__demand_deposit=1000, penetration=100, maintenance=500)
    w3 = person("W3", book=None, maintenance=10)
    scores = by_staff(score_people(c, [w1, w2, w3]))
    s1 = scores["W1"]
    assert ind(s1, "deposit_points").raw_value == 460 and ind(s1, "deposit_points").score == D("27.6")
    assert ind(s1, "product_points").score == 30 and ind(s1, "optional_points").score == 18
    assert ind(s1, "penetration").raw_value == D("0.5") and ind(s1, "penetration").score == 4
    assert ind(s1, "maintenance").score == -3 and "300 / 400" in ind(s1, "maintenance").note
    assert s1.total == D("95.10")                      # 27.6 + 30 + 18 + 18.5 + 4 - 3
    assert scores["W2"].total == D("36.00")            # 1000 / 500 = 2 → capped 1.2 · 30
    assert ind(scores["W3"], "maintenance").score == -5 and "locked book" in ind(scores["W3"], "maintenance").note


def test_lobby_manager_lower_is_better_and_qualitative_deductions_stop_at_zero():
    c = card("lobby_manager")
    l1 = person("L1", outlet_contribution=300, waiting_ratio="0.05", complaints=1, smart_migration_rate="0.3",
                debit_cards=200, credit_cards=50, mobile_banking=600, precious_metals=0, composite_evaluation=12,
                duty_violations=7)
    l2 = person("L2", outlet_contribution=100, waiting_ratio="0.2", complaints=3, smart_migration_rate="0.9",
                debit_cards=100, credit_cards=100, mobile_banking=300, precious_metals=50, composite_evaluation=10,
                duty_violations=0)
    l3 = person("L3", "B2", waiting_ratio=0)
    scores = by_staff(score_people(c, [l1, l2, l3]))
    s1, s2 = scores["L1"], scores["L2"]
    assert ind(s1, "waiting_ratio").score == D("8.4") and ind(s2, "waiting_ratio").score == D("4.2")
    assert ind(s1, "complaints").score == D("8.75") and ind(s2, "complaints").score == D("5.25")  # fewer is better
    assert ind(scores["L3"], "waiting_ratio").score == D("8.4")   # no one waited: the upper bound
    # qualitative: 15 + 12 = 27; 7 violations · 5 = 35 → cap 30 → stops at 0, takes 27
    dv = ind(s1, "duty_violations")
    assert dv.score == -27 and "stops at 0" in dv.note and "capped at 30.00" in dv.note
    assert s1.total == D("63.70")
    assert s2.total == D("80.30")


def test_loan_manager_conversion_and_the_1_2_cap():
    c = card("loan_manager")
    g1 = person("G1", loan_count__first_hand_mortgage=10, loan_count__second_hand_mortgage=6,
                loan_count__provident_fund=9, loan_count__other=2, loan_balance_increase=4500, npl_ratio="0.02",
                compliance=9, service=8)
    g2 = person("G2", loan_count__first_hand_mortgage=30, loan_count__provident_fund=3, loan_balance_increase=-100,
                npl_ratio=0, compliance=10, service=10)
    g3 = person("G3", loan_count__first_hand_mortgage=40)
    scores = by_staff(score_people(c, [g1, g2, g3]))
    assert ind(scores["G1"], "loan_count").raw_value == 26   # 10 + 6·1.5 + 9/3 + 2·2, exactly
    assert shown(ind(scores["G1"], "loan_count").score) == "34.67"
    assert ind(scores["G1"], "loan_balance_increase").score == 30      # 1.5 → capped at 1.2 · 25
    assert scores["G1"].total == D("89.17")            # 34.666.. + 30 + 7.5 + 17
    assert ind(scores["G2"], "loan_count").raw_value == 31             # three provident-fund loans count 1
    assert scores["G2"].total == D("79.33")            # 41.333.. + 0 + 18 + 20
    assert ind(scores["G3"], "loan_count").score == 48                 # 40/30 → 1.2 · 40


def test_total_is_rounded_once_from_exact_parts():
    c = parse_scorecard(dict(WORKED, indicators=[
        {"id": "a", "part": "q", "method": "RATIO", "weight": 50, "target": 3},
        {"id": "b", "part": "q", "method": "RATIO", "weight": 50, "target": 3}]))
    s = score_person(c, person("X", a=1, b=1), {})
    # each 16.666.. shows as 16.67; the total is 33.33, not 33.34
    assert [shown(i.score) for i in s.indicators] == ["16.67", "16.67"] and s.total == D("33.33")


def test_missing_value_scores_zero_and_is_left_out_of_peer_statistics():
    c = parse_scorecard(WORKED)
    scores = by_staff(score_people(c, [person("A", new_wealth_customers=10), person("B", new_wealth_customers=30),
                                       person("C", other=5)]))
    missing = ind(scores["C"], "new_wealth_customers")
    assert missing.score == 0 and missing.missing and missing.note == "no value submitted: required, scored 0"
    assert scores["C"].missing == ["new_wealth_customers"] and scores["A"].missing == ["other"]
    assert ind(scores["A"], "new_wealth_customers").peer_count == 2


def test_ties_share_a_rank():
    c = parse_scorecard(WORKED)
    scores = by_staff(score_people(c, [person("A", other=5), person("B", other=5), person("C", other=1)]))
    assert [scores[s].rank for s in "ABC"] == [1, 1, 3]
