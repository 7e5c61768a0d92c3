"""What the seeds ask of assignment beyond the first build (DOMAIN.md §4,
"Details that follow from the seeds"): dated lock periods, the 分行 approves,
local group books by employer and market, overflow upward, the reads a branch
needs, and requests that say why they exist."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from services.rules.testing import release

from .conftest import customers, org
from .test_assignment_service import managers, team

POLICY = Path(__file__).resolve().parents[3] / "services" / "assignment" / "rulesets" / "policy.yaml"


def publish_policy(svc, **parameters):
    """A new version of assignment.policy with some parameters changed, serving now."""
    doc = yaml.safe_load(POLICY.read_text(encoding="utf-8"))
    for key, value in parameters.items():
        if key == "books":
            doc["parameters"]["books"].update(value)
        else:
            doc["parameters"][key] = value
    record = svc.rules.admin.create(yaml.safe_dump(doc, allow_unicode=True), "tester")
    release(svc.rules.admin, record.name, record.version, requester="tester", approver="checker")  # four eyes
    svc.rules.refresh()


def pending(svc, customer_id):
    return svc.list_change_requests("PENDING", "", customer_id, 0, "")[0]


# --- dated lock periods ----------------------------------------------------------------------

def test_a_period_that_has_already_ended_is_refused_and_changes_nothing(svc):
    org(svc)  # the clock says 2026-03-02 (17:00 in Shanghai)
    with pytest.raises(InvalidArgument) as refused:
        svc.open_lock_period("approver", "old", "BR-1", "2026-01-01", "2026-03-01")
    assert "ends_on" in refused.value.message and refused.value.reason == "INVALID_INPUT"
    assert svc.list_lock_periods("", 0, "")[0] == []
    # Ending today (in Shanghai) is fine: today is still locked.
    assert svc.open_lock_period("approver", "p", "BR-1", "2026-01-01", "2026-03-02")["in_force"]


def test_a_period_locks_from_its_first_through_its_last_day_in_shanghai_and_unlocks_by_itself(svc, clock):
    org(svc)
    team(svc, ("LM-1", "OUT-111", "LOBBY_MANAGER"), ("WM-1", "SUB-11", "WEALTH_MANAGER"))
    svc.open_lock_period("approver", "Q", "BR-1", "2026-03-05", "2026-03-10")
    customers(svc, [("A", "AFFLUENT", "OUT-111")])
    assert svc.run_assignment("ops").assigned == 1  # not started yet: placed
    assert not svc.get_book("LM-1", 0, "").locked
    clock.advance(days=2, hours=7, minutes=30)  # 2026-03-04T16:30Z = 03-05 00:30 in Shanghai
    assert svc.get_book("LM-1", 0, "").locked
    [period] = svc.list_lock_periods("OUT-111", 0, "")[0]
    assert period["in_force"] and period["status"] == "OPEN"
    customers(svc, [("A", "WEALTH", "OUT-111")])
    run = svc.run_assignment("system", only_changed=True)
    assert run.suggestions_created == 2 and managers(svc, "A") == {("LOBBY_MANAGER", "LM-1")}
    clock.advance(days=5, hours=23)  # 2026-03-10T15:30Z = 03-10 23:30 in Shanghai: still the last day
    assert svc.get_book("LM-1", 0, "").locked
    clock.advance(minutes=31)  # 03-11 00:01 in Shanghai: unlocked, nobody closed anything
    assert not svc.get_book("LM-1", 0, "").locked
    assert not svc.list_lock_periods("BR-1", 0, "")[0][0]["in_force"]
    # What the suggestions asked is now done by the automatic run, which supersedes them.
    run = svc.run_assignment("system", only_changed=True)
    assert managers(svc, "A") == {("WEALTH_MANAGER", "WM-1")}
    superseded = svc.list_change_requests("SUPERSEDED", "", "A", 0, "")[0]
    assert len(superseded) == 2 and {r["superseded_by"] for r in superseded} == {f"run/{run.run_id}"}
    assert pending(svc, "A") == []


def test_overlapping_periods_on_one_unit_are_refused_not_merged(svc):
    org(svc)
    svc.open_lock_period("approver", "2026", "BR-1", "2026-03-01", "2026-12-31")
    with pytest.raises(FailedPrecondition) as refused:
        svc.open_lock_period("approver", "Q4", "SUB-11", "2026-10-01", "2026-12-31")
    assert refused.value.reason == "CONFLICT" and refused.value.metadata["period_id"] == "2026"
    svc.open_lock_period("approver", "2027", "BR-1", "2027-01-01", "2027-12-31")  # back to back is fine
    assert [p["period_id"] for p in svc.list_lock_periods("SUB-11", 0, "")[0]] == ["2027", "2026"]


# --- who approves ----------------------------------------------------------------------------

def _request_under_lock(svc):
    org(svc)
    team(svc, ("WM-1", "SUB-11", "WEALTH_MANAGER"), ("WM-2", "SUB-11", "WEALTH_MANAGER"),
         ("APPROVER-BR", "BR-1", "BRANCH_APPROVER"), ("APPROVER-SUB", "SUB-11", "BRANCH_APPROVER"),
         ("APPROVER-SUB2", "SUB-12", "BRANCH_APPROVER"))
    customers(svc, [("A", "WEALTH", "OUT-111")])
    svc.run_assignment("ops")
    svc.open_lock_period("approver", "2026", "BR-1", "2026-01-01", "2026-12-31")
    holder = next(s for r, s in managers(svc, "A"))
    other = "WM-2" if holder == "WM-1" else "WM-1"
    return svc.create_change_request("maker", "A", "TRANSFER", holder, other, "rebalance"), other


def test_by_default_the_branch_approves_and_the_refusal_names_the_level(svc):
    cr, other = _request_under_lock(svc)
    with pytest.raises(PermissionDenied) as refused:
        svc.decide("APPROVER-SUB", False, cr["change_request_id"], True, "")
    assert refused.value.reason == "NOT_APPROVER"
    assert refused.value.metadata == {"required_level": "BRANCH", "branch_id": "OUT-111",
                                      "approver_branch_id": "SUB-11"}
    assert svc.get_change_request(cr["change_request_id"])["status"] == "PENDING"
    assert svc.decide("APPROVER-BR", False, cr["change_request_id"], True, "")["status"] == "APPROVED"
    assert managers(svc, "A") == {("WEALTH_MANAGER", other)}


def test_a_bank_can_delegate_approvals_to_the_sub_branch(svc):
    cr, other = _request_under_lock(svc)
    publish_policy(svc, approver_level="SUB_BRANCH")
    with pytest.raises(PermissionDenied) as elsewhere:  # another sub-branch is not above the customer
        svc.decide("APPROVER-SUB2", False, cr["change_request_id"], True, "")
    assert elsewhere.value.metadata["required_level"] == "SUB_BRANCH"
    assert svc.decide("APPROVER-SUB", False, cr["change_request_id"], True, "")["status"] == "APPROVED"
    assert managers(svc, "A") == {("WEALTH_MANAGER", other)}


def test_an_approver_level_the_org_does_not_have_is_refused_by_the_ruleset_check(svc):
    with pytest.raises(InvalidArgument) as refused:
        publish_policy(svc, approver_level="HEAD_OFFICE")
    assert [path for path, _ in refused.value.violations] == ["document.parameters.approver_level"]


# --- group books -----------------------------------------------------------------------------

def _payroll(svc):
    org(svc)
    team(svc, ("LM-111", "OUT-111", "LOBBY_MANAGER"), ("LM-121", "OUT-121", "LOBBY_MANAGER"),
         ("WM-11", "SUB-11", "WEALTH_MANAGER"), ("WM-BR", "BR-1", "WEALTH_MANAGER"))
    customers(svc, [
        ("E1-A", "AFFLUENT", "OUT-111", {"segments": ("PAYROLL",), "group_keys": {"payroll_employer_id": "E1"}}),
        ("E1-B", "AFFLUENT", "OUT-112", {"segments": ("PAYROLL",), "group_keys": {"payroll_employer_id": "E1"}}),
        ("E2-A", "AFFLUENT", "OUT-111", {"segments": ("PAYROLL",), "group_keys": {"payroll_employer_id": "E2"}}),
        ("E1-C", "AFFLUENT", "OUT-121", {"segments": ("PAYROLL",), "group_keys": {"payroll_employer_id": "E1"}}),
        ("M-1", "MASS", "OUT-111", {"segments": ("MERCHANT",), "group_keys": {"merchant_market_id": "MKT-7"}}),
    ])


def test_a_group_book_by_employer_within_the_claimers_unit(svc):
    _payroll(svc)
    claim, covered = svc.claim_group("ops", "WM-11", "PAYROLL", {"payroll_employer_id": "E1"}, "")
    assert covered == 2 and claim["scope_branch_id"] == "SUB-11"  # E1-C is in another sub-branch
    claims, size, ids, token = svc.get_group_book("WM-11", "PAYROLL", 1, "")
    assert (size, ids, [c["claim_id"] for c in claims]) == (2, ["E1-A"], [claim["claim_id"]])
    assert svc.get_group_book("WM-11", "PAYROLL", 1, token)[2:] == (["E1-B"], "")
    assert ("GROUP", "WM-11") in {(m.kind, m.staff_id) for m in svc.customer_managers("E1-B")}
    assert "WM-11" not in {m.staff_id for m in svc.customer_managers("E2-A")}
    _, covered = svc.claim_group("ops", "LM-111", "MERCHANT", {"merchant_market_id": "MKT-7"}, "")
    assert covered == 1


def test_claims_conflict_only_where_their_scopes_overlap(svc):
    _payroll(svc)
    assert svc.claim_group("ops", "LM-111", "PAYROLL", {}, "")[1] == 2   # OUT-111: E1-A, E2-A
    assert svc.claim_group("ops", "LM-121", "PAYROLL", {}, "")[1] == 1   # another sub-branch: E1-C
    with pytest.raises(FailedPrecondition) as overlap:  # the 分行 covers both outlets
        svc.claim_group("ops", "WM-BR", "PAYROLL", {"payroll_employer_id": "E1"}, "")
    assert overlap.value.reason == "CONFLICT" and overlap.value.metadata["staff_id"] in {"LM-111", "LM-121"}
    # A scope beside the outlet's overlaps nothing; inside it, another employer still overlaps
    # the outlet's claim on every employer.
    svc.claim_group("ops", "WM-11", "PAYROLL", {"payroll_employer_id": "E1", "home_branch_id": "OUT-112"}, "")
    with pytest.raises(FailedPrecondition):
        svc.claim_group("ops", "WM-11", "PAYROLL", {"payroll_employer_id": "E9", "home_branch_id": "OUT-111"}, "")
    # A retry of one's own claim changes nothing.
    assert svc.claim_group("ops", "LM-111", "PAYROLL", {}, "")[0]["staff_id"] == "LM-111"


def test_the_selector_vocabulary_is_the_policys_and_grows_without_a_release(svc):
    _payroll(svc)
    with pytest.raises(InvalidArgument) as unknown:
        svc.claim_group("ops", "WM-11", "PAYROLL", {"industry": "steel"}, "")
    assert "payroll_employer_id" in unknown.value.message
    with pytest.raises(InvalidArgument):
        svc.claim_group("ops", "WM-11", "PAYROLL", {"payroll_employer_id": ""}, "")
    with pytest.raises(NotFound):
        svc.claim_group("ops", "WM-11", "PAYROLL", {"home_branch_id": "NOWHERE"}, "")
    assert svc.get_group_book("WM-11", "PAYROLL", 0, "")[0] == []  # nothing was stored
    publish_policy(svc, group_selectors=["tier", "home_branch_id", "payroll_employer_id", "industry"])
    customers(svc, [("S-1", "AFFLUENT", "OUT-111", {"segments": ("PAYROLL",), "group_keys": {
        "payroll_employer_id": "E3", "industry": "steel"}})])
    assert svc.claim_group("ops", "WM-11", "PAYROLL", {"industry": "steel"}, "")[1] == 1


# --- overflow upward -------------------------------------------------------------------------

def test_when_the_sub_branch_advisors_are_full_the_branch_advisor_takes_the_customer(svc):
    org(svc)
    team(svc, ("WA-SUB", "SUB-11", "WEALTH_ADVISOR"), ("WA-BR", "BR-1", "WEALTH_ADVISOR"),
         ("HEAD", "SUB-11", "BRANCH_HEAD"), ("WM", "SUB-11", "WEALTH_MANAGER"))
    publish_policy(svc, books={"WEALTH_ADVISOR": {"initial": 2, "max": 3}, "WEALTH_MANAGER": {"initial": 0, "max": 0}})
    customers(svc, [(f"PB{i}", "PRIVATE_BANKING", "OUT-111") for i in range(5)])
    svc.run_assignment("ops")
    assert (svc.get_book("WA-SUB", 0, "").size, svc.get_book("WA-BR", 0, "").size) == (3, 2)
    assert svc.list_unplaced("", 0, "")[0] == []


def test_how_far_to_overflow_is_policy_and_the_reason_names_the_units_tried(svc, clock):
    org(svc)
    team(svc, ("LM-O", "OUT-111", "LOBBY_MANAGER"), ("LM-S", "SUB-11", "LOBBY_MANAGER"),
         ("LM-B", "BR-1", "LOBBY_MANAGER"))
    publish_policy(svc, books={"LOBBY_MANAGER": {"initial": 1, "max": 1}}, overflow_levels=1)
    customers(svc, [(f"C{i}", "AFFLUENT", "OUT-111") for i in range(4)])
    run = svc.run_assignment("ops")
    assert {s: svc.get_book(s, 0, "").size for s in ("LM-O", "LM-S", "LM-B")} == {"LM-O": 1, "LM-S": 1, "LM-B": 0}
    assert [(u["customer_id"], u["reason"], u["tried"]) for u in run.unplaced] == [
        ("C2", "ALL_BOOKS_FULL", ["OUT-111", "SUB-11"]), ("C3", "ALL_BOOKS_FULL", ["OUT-111", "SUB-11"])]
    rows, _ = svc.list_unplaced("SUB-11", 0, "")
    assert [(r["customer_id"], r["reason"], r["tried"]) for r in rows] == [
        ("C2", "ALL_BOOKS_FULL", "OUT-111,SUB-11"), ("C3", "ALL_BOOKS_FULL", "OUT-111,SUB-11")]
    first_seen = rows[0]["since"]
    assert first_seen == clock()
    clock.advance(hours=1)
    svc.run_assignment("ops")
    assert svc.list_unplaced("", 0, "")[0][0]["since"] == first_seen  # still unplaced since then
    assert svc.list_unplaced("SUB-12", 0, "")[0] == []
    publish_policy(svc, books={"LOBBY_MANAGER": {"initial": 1, "max": 1}}, overflow_levels=2)
    svc.run_assignment("ops")
    rows, _ = svc.list_unplaced("", 0, "")
    assert [(r["customer_id"], r["tried"]) for r in rows] == [("C3", "OUT-111,SUB-11,BR-1")]


# --- honest requests -------------------------------------------------------------------------

def _locked(svc):
    org(svc)
    team(svc, ("LM-1", "OUT-111", "LOBBY_MANAGER"), ("LM-2", "OUT-111", "LOBBY_MANAGER"),
         ("LOAN-1", "OUT-111", "LOAN_MANAGER"), ("WM-1", "SUB-11", "WEALTH_MANAGER"))
    customers(svc, [("T", "AFFLUENT", "OUT-111"), ("G", "AFFLUENT", "OUT-111"), ("S", "AFFLUENT", "OUT-111")])
    svc.run_assignment("ops")
    svc.open_lock_period("approver", "2026", "BR-1", "2026-01-01", "2026-12-31")


def causes(svc, customer_id):
    return {(r["action"], r["cause"]) for r in pending(svc, customer_id)}


def test_a_suggestion_names_its_real_cause(svc):
    _locked(svc)
    customers(svc, [("T", "WEALTH", "OUT-111", {"from_tier": "AFFLUENT"}),
                    ("G", "AFFLUENT", "OUT-111", {"from_tier": "AFFLUENT", "has_personal_loan": True})])
    svc.run_assignment("system", only_changed=True)
    assert causes(svc, "T") == {("ADD", "TIER_CHANGE"), ("REMOVE", "TIER_CHANGE")}
    assert causes(svc, "G") == {("ADD", "GROUP_CHANGE"), ("REMOVE", "GROUP_CHANGE")}
    assert "tier" in pending(svc, "T")[0]["reason"] and "groups" in pending(svc, "G")[0]["reason"]
    holder = next(s for r, s in managers(svc, "S"))
    svc.upsert_staff("hr", holder, "OUT-111", "LOBBY_MANAGER", False)
    assert svc.pending_changes(10) >= 1  # the automatic pass picks their customers up
    svc.run_assignment("system", only_changed=True)
    [moved] = pending(svc, "S")
    assert (moved["action"], moved["cause"], moved["from_staff_id"]) == ("TRANSFER", "STAFF_DEACTIVATED", holder)
    assert "deactivated" in moved["reason"]


def test_a_book_over_its_max_suggests_moving_the_excess(svc):
    _locked(svc)
    publish_policy(svc, books={"LOBBY_MANAGER": {"initial": 1, "max": 1}})
    svc.upsert_staff("hr", "LM-3", "OUT-111", "LOBBY_MANAGER", True)
    svc.run_assignment("ops")
    over = [r for c in ("T", "G", "S") for r in pending(svc, c)]
    assert [(r["action"], r["cause"], r["to_staff_id"]) for r in over] == [("TRANSFER", "BOOK_OVER_MAX", "LM-3")]


def test_the_maker_sees_which_request_superseded_theirs(svc):
    _locked(svc)
    first = svc.create_change_request("maker-1", "T", "TRANSFER", managers(svc, "T").pop()[1],
                                      "LM-2" if ("LOBBY_MANAGER", "LM-1") in managers(svc, "T") else "LM-1", "")
    second = svc.create_change_request("maker-2", "T", "REMOVE", managers(svc, "T").pop()[1], "", "leaving")
    mine = [r for r in svc.list_change_requests("", "", "T", 0, "")[0] if r["requested_by"] == "maker-1"]
    assert [(r["status"], r["superseded_by"], r["cause"]) for r in mine] == [
        ("SUPERSEDED", second["change_request_id"], "MANUAL")]
    assert first["change_request_id"] != second["change_request_id"]


# --- the reads -------------------------------------------------------------------------------

def test_a_branch_sees_its_tree_and_staff_paged(svc):
    org(svc)
    team(svc, ("LM-1", "OUT-111", "LOBBY_MANAGER"), ("LM-2", "OUT-121", "LOBBY_MANAGER"),
         ("WM-1", "SUB-11", "WEALTH_MANAGER"))
    rows, token = svc.list_branches("SUB-11", 2, "")
    assert [r["branch_id"] for r in rows] == ["OUT-111", "OUT-112"]
    assert [r["branch_id"] for r in svc.list_branches("SUB-11", 2, token)[0]] == ["SUB-11"]
    assert len(svc.list_branches("", 0, "")[0]) == 7
    assert [r["staff_id"] for r in svc.list_staff("SUB-11", "", 0, "")[0]] == ["LM-1", "WM-1"]
    assert [r["staff_id"] for r in svc.list_staff("BR-1", "LOBBY_MANAGER", 0, "")[0]] == ["LM-1", "LM-2"]
    for bad in (lambda: svc.list_staff("NOWHERE", "", 0, ""), lambda: svc.list_unplaced("NOWHERE", 0, ""),
                lambda: svc.list_lock_periods("NOWHERE", 0, ""), lambda: svc.get_group_book("NOBODY", "P", 0, "")):
        with pytest.raises(NotFound):
            bad()
    for bad in (lambda: svc.list_branches("", -1, ""), lambda: svc.list_staff("", "", 0, "garbage"),
                lambda: svc.get_group_book("LM-1", "", 0, "")):
        with pytest.raises(InvalidArgument):
            bad()
