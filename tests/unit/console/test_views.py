"""The console's pure view logic: money, dates, effects on books, diffs,
samples, migration matrices, the HR CSV, SVG charts, labels."""
from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from types import SimpleNamespace as NS

import pytest

from services.console import charts, i18n, views


@pytest.mark.parametrize("fen, text", [
    (0, "¥0.00"), (1, "¥0.01"), (99, "¥0.99"), (100, "¥1.00"), (123456, "¥1,234.56"),
    (600_000_000, "¥6,000,000.00"), (-5, "-¥0.05"), (-123456789, "-¥1,234,567.89"),
    (9_007_199_254_740_993, "¥90,071,992,547,409.93"),  # beyond a double's exact integers: still exact
])
def test_yuan_from_integer_fen_is_exact(fen, text):
    assert views.yuan(fen) == text


@pytest.mark.parametrize("bad", [1.5, "100", None, True])
def test_yuan_refuses_anything_but_integer_fen(bad):
    with pytest.raises(TypeError):
        views.yuan(bad)


def test_instants_are_shown_in_asia_shanghai():
    assert views.shanghai(datetime(2025, 12, 31, 16, 30, tzinfo=timezone.utc)) == "2026-01-01 00:30"
    assert views.shanghai(datetime(2025, 12, 31, 16, 30)) == "2026-01-01 00:30"  # naive = UTC (protobuf)
    assert views.timestamp(NS(seconds=1767198600, nanos=0)) == "2026-01-01 00:30"
    assert views.timestamp(NS(seconds=0, nanos=0)) == "" and views.shanghai(None) == ""


def test_what_approving_does_to_the_books():
    wm1, wm2 = views.BookFill("WM-1", 10, 500), views.BookFill("WM-2", 500, 500)
    assert views.effects("TRANSFER", wm1, wm2) == [views.Effect("WM-1", 10, 9, 500, False),
                                                   views.Effect("WM-2", 500, 501, 500, True)]
    assert views.effects("ADD", None, views.BookFill("BH", 7, 0)) == [views.Effect("BH", 7, 8, 0, False)]
    assert views.effects("REMOVE", wm1, None) == [views.Effect("WM-1", 10, 9, 500, False)]


def test_fill_percent():
    assert views.fill_percent(250, 500) == 50 and views.fill_percent(3, 0) is None
    assert views.fill_percent(499, 500) == 99


def test_diff_marks_added_and_removed_lines():
    lines = views.diff_documents("a: 1\nb: 2\n", "a: 1\nb: 3\n", "x v1", "x v2")
    kinds = [(l.kind, l.text) for l in lines]
    assert ("del", "-b: 2") in kinds and ("add", "+b: 3") in kinds and ("ctx", " a: 1") in kinds
    assert views.diff_documents("same", "same", "a", "b") == []


def test_samples_are_json_objects_one_per_line_or_an_array():
    assert views.parse_sample('{"a": 1}\n\n{"a": 20000000}') == [{"a": 1}, {"a": 20000000}]
    assert views.parse_sample('[{"a": 1}]') == [{"a": 1}]
    assert views.parse_sample("  ") == []
    assert isinstance(views.parse_sample('{"fen": 600000000}')[0]["fen"], int)
    with pytest.raises(views.SampleError) as bad:
        views.parse_sample('{"a": 1}\n[1]')
    assert bad.value.line == 2
    with pytest.raises(views.SampleError):
        views.parse_sample("{nope")
    for deep in ("[" * 100_000, '{"a": ' * 30 + "1" + "}" * 30):  # nesting is refused, not a crash
        with pytest.raises(views.SampleError):
            views.parse_sample(deep)


def test_migration_matrices_by_outcome_key():
    cells = [NS(outcome_key="tier", from_outcome="AFFLUENT", to_outcome="WEALTH", count=3),
             NS(outcome_key="tier", from_outcome="", to_outcome="MASS", count=2),
             NS(outcome_key="tier", from_outcome="AFFLUENT", to_outcome="WEALTH", count=1)]
    [m] = views.matrices(cells)
    assert m.key == "tier" and m.rows == ["AFFLUENT", "—"] and m.cols == ["MASS", "WEALTH"]
    assert m.counts[("AFFLUENT", "WEALTH")] == 4 and m.peak == 4


