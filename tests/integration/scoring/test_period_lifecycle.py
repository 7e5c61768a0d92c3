"""Periods, submissions, calculation, finalization and revisions against a real database."""

import pytest

from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.scoring.service import ValueInput

from .conftest import metric

RM = "REMOTE_MANAGER"


def indicator(score, indicator_id):
    return next(i for i in score.indicators if i.indicator_id == indicator_id)


def remote_period(scoring, period):
    scoring.submit(period, [metric("R1", RM, "calls_made", 1800), metric("R2", RM, "calls_made", 500),
                            metric("R2", RM, "customer_development", 200)], ratings=False, actor="ops")
    scoring.submit(period, [metric("R1", RM, "training_tests", 90)], ratings=True, actor="mgr")
    return scoring.calculate(period)


def test_calculate_get_and_finalize(scoring, open_period):
    assert remote_period(scoring, open_period) == (2, "CALCULATED")
    r1 = scoring.get_score("R1", open_period)
    assert (r1.total, r1.status, r1.revision, r1.rank, r1.peer_group_size) == ("210.00", "CALCULATED", 1, 1, 2)
    assert (r1.scorecard_name, r1.scorecard_version) == ("scoring.remote_manager", 1)
    calls = indicator(r1, "calls_made")
    assert (calls.method, calls.raw_value, calls.score, calls.full_marks) == ("RATIO", "1800", "120.00", "80")
    r2 = scoring.get_score("R2", open_period)
    assert indicator(r2, "calls_shortfall").score == "-100.00" and r2.total == "90.00"
    assert scoring.finalize(open_period, actor="hr") == (2, "FINALIZED")
    assert scoring.get_score("R1", open_period).status == "FINALIZED"
    assert scoring.get_period(open_period).finalized_at is not None


def test_resubmitting_replaces_the_value_until_finalized(scoring, open_period):
    remote_period(scoring, open_period)
    scoring.submit(open_period, [metric("R1", RM, "calls_made", 1000)], ratings=False, actor="ops")
    with pytest.raises(FailedPrecondition, match="calculate again"):
        scoring.finalize(open_period, actor="hr")          # the results no longer match the values
    scoring.calculate(open_period)
    assert scoring.get_score("R1", open_period).total == "170.00"     # 80 + 90
    scoring.finalize(open_period, actor="hr")
    before = scoring.get_score("R1", open_period)
    with pytest.raises(FailedPrecondition, match="finalized"):
        scoring.submit(open_period, [metric("R1", RM, "calls_made", 1500)], ratings=False, actor="ops")
    with pytest.raises(FailedPrecondition):
        scoring.calculate(open_period)
    assert scoring.get_score("R1", open_period) == before
    assert scoring._read(lambda s: s.values_of(open_period, "R1"))["calls_made"] == "1000"


def test_revision_keeps_the_old_result(scoring, open_period):
    remote_period(scoring, open_period)
    with pytest.raises(FailedPrecondition, match="not finalized"):
        scoring.revise("R2", open_period, "late data", [metric("R2", RM, "calls_made", 900)], actor="hr-lead")
    scoring.finalize(open_period, actor="hr")
    revised = scoring.revise("R2", open_period, "call log was incomplete",
                             [ValueInput("R2", "", "", "calls_made", "900")], actor="hr-lead")
    # 150 + 72 - 0.2·100 = 202
    assert (revised.revision, revised.total, revised.revision_reason, revised.revised_by) == (
        2, "202.00", "call log was incomplete", "hr-lead")
    assert revised.rank == 2 and revised.status == "FINALIZED"       # R1 has 210
    assert scoring.get_score("R2", open_period).revision == 2
    original = scoring.get_score("R2", open_period, revision=1)
    assert original.total == "90.00" and original.revision_reason == ""
    again = scoring.revise("R2", open_period, "rating entered late", [ValueInput("R2", "", "", "training_tests", "50")],
                           actor="hr-lead")
    assert again.revision == 3 and again.total == "252.00"          # keeps the call correction
    assert [s.revision for s in scoring.list_scores(open_period, finalized_only=True).scores] == [1, 3]
    assert scoring._read(lambda s: s.values_of(open_period, "R2"))["calls_made"] == "500"   # inputs stay frozen


def test_revision_reuses_the_peer_statistics_of_the_period(scoring, open_period):
    wa = "WEALTH_ADVISOR"
    scoring.submit(open_period, [metric(f"A{x}", wa, "new_pb_customers", x) for x in (10, 20, 30, 40)],
                   ratings=False, actor="ops")
    scoring.calculate(open_period, role=wa)
    scoring.finalize(open_period, actor="hr")
    # A10 really had 25 new customers: μ 25 and σ √125 of the period stay, so z = 0 → 15.00
    revised = scoring.revise("A10", open_period, "missed entries", [metric("A10", wa, "new_pb_customers", 25)],
                             actor="hr")
    npc = indicator(revised, "new_pb_customers")
    assert npc.score == "15.00" and npc.peer_mean == "25.0000" and npc.peer_count == 4
    assert npc.peer_stddev == "11.1803"  # 4 places (docs/scoring.md)


