"""Assignment use cases against a real database (SQLite and PostgreSQL)."""
from __future__ import annotations

import pytest

from services.assignment.service import CustomerChange
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied

from .conftest import customers, org


def team(svc, *rows):
    for sid, branch, role in rows:
        svc.upsert_staff("hr", sid, branch, role, True)


def managers(svc, cid):
    return {(m.role, m.staff_id) for m in svc.customer_managers(cid) if m.kind == "TIER"}


def test_placement_follows_the_policy_table(svc):
    org(svc)
    team(svc, ("HEAD-11", "SUB-11", "BRANCH_HEAD"), ("WA-1", "BR-1", "WEALTH_ADVISOR"),
         ("WM-11", "SUB-11", "WEALTH_MANAGER"), ("LM-111", "OUT-111", "LOBBY_MANAGER"),
         ("LN-11", "SUB-11", "LOAN_MANAGER"), ("RM-1", "BR-1", "REMOTE_MANAGER"))
    customers(svc, [
        ("PB", "PRIVATE_BANKING", "OUT-111"),
        ("WE", "WEALTH", "OUT-112"),
        ("AF", "AFFLUENT", "OUT-111"),
        ("AL", "AFFLUENT", "OUT-111", {"has_personal_loan": True}),
        ("HS", "AFFLUENT", "OUT-111", {"annual_card_spend_fen": 10_000_000}),
        ("LT", "LONG_TAIL", "OUT-121"),
        ("MA", "MASS", "OUT-111"),
        ("MP", "MASS", "OUT-111", {"card_level": "BLACK"}),
    ])
    run = svc.run_assignment("ops")
    assert managers(svc, "PB") == {("BRANCH_HEAD", "HEAD-11"), ("WEALTH_ADVISOR", "WA-1"),
                                   ("WEALTH_MANAGER", "WM-11")}
    assert managers(svc, "WE") == {("WEALTH_MANAGER", "WM-11")}
    assert managers(svc, "AF") == {("LOBBY_MANAGER", "LM-111")}
    assert managers(svc, "AL") == {("LOAN_MANAGER", "LN-11")}
    assert managers(svc, "HS") == {("LOBBY_MANAGER", "LM-111"), ("WEALTH_MANAGER", "WM-11")}
    assert managers(svc, "LT") == {("REMOTE_MANAGER", "RM-1")}
    assert managers(svc, "MA") == set()
    assert managers(svc, "MP") == {("WEALTH_MANAGER", "WM-11")}
    assert run.assigned == 10 and run.unplaced == []


def test_second_run_moves_nobody_and_dry_run_changes_nothing(svc):
    org(svc)
    team(svc, ("WM-1", "SUB-11", "WEALTH_MANAGER"), ("WM-2", "SUB-11", "WEALTH_MANAGER"))
    customers(svc, [(f"C{i:03}", "WEALTH", "OUT-111") for i in range(30)])
    preview = svc.run_assignment("ops", dry_run=True)
    assert svc.get_book("WM-1", 0, "").size == 0  # nothing written
    first = svc.run_assignment("ops")
    assert (preview.assigned, preview.unplaced) == (first.assigned, first.unplaced) == (30, [])
    assert svc.get_book("WM-1", 0, "").size == svc.get_book("WM-2", 0, "").size == 15
    second = svc.run_assignment("ops")
    assert (second.assigned, second.moved, second.removed, second.unchanged) == (0, 0, 0, 30)


def test_caps_are_never_exceeded_and_the_rest_is_reported(svc):
    org(svc)
    team(svc, ("WA-1", "BR-1", "WEALTH_ADVISOR"), ("HEAD-11", "SUB-11", "BRANCH_HEAD"))
    customers(svc, [(f"P{i:03}", "PRIVATE_BANKING", "OUT-111") for i in range(205)])
    run = svc.run_assignment("ops")
    assert svc.get_book("WA-1", 0, "").size == 200
    reasons = {(u["role"], u["reason"]) for u in run.unplaced}
    assert reasons == {("WEALTH_ADVISOR", "ALL_BOOKS_FULL"), ("WEALTH_MANAGER", "NO_STAFF_OF_ROLE")}
    assert sum(u["reason"] == "ALL_BOOKS_FULL" for u in run.unplaced) == 5
    assert svc.get_book("HEAD-11", 0, "").size == 205  # no limit


