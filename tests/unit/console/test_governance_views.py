"""The pure view logic of the rule-governance pages: the population heat map's
cells with their example ids, the per-branch breakdown, the downstream rows,
release rows and what a person may do with each, the Asia/Shanghai effective
date, a stored input's fields; and who may do which governance action by the
suite's own rbac.yaml."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace as NS

import pytest

from kequn.rules.v1 import rules_pb2 as rpb
from services.common.auth import Policy, Principal
from services.console import charts, views
from services.console.access import Access


def t(key, src, dst, count, ids=()):
    return NS(outcome_key=key, from_outcome=src, to_outcome=dst, count=count, example_ids=list(ids))


POPULATION = [t("tier", "WEALTH", "PRIVATE_BANKING", 4, ["C5", "C6"]), t("tier", "WEALTH", "WEALTH", 4, ["C1"]),
              t("tier", "AFFLUENT", "AFFLUENT", 2, ["CP-1"]), t("tier", "", "MASS", 1, ["N1"])]


def test_heat_map_cells_carry_counts_and_example_ids_row_by_row():
    [m] = views.matrices(POPULATION)
    assert m.rows == ["AFFLUENT", "WEALTH", "—"] and m.cols == ["AFFLUENT", "MASS", "PRIVATE_BANKING", "WEALTH"]
    assert [(c.src, c.dst, c.count, c.example_ids, c.moved) for c in m.cells()] == [
        ("AFFLUENT", "AFFLUENT", 2, ("CP-1",), False),
        ("WEALTH", "PRIVATE_BANKING", 4, ("C5", "C6"), True),
        ("WEALTH", "WEALTH", 4, ("C1",), False),
        ("—", "MASS", 1, ("N1",), True)]
    assert m.changed == 5 and m.peak == 4
    svg = str(charts.heatmap(m, "Population", "v1", "v2"))
    assert "WEALTH → PRIVATE_BANKING: 4" in svg and svg.count("<rect") == len(m.rows) * len(m.cols)


def test_heat_map_cells_merge_repeated_pairs_without_repeating_ids():
    [m] = views.matrices([t("tier", "A", "B", 2, ["x", "y"]), t("tier", "A", "B", 3, ["y", "z"])])
    assert [(c.count, c.example_ids) for c in m.cells()] == [(5, ("x", "y", "z"))]


def test_a_sample_simulation_without_example_ids_still_makes_cells():
    [m] = views.matrices([NS(outcome_key="tier", from_outcome="A", to_outcome="B", count=1)])
    assert m.cells()[0].example_ids == ()


def test_branch_rows_keep_only_moves_and_the_groups_that_moved():
    branch = NS(branch_id="OUT-1", total=10, changed=4, transitions=POPULATION[:2],
                code_changes=[NS(outcome_key="segments", code="PAYROLL", gained=1, lost=2, gained_example_ids=["a"],
                                 lost_example_ids=["b", "c"])])
    [row] = views.branch_rows([branch, NS(branch_id="", total=1, changed=0, transitions=[], code_changes=[])])[:1]
    assert (row.branch_id, row.total, row.changed) == ("OUT-1", 10, 4)
    assert [(c.key, c.src, c.dst, c.count) for c in row.moves] == [("tier", "WEALTH", "PRIVATE_BANKING", 4)]
    assert row.codes == [views.CodeRow("segments", "PAYROLL", 1, 2, ("a",), ("b", "c"))]
    assert views.branch_rows([NS(branch_id="", total=1, changed=0, transitions=[], code_changes=[])])[0].branch_id \
        == "—"


def test_impact_rows_are_sorted_with_their_delta():
    rows = views.impact_rows([NS(branch_id="B", role="WM", reason="", baseline=3, candidate=1),
                              NS(branch_id="A", role="LM", reason="ALL_BOOKS_FULL", baseline=0, candidate=4)])
    assert [(r.branch_id, r.delta) for r in rows] == [("A", 4), ("B", -2)]


def test_changed_items_go_downstream_as_the_cli_sends_them():
    items = [rpb.SimulatedItem(id="C1", branch_id="B", outcome={"tier": "WEALTH"}),
             rpb.SimulatedItem(id="C2", outcome={"tier": "MASS"},
                               codes={"segments": rpb.CodeList(codes=["PAYROLL"]), "flags": rpb.CodeList()})]
    assert views.simulated_outcomes(items) == [
        {"customer_id": "C1", "tier": "WEALTH", "groups_changed": False, "segments": [], "flags": []},
        {"customer_id": "C2", "tier": "MASS", "groups_changed": True, "segments": ["PAYROLL"], "flags": []}]


NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


def release(release_id, status, requested_by="owner1", effective: datetime | None = None):
    r = rpb.Release(release_id=release_id, name="tiering.tiers", version=2, status=status, requested_by=requested_by)
    if effective is not None:
        r.effective_from.FromDatetime(effective)
    return r


def test_release_rows_offer_what_each_status_allows():
    rows = views.release_rows([
        release("p", rpb.RELEASE_STATUS_PENDING),
        release("mine", rpb.RELEASE_STATUS_PENDING, requested_by="owner2"),
        release("ahead", rpb.RELEASE_STATUS_APPROVED, effective=NOW + timedelta(days=1)),
        release("past", rpb.RELEASE_STATUS_APPROVED, effective=NOW - timedelta(seconds=1)),
        release("active", rpb.RELEASE_STATUS_ACTIVE), release("no", rpb.RELEASE_STATUS_REJECTED),
        release("gone", rpb.RELEASE_STATUS_CANCELLED, effective=NOW + timedelta(days=1)),
    ], "owner2", can_approve=True, can_reject=True, now=NOW)
    assert [(r.release.release_id, r.status, r.mine, r.can_decide, r.can_cancel) for r in rows] == [
        ("p", "PENDING", False, True, False),
        # the requester is offered the buttons too: the service's SELF_APPROVAL is then shown in words
        ("mine", "PENDING", True, True, False),
        ("ahead", "APPROVED", False, False, True),
        ("past", "APPROVED", False, False, False),
        ("active", "ACTIVE", False, False, False),
        ("no", "REJECTED", False, False, False),
        ("gone", "CANCELLED", False, False, False)]


def test_release_rows_for_someone_who_may_only_read():
    rows = views.release_rows([release("p", rpb.RELEASE_STATUS_PENDING),
                               release("a", rpb.RELEASE_STATUS_APPROVED, effective=NOW + timedelta(days=1))],
                              "ops", can_approve=False, can_reject=False, now=NOW)
    assert [(r.can_decide, r.can_cancel) for r in rows] == [(False, False), (False, False)]


@pytest.mark.parametrize("text, utc", [
    ("2099-01-01T09:30", datetime(2099, 1, 1, 1, 30, tzinfo=timezone.utc)),
    ("2026-03-01T00:00:59", datetime(2026, 2, 28, 16, 0, 59, tzinfo=timezone.utc)),  # the day before in UTC
    ("2026-12-31 23:59", datetime(2026, 12, 31, 15, 59, tzinfo=timezone.utc)),
])
def test_an_effective_date_is_asia_shanghai_wall_time_converted_exactly(text, utc):
    assert views.shanghai_local_to_utc(text) == utc
    assert views.shanghai_local_input(utc) == text.replace(" ", "T")[:16]


@pytest.mark.parametrize("text", ["", "   "])
def test_no_effective_date_means_on_approval(text):
    assert views.shanghai_local_to_utc(text) is None


@pytest.mark.parametrize("text", ["tomorrow", "2026-13-01T00:00", "2026-01-01", "2026-01-01T25:00", "1e9"])
def test_a_wrong_effective_date_is_refused(text):
    with pytest.raises(views.LocalTimeError):
        views.shanghai_local_to_utc(text)


def test_a_stored_input_is_listed_by_field_with_amounts_in_yuan():
    assert views.snapshot_fields({"customer_id": "C3", "annual_avg_aum_fen": "28000000",
                                  "holdings": [{"branch_id": "OUT-1", "aum_fen": "5"}], "age": 40}) == [
        ("age", "40"), ("annual_avg_aum_fen", "28000000 (¥280,000.00)"),
        ("customer_id", "C3"), ("holdings", '[{"aum_fen": "5", "branch_id": "OUT-1"}]')]


def who(*roles):
    return Principal("someone", frozenset(roles))


def test_governance_actions_follow_the_role_matrix():
    access = Access(Policy.load())
    owner, ops, approver, staff = who("rule_admin"), who("operations"), who("branch_approver"), who("branch_staff")
    for action in ("rules.releases", "rules.request_release", "rules.approve_release", "rules.reject_release",
                   "rules.population", "rules.impact", "customers.explain"):
        assert access.can(owner, action), action
    assert access.can(ops, "rules.releases") and access.can(ops, "rules.population") and access.can(ops, "rules.impact")
    assert not any(access.can(ops, a) for a in ("rules.request_release", "rules.approve_release",
                                                "rules.reject_release"))
    assert access.can(ops, "customers.explain") and access.can(approver, "customers.explain")
    assert not access.can(staff, "customers.explain") and not access.can(staff, "rules.releases")