def test_bad_input_is_refused_and_changes_nothing(scoring, open_period):
    good = metric("R1", RM, "calls_made", 10)
    cases = [
        (metric("R1", "TELLER", "calls_made", 1), "values[1].role", "unknown role"),
        (metric("R1", RM, "coffee_breaks", 1), "values[1].indicator_id", "unknown indicator"),
        (metric("R1", RM, "calls_made", "12,5"), "values[1].value", "not a plain decimal"),
        (metric("R1", RM, "calls_made", "NaN"), "values[1].value", "not a plain decimal"),
        (metric("R1", RM, "calls_made", "-3"), "values[1].value", "cannot be negative"),
        (metric("R1", RM, "training_tests", 50), "values[1].indicator_id", "SubmitRatings"),
        (metric("", RM, "calls_made", 1), "values[1].staff_id", "required"),
    ]
    for bad, path, words in cases:
        with pytest.raises(InvalidArgument) as err:
            scoring.submit(open_period, [good, bad], ratings=False, actor="ops")
        assert any(p == path and words in d for p, d in err.value.violations), err.value.violations
    with pytest.raises(InvalidArgument) as err:
        scoring.submit(open_period, [metric("R1", RM, "training_tests", 101)], ratings=True, actor="mgr")
    assert err.value.violations == [("values[0].value", "rating 101 outside [0, 100.00]")]
    with pytest.raises(NotFound):
        scoring.submit("2031", [good], ratings=False, actor="ops")
    assert scoring._read(lambda s: s.values_of(open_period, "R1")) == {}
    with pytest.raises(NotFound):
        scoring.get_score("NOBODY", open_period)
    with pytest.raises(NotFound):
        scoring.get_period("1999")
    with pytest.raises(InvalidArgument):
        scoring.calculate(open_period, role="TELLER")


def test_period_validation(scoring, open_period):
    with pytest.raises(AlreadyExists):
        scoring.create_period(open_period, "2025-01-01", "2025-12-31", "2026-01-31", actor="hr")
    with pytest.raises(InvalidArgument) as err:
        scoring.create_period("2026", "2026-01-01", "2025-12-31", "2026-13-01", actor="hr")
    assert {p for p, _ in err.value.violations} == {"due_on"}
    with pytest.raises(InvalidArgument) as err:
        scoring.create_period("2026", "2026-01-01", "2025-12-31", "2026-02-01", actor="hr")
    assert [p for p, _ in err.value.violations] == ["ends_on"]


def test_finalize_needs_a_calculation(scoring, open_period):
    with pytest.raises(FailedPrecondition, match="not been calculated"):
        scoring.finalize(open_period, actor="hr")


def test_request_id_replays_the_first_answer(scoring, open_period):
    remote_period(scoring, open_period)
    scoring.finalize(open_period, actor="hr", request_id="fin-1")
    assert scoring.finalize(open_period, actor="hr", request_id="fin-1") == (2, "FINALIZED")
    first = scoring.revise("R2", open_period, "x", [metric("R2", RM, "calls_made", 900)], actor="hr", request_id="r-1")
    second = scoring.revise("R2", open_period, "x", [metric("R2", RM, "calls_made", 900)], actor="hr", request_id="r-1")
    assert first == second and first.revision == 2
    assert scoring.get_score("R2", open_period).revision == 2


def test_role_change_in_a_period_drops_the_old_cards_values(scoring, open_period):
    scoring.submit(open_period, [metric("X1", RM, "calls_made", 1000)], ratings=False, actor="ops")
    scoring.calculate(open_period)
    scoring.submit(open_period, [metric("X1", "LOAN_MANAGER", "npl_ratio", "0.01")], ratings=False, actor="ops")
    scoring.calculate(open_period)
    score = scoring.get_score("X1", open_period)
    assert score.role == "LOAN_MANAGER" and score.total == "15.00"
    assert scoring._read(lambda s: s.values_of(open_period, "X1")) == {"npl_ratio": "0.01"}


def test_wealth_managers_are_scored_on_the_book_size_from_assignment(scoring, open_period):
    scoring.books.sizes.update({"W1": 400, "W2": 0})
    wm = "WEALTH_MANAGER"
    scoring.submit(open_period, [metric("W1", wm, "maintenance", 300), metric("W1", wm, "penetration", 200),
                                 metric("W2", wm, "maintenance", 5), metric("L1", "LOBBY_MANAGER", "debit_cards", 1)],
                   ratings=False, actor="ops")
    scoring.calculate(open_period)
    assert sorted(scoring.books.calls) == ["W1", "W2"]          # only the card that needs it asks
    w1 = scoring.get_score("W1", open_period)
    assert indicator(w1, "maintenance").score == "-3.00" and indicator(w1, "penetration").score == "4.00"
    assert "300 / 400" in indicator(w1, "maintenance").note
    assert w1.total == "1.00"
    assert indicator(scoring.get_score("W2", open_period), "maintenance").score == "-5.00"


def test_calculating_one_branch_rescores_only_its_peer_groups(scoring, open_period):
    scoring.submit(open_period, [metric("R1", RM, "calls_made", 1000, "B1"), metric("R9", RM, "calls_made", 1000, "B9")],
                   ratings=False, actor="ops")
    scoring.calculate(open_period)
    scoring.submit(open_period, [metric("R1", RM, "calls_made", 500, "B1"), metric("R9", RM, "calls_made", 500, "B9")],
                   ratings=False, actor="ops")
    assert scoring.calculate(open_period, branch_id="B1") == (1, "CALCULATED")
    assert scoring.get_score("R1", open_period).total == "0.00"
    assert scoring.get_score("R9", open_period).total == "80.00"
    with pytest.raises(FailedPrecondition):
        scoring.finalize(open_period, actor="hr")           # B9 still has stale results


def test_publishing_a_card_that_breaks_its_constraints_is_refused(scoring):
    admin = scoring.runtime.admin
    text = (scoring_dir() / "loan_manager.yaml").read_text().replace("hi: 1.2, weight: 25", "hi: 1.5, weight: 25")
    with pytest.raises(InvalidArgument) as err:
        admin.create(text, actor="rule-admin")
    assert any("above the card's max_factor 1.2" in d for _, d in err.value.violations)
    assert scoring.scorecards.active("LOAN_MANAGER").version == 1


def scoring_dir():
    from .conftest import SCORING
    return SCORING / "rulesets"