def test_tier_change_from_the_feed_moves_only_that_customer(svc):
    org(svc)
    team(svc, ("WM-1", "SUB-11", "WEALTH_MANAGER"), ("LM-1", "OUT-111", "LOBBY_MANAGER"))
    customers(svc, [("A", "WEALTH", "OUT-111"), ("B", "WEALTH", "OUT-111")])
    svc.run_assignment("ops")
    customers(svc, [("A", "AFFLUENT", "OUT-111")])
    run = svc.run_assignment("system", only_changed=True)
    assert (run.assigned, run.removed, run.unchanged) == (1, 1, 0)
    assert managers(svc, "A") == {("LOBBY_MANAGER", "LM-1")}
    assert managers(svc, "B") == {("WEALTH_MANAGER", "WM-1")}
    assert svc.run_assignment("system", only_changed=True).unchanged == 0  # nothing left to do


def test_feed_replay_changes_nothing(svc):
    org(svc)
    changes = customers(svc, [("A", "WEALTH", "OUT-111"), ("B", "AFFLUENT", "OUT-111")])
    assert svc.feed_cursor() == 2
    assert svc.apply_changes(changes) == 0  # already stored
    stale = CustomerChange(cursor=1, customer_id="A", tier="MASS", home_branch_id="OUT-111")
    assert svc.apply_changes([stale]) == 0
    assert svc.feed_cursor() == 2


def test_bad_input_is_refused_and_changes_nothing(svc):
    org(svc)
    with pytest.raises(InvalidArgument):
        svc.upsert_staff("hr", "X", "SUB-11", "JANITOR", True)
    with pytest.raises(NotFound):
        svc.upsert_staff("hr", "X", "NOWHERE", "WEALTH_MANAGER", True)
    with pytest.raises(NotFound):
        svc.upsert_branch("ops", "OUT-9", "SUB-99", "", "OUTLET")
    with pytest.raises(InvalidArgument):
        svc.upsert_branch("ops", "OUT-9", "BR-1", "", "OUTLET")  # an outlet sits under a sub-branch
    with pytest.raises(NotFound):
        svc.get_book("X", 0, "")
    with pytest.raises(NotFound):
        svc.create_change_request("maker", "NOBODY", "ADD", "", "X", "")
    with pytest.raises(NotFound):
        svc.run_assignment("ops", branch_id="NOWHERE")
    assert svc.list_audit_events(1000, "", action="staff.upsert")[0] == []


def _locked_setup(svc):
    org(svc)
    team(svc, ("WM-1", "SUB-11", "WEALTH_MANAGER"), ("LM-1", "OUT-111", "LOBBY_MANAGER"),
         ("APPROVER-1", "BR-1", "BRANCH_APPROVER"), ("APPROVER-11", "SUB-11", "BRANCH_APPROVER"))
    customers(svc, [("A", "WEALTH", "OUT-111")])
    svc.run_assignment("ops")
    svc.open_lock_period("approver", "2026", "BR-1", "2026-01-01", "2026-12-31")


def test_lock_period_turns_moves_into_suggestions_that_an_approver_applies(svc):
    _locked_setup(svc)
    customers(svc, [("A", "AFFLUENT", "OUT-111")])
    run = svc.run_assignment("system", only_changed=True)
    assert (run.assigned, run.removed, run.suggestions_created) == (0, 0, 2)
    assert managers(svc, "A") == {("WEALTH_MANAGER", "WM-1")}  # locked: nothing moved
    suggestions, _ = svc.list_change_requests("PENDING", "BR-1", "A", 0, "")
    assert {(s["action"], s["suggested"], s["period_id"]) for s in suggestions} == {
        ("ADD", True, "2026"), ("REMOVE", True, "2026")}
    assert svc.run_assignment("system").suggestions_created == 0  # no duplicates
    for s in suggestions:
        decided = svc.decide("APPROVER-1", False, s["change_request_id"], True, "ok")
        assert decided["status"] == "APPROVED" and decided["decided_by"] == "APPROVER-1"
    assert managers(svc, "A") == {("LOBBY_MANAGER", "LM-1")}
    actions = [e["action"] for e in svc.list_audit_events(100, "")[0]]
    assert actions.count("change_request.approve") == 2