def _score(staff_id, total):
    from kequn.common.v1 import common_pb2
    from kequn.scoring.v1 import scoring_pb2
    return scoring_pb2.StaffScore(period_id="2025", staff_id=staff_id, role="REMOTE_MANAGER", branch_id="OUT-1",
                                  total=total, rank=1, peer_group_size=2, status=scoring_pb2.SCORE_STATUS_FINALIZED,
                                  revision=1, scorecard=common_pb2.RulesetRef(name="scorecard.remote", version=3))


def test_scores_csv_keeps_decimals_and_defuses_formulas():
    text = views.scores_csv([_score("RM-1", "86.25"), _score("=HYPERLINK(\"x\")", "-1.50")])
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == list(views.SCORE_COLUMNS)
    assert rows[1][:5] == ["2025", "RM-1", "REMOTE_MANAGER", "OUT-1", "86.25"] and rows[1][7] == "FINALIZED"
    assert rows[2][1] == "'=HYPERLINK(\"x\")" and rows[2][4] == "-1.50"


def test_heatmap_is_labelled_and_escapes_outcome_names():
    m = views.matrices([NS(outcome_key="tier", from_outcome="<b>", to_outcome="WEALTH", count=5)])[0]
    svg = str(charts.heatmap(m, "tier & more", "v1", "v2"))
    assert svg.startswith('<svg') and 'role="img"' in svg and 'aria-label="tier &amp; more"' in svg
    assert "<title>tier &amp; more</title>" in svg and "&lt;b&gt;" in svg and "<b>" not in svg
    assert ">5</text>" in svg


def test_fill_bar_is_labelled():
    svg = str(charts.fill_bar(500, 500, "fill 500 / 500"))
    assert 'aria-label="fill 500 / 500"' in svg and "#c0392b" in svg  # full: red
    assert 'width="0"' in str(charts.fill_bar(3, 0, "no max"))


def test_labels_and_reasons_in_both_languages():
    assert i18n.label("approve", "en") == "Approve" and i18n.label("approve", "zh") == "批准"
    assert i18n.label("approved_msg", "en", id="CR-1") == "Approved: change request CR-1 is applied."
    assert i18n.reason_words("SELF_APPROVAL", "en").startswith("You cannot decide a request you made yourself")
    assert i18n.reason_words("BOOK_FULL", "zh") == "接收方管户包已达上限。"
    assert i18n.reason_words("SOMETHING_NEW", "en") == "The service refused it."
    assert i18n.pick_lang("en-US,en;q=0.9") == "en" and i18n.pick_lang("zh-CN") == "zh"
    assert i18n.pick_lang(None) == i18n.DEFAULT_LANG and i18n.lang_of("fr") == i18n.DEFAULT_LANG


def test_every_label_has_both_languages():
    for key, pair in i18n.LABELS.items():
        assert len(pair) == 2 and all(pair), key
    for reason in ("BOOK_FULL", "BOOK_LOCKED", "SELF_APPROVAL", "NOT_APPROVER", "CONFLICT", "PERIOD_FINALIZED",
                   "RULESET_LOADING", "FOUR_EYES_REQUIRED", "INVALID_INPUT", "NOT_FOUND", "UNAUTHENTICATED",
                   "PERMISSION_DENIED", "OVERLOADED", "DEPENDENCY_UNAVAILABLE", "OUT_OF_STOCK", "BUDGET_EXHAUSTED",
                   "QUOTA_USED", "COOL_DOWN", "NOT_ELIGIBLE", "CHANNEL_NOT_ALLOWED"):  # CONTRACT.md, second round
        assert reason in i18n.REASONS


def test_scores_by_role_and_branch_in_decimals():
    scores = [NS(role="RM", branch_id="OUT-2", total=t) for t in ("80.00", "70.01", "70.00")] + \
        [NS(role="LM", branch_id="OUT-1", total="99.5")]
    lm, rm = views.score_summary(scores)
    assert (lm.role, lm.people, str(lm.mean)) == ("LM", 1, "99.50")
    assert (rm.branch_id, rm.people, str(rm.mean), str(rm.low), str(rm.high)) == ("OUT-2", 3, "73.34", "70.00", "80.00")
