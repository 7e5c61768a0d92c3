"""What HR and the programs calling scoring see: a missing required value is
flagged (and blocks finalizing when the card says so), declared ranges are
enforced with the indicator and range in the error, statistics are rounded,
and a card published but not yet loaded answers RULESET_LOADING."""
from pathlib import Path

import pytest

from services.common.errors import FailedPrecondition, InvalidArgument, Unavailable
from services.rules.testing import release

from .conftest import metric

RM = "REMOTE_MANAGER"
CARDS = Path(__file__).parents[3] / "services" / "scoring" / "rulesets"


def indicator(score, indicator_id):
    return next(i for i in score.indicators if i.indicator_id == indicator_id)


def test_a_missing_required_value_is_flagged_on_the_result_hr_lists(scoring, open_period):
    scoring.submit(open_period, [metric("R1", RM, "calls_made", 1800), metric("R2", RM, "calls_made", 500)],
                   ratings=False, actor="ops")
    scoring.calculate(open_period)
    r1 = next(s for s in scoring.list_scores(open_period).scores if s.staff_id == "R1")
    penetration = indicator(r1, "product_penetration")
    assert (penetration.score, penetration.warning) == ("0.00", "MISSING_VALUE")
    assert indicator(r1, "calls_made").warning == ""
    assert indicator(r1, "calls_shortfall").warning == ""  # a deduction is never required
    assert any(w.startswith("MISSING_VALUE: product_penetration") for w in r1.warnings)
    assert len(r1.warnings) == 7  # 5 quantitative + 2 ratings never submitted
    # the shipped cards only warn (missing_values: warn, the default): HR may finalize
    assert scoring.finalize(open_period, actor="hr")[1] == "FINALIZED"


def test_a_card_with_missing_values_block_refuses_to_finalize_until_the_values_come(scoring, open_period):
    text = (CARDS / "remote_manager.yaml").read_text(encoding="utf-8").replace(
        "  role: REMOTE_MANAGER\n", "  role: REMOTE_MANAGER\n  missing_values: block\n")
    admin = scoring.runtime.admin
    record = admin.create(text, "hr-lead")
    release(admin, record.name, record.version, requester="hr-lead", approver="checker")  # four eyes
    scoring.runtime.refresh()
    scoring.submit(open_period, [metric("R1", RM, "calls_made", 1800)], ratings=False, actor="ops")
    scoring.calculate(open_period)
    with pytest.raises(FailedPrecondition) as err:
        scoring.finalize(open_period, actor="hr")
    assert err.value.reason == "MISSING_VALUES"
    assert err.value.metadata["staff_id"] == "R1" and err.value.metadata["results"] == "1"
    full = [metric("R1", RM, k, v) for k, v in (("customer_development", 200), ("aum_increase", 1000),
                                                ("key_product_sales", 100), ("product_penetration", "0.4"),
                                                ("sms_sent", 100))]
    scoring.submit(open_period, full, ratings=False, actor="ops")
    scoring.submit(open_period, [metric("R1", RM, "training_tests", 90), metric("R1", RM, "daily_management", 40)],
                   ratings=True, actor="mgr")
    scoring.calculate(open_period)
    assert scoring.get_score("R1", open_period).warnings == ()
    assert scoring.finalize(open_period, actor="hr")[1] == "FINALIZED"


def test_a_share_outside_its_declared_range_is_refused_and_changes_nothing(scoring, open_period):
    with pytest.raises(InvalidArgument) as err:
        scoring.submit(open_period, [metric("R1", RM, "calls_made", 900), metric("R1", RM, "product_penetration", 40)],
                       ratings=False, actor="ops")
    assert err.value.reason == "INVALID_INPUT"
    assert err.value.metadata == {"indicator_id": "product_penetration", "min": "0", "max": "1", "value": "40",
                                  "field": "values[1].value"}
    assert scoring._read(lambda s: s.values_of(open_period, "R1")) == {}
    assert scoring.submit(open_period, [metric("R1", RM, "product_penetration", "0.4")], ratings=False,
                          actor="ops") == 1


def test_peer_statistics_are_shown_to_4_places_and_scores_to_2(scoring, open_period):
    values = [metric(f"W{i}", "WEALTH_ADVISOR", "allocation_rate", v) for i, v in enumerate(("0.1", "0.2", "0.7"))]
    scoring.submit(open_period, values, ratings=False, actor="ops")
    scoring.calculate(open_period)
    shown = indicator(scoring.get_score("W0", open_period), "allocation_rate")
    assert (shown.peer_mean, shown.peer_stddev, shown.peer_count) == ("0.3333", "0.2625", 3)
    assert len(shown.score.split(".")[1]) == 2


def test_a_card_published_but_not_loaded_yet_answers_ruleset_loading(scoring, open_period):
    text = (CARDS / "remote_manager.yaml").read_text(encoding="utf-8").replace(
        "scoring.remote_manager", "scoring.night_manager").replace("role: REMOTE_MANAGER", "role: NIGHT_MANAGER")
    with pytest.raises(InvalidArgument, match="no published scorecard"):  # never published: bad input
        scoring.submit(open_period, [metric("N1", "NIGHT_MANAGER", "calls_made", 1)], ratings=False, actor="ops")
    scoring.runtime.stop()  # this replica's poll stands still: the window another replica would see
    admin = scoring.runtime.admin
    record = admin.create(text, "hr-lead")
    release(admin, record.name, record.version, requester="hr-lead", approver="checker")  # four eyes
    with pytest.raises(Unavailable) as err:
        scoring.submit(open_period, [metric("N1", "NIGHT_MANAGER", "calls_made", 1)], ratings=False, actor="ops")
    assert err.value.reason == "RULESET_LOADING" and err.value.retry_after > 0
    assert err.value.metadata == {"ruleset": "scoring.night_manager", "version": "1"}
    scoring.runtime.refresh()
    assert scoring.submit(open_period, [metric("N1", "NIGHT_MANAGER", "calls_made", 1)], ratings=False,
                          actor="ops") == 1