def test_maker_cannot_check_and_checker_must_be_above(svc):
    _locked_setup(svc)
    svc.upsert_staff("hr", "WM-2", "SUB-11", "WEALTH_MANAGER", True)
    cr = svc.create_change_request("APPROVER-1", "A", "TRANSFER", "WM-1", "WM-2", "rebalance")
    assert cr["requested_by"] == "APPROVER-1" and cr["status"] == "PENDING"
    with pytest.raises(PermissionDenied) as own:
        svc.decide("APPROVER-1", False, cr["change_request_id"], True, "")
    assert own.value.reason == "SELF_APPROVAL"
    with pytest.raises(PermissionDenied):
        svc.decide("stranger", False, cr["change_request_id"], True, "")
    # Seed 003: the 分行 approves; the sub-branch's approver is told which level must.
    with pytest.raises(PermissionDenied) as sub:
        svc.decide("APPROVER-11", False, cr["change_request_id"], True, "")
    assert (sub.value.reason, sub.value.metadata["required_level"]) == ("NOT_APPROVER", "BRANCH")
    svc.upsert_staff("hr", "APPROVER-2", "BR-1", "BRANCH_APPROVER", True)
    svc.upsert_branch("ops", "BR-2", "", "", "BRANCH")
    svc.upsert_staff("hr", "APPROVER-X", "BR-2", "BRANCH_APPROVER", True)
    with pytest.raises(PermissionDenied):
        svc.decide("APPROVER-X", False, cr["change_request_id"], True, "")
    assert svc.get_change_request(cr["change_request_id"])["status"] == "PENDING"
    assert svc.decide("APPROVER-2", False, cr["change_request_id"], True, "")["status"] == "APPROVED"
    assert managers(svc, "A") == {("WEALTH_MANAGER", "WM-2")}
    with pytest.raises(FailedPrecondition) as again:  # already decided
        svc.decide("APPROVER-2", False, cr["change_request_id"], False, "")
    assert again.value.reason == "CONFLICT"


def test_wrong_role_expiry_and_supersede(svc, clock):
    _locked_setup(svc)
    with pytest.raises(FailedPrecondition):  # a wealth customer needs no lobby manager
        svc.create_change_request("maker", "A", "TRANSFER", "WM-1", "LM-1", "")
    with pytest.raises(FailedPrecondition):
        svc.create_change_request("maker", "A", "ADD", "", "LM-1", "")
    svc.upsert_staff("hr", "WM-2", "SUB-11", "WEALTH_MANAGER", True)
    svc.upsert_staff("hr", "WM-3", "SUB-11", "WEALTH_MANAGER", True)
    old = svc.create_change_request("maker", "A", "TRANSFER", "WM-1", "WM-2", "")
    new = svc.create_change_request("maker", "A", "TRANSFER", "WM-1", "WM-3", "", request_id="r1")
    assert svc.create_change_request("maker", "A", "TRANSFER", "WM-1", "WM-3", "", request_id="r1") == new
    assert svc.get_change_request(old["change_request_id"])["status"] == "SUPERSEDED"
    with pytest.raises(FailedPrecondition):
        svc.decide("APPROVER-1", False, old["change_request_id"], True, "")
    clock.advance(hours=73)
    with pytest.raises(FailedPrecondition):
        svc.decide("APPROVER-1", False, new["change_request_id"], True, "")
    assert svc.get_change_request(new["change_request_id"])["status"] == "EXPIRED"
    assert managers(svc, "A") == {("WEALTH_MANAGER", "WM-1")}


def test_overlapping_lock_period_is_refused_and_closing_reports_pending(svc):
    _locked_setup(svc)
    with pytest.raises(FailedPrecondition):
        svc.open_lock_period("approver", "2026-Q3", "SUB-11", "2026-07-01", "2026-09-30")
    with pytest.raises(InvalidArgument):
        svc.open_lock_period("approver", "bad", "BR-1", "2027-02-01", "2027-01-01")
    customers(svc, [("A", "AFFLUENT", "OUT-111")])
    svc.run_assignment("system", only_changed=True)
    period, pending = svc.close_lock_period("approver", "2026")
    assert period["status"] == "CLOSED" and pending == 2
    with pytest.raises(FailedPrecondition):
        svc.close_lock_period("approver", "2026")


def test_group_claims_sit_beside_tier_books(svc):
    org(svc)
    team(svc, ("WM-1", "SUB-11", "WEALTH_MANAGER"), ("LM-1", "OUT-111", "LOBBY_MANAGER"))
    customers(svc, [("A", "WEALTH", "OUT-111", {"segments": ("PAYROLL",)}),
                    ("B", "WEALTH", "OUT-121", {"segments": ("PAYROLL",)})])
    svc.run_assignment("ops")
    claim, covered = svc.claim_group("ops", "LM-1", "PAYROLL", {}, "")
    assert covered == 1  # only A is under LM-1's outlet
    assert {(m.kind, m.staff_id) for m in svc.customer_managers("A")} == {("TIER", "WM-1"), ("GROUP", "LM-1")}
    with pytest.raises(FailedPrecondition):
        svc.claim_group("ops", "WM-1", "PAYROLL", {}, "")
    with pytest.raises(InvalidArgument):
        svc.claim_group("ops", "WM-1", "PAYROLL", {"shoe_size": "42"}, "")
