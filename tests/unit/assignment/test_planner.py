"""The planner: placement by role, caps, even fill, stability, unplaced reasons, locks."""
from __future__ import annotations

from collections import Counter

import pytest

from services.assignment.domain import (
    ALL_BOOKS_FULL, NO_HOME_BRANCH, NO_STAFF_OF_ROLE, BookSize, CustomerNeed, OrgTree, Policy, StaffMember,
    plan_assignment,
)

ORG = OrgTree({"BR-1": None, "SUB-01": "BR-1", "SUB-02": "BR-1", "OUT-001": "SUB-01", "OUT-002": "SUB-01",
               "OUT-003": "SUB-02"})
POLICY = Policy(books={"WEALTH_MANAGER": BookSize(4, 5), "WEALTH_ADVISOR": BookSize(1, 2),
                       "BRANCH_HEAD": BookSize(0, 0), "LOBBY_MANAGER": BookSize(3, 3)})


def staff(*rows):
    return [StaffMember(sid, branch, role) for sid, branch, role in rows]


def apply(plan, current):
    """The books after a plan, as customer -> role -> staff."""
    books = {c: dict(r) for c, r in current.items()}
    for m in plan.moves:
        if m.to_staff_id is None:
            books[m.customer_id].pop(m.role)
        else:
            books.setdefault(m.customer_id, {})[m.role] = m.to_staff_id
    return books


def loads_of(books):
    return Counter(s for roles in books.values() for s in roles.values())


def test_private_banking_customer_gets_nearest_person_of_each_role():
    team = staff(("HEAD-1", "SUB-01", "BRANCH_HEAD"), ("WA-1", "BR-1", "WEALTH_ADVISOR"),
                 ("WM-1", "OUT-001", "WEALTH_MANAGER"), ("WM-2", "SUB-01", "WEALTH_MANAGER"))
    pb = CustomerNeed("C1", "OUT-001", ("BRANCH_HEAD", "WEALTH_ADVISOR", "WEALTH_MANAGER"))
    plan = plan_assignment([pb], {}, team, {}, ORG, POLICY)
    assert {(m.role, m.to_staff_id) for m in plan.moves} == {
        ("BRANCH_HEAD", "HEAD-1"), ("WEALTH_ADVISOR", "WA-1"), ("WEALTH_MANAGER", "WM-1")}
    assert plan.unplaced == []


def test_fills_evenly_to_initial_then_to_max_and_never_over():
    team = staff(("WM-1", "SUB-01", "WEALTH_MANAGER"), ("WM-2", "SUB-01", "WEALTH_MANAGER"))
    customers = [CustomerNeed(f"C{i:02}", "OUT-001", ("WEALTH_MANAGER",)) for i in range(12)]
    # WM-1 already holds 3 customers of another outlet: the first new ones go to WM-2.
    plan = plan_assignment(customers, {}, team, {"WM-1": 3}, ORG, POLICY)
    placed = [m.to_staff_id for m in plan.moves]
    assert placed[:3] == ["WM-2", "WM-2", "WM-2"]
    assert plan.loads == {"WM-1": 5, "WM-2": 5}
    assert [u.reason for u in plan.unplaced] == [ALL_BOOKS_FULL] * 5
    assert [u.customer_id for u in plan.unplaced] == [f"C{i:02}" for i in range(7, 12)]


def test_initial_is_reached_by_everyone_before_anyone_goes_beyond():
    team = staff(("WM-1", "SUB-01", "WEALTH_MANAGER"), ("WM-2", "SUB-01", "WEALTH_MANAGER"))
    customers = [CustomerNeed(f"C{i:02}", "OUT-001", ("WEALTH_MANAGER",)) for i in range(4)]
    plan = plan_assignment(customers, {}, team, {"WM-1": 4, "WM-2": 1}, ORG, POLICY)
    assert [m.to_staff_id for m in plan.moves] == ["WM-2", "WM-2", "WM-2", "WM-1"]


def test_second_run_with_no_changes_moves_nobody():
    team = staff(("WM-1", "SUB-01", "WEALTH_MANAGER"), ("WM-2", "SUB-01", "WEALTH_MANAGER"),
                 ("LM-1", "OUT-003", "LOBBY_MANAGER"))
    customers = [CustomerNeed(f"C{i:02}", "OUT-001", ("WEALTH_MANAGER",)) for i in range(7)]
    customers += [CustomerNeed(f"D{i:02}", "OUT-003", ("LOBBY_MANAGER",)) for i in range(2)]
    first = plan_assignment(customers, {}, team, {}, ORG, POLICY)
    books = apply(first, {})
    second = plan_assignment(customers, books, team, loads_of(books), ORG, POLICY)
    assert second.moves == [] and second.suggestions == []
    assert second.unchanged == 9


def test_a_tier_change_moves_only_that_customer():
    team = staff(("WM-1", "SUB-01", "WEALTH_MANAGER"), ("LM-1", "OUT-001", "LOBBY_MANAGER"))
    current = {"C1": {"WEALTH_MANAGER": "WM-1"}, "C2": {"WEALTH_MANAGER": "WM-1"}}
    customers = [CustomerNeed("C1", "OUT-001", ("LOBBY_MANAGER",)), CustomerNeed("C2", "OUT-001", ("WEALTH_MANAGER",))]
    plan = plan_assignment(customers, current, team, loads_of(current), ORG, POLICY)
    assert {(m.customer_id, m.action, m.role) for m in plan.moves} == {
        ("C1", "REMOVE", "WEALTH_MANAGER"), ("C1", "ADD", "LOBBY_MANAGER")}
    assert plan.unchanged == 1


def test_customer_whose_manager_left_is_moved_to_a_colleague():
    team = [StaffMember("WM-1", "SUB-01", "WEALTH_MANAGER", active=False),
            StaffMember("WM-2", "SUB-01", "WEALTH_MANAGER")]
    current = {"C1": {"WEALTH_MANAGER": "WM-1"}}
    plan = plan_assignment([CustomerNeed("C1", "OUT-001", ("WEALTH_MANAGER",))], current, team, {"WM-1": 1}, ORG,
                           POLICY)
    [move] = plan.moves
    assert (move.action, move.from_staff_id, move.to_staff_id) == ("TRANSFER", "WM-1", "WM-2")


@pytest.mark.parametrize("home, roles, reason", [
    ("OUT-003", ("WEALTH_MANAGER",), NO_STAFF_OF_ROLE),   # nobody of the role above OUT-003
    ("OUT-001", ("LOAN_MANAGER",), NO_STAFF_OF_ROLE),     # a role with no book in the policy
    ("", ("WEALTH_MANAGER",), NO_HOME_BRANCH),
    ("OUT-999", ("WEALTH_MANAGER",), NO_HOME_BRANCH),
])
def test_unplaced_customers_are_listed_with_the_reason(home, roles, reason):
    team = staff(("WM-1", "SUB-01", "WEALTH_MANAGER"))
    plan = plan_assignment([CustomerNeed("C1", home, roles)], {}, team, {}, ORG, POLICY)
    assert [(u.customer_id, u.reason) for u in plan.unplaced] == [("C1", reason)]
    assert plan.moves == []


def test_unlimited_roles_take_everyone():
    team = staff(("HEAD-1", "SUB-01", "BRANCH_HEAD"))
    customers = [CustomerNeed(f"C{i:03}", "OUT-002", ("BRANCH_HEAD",)) for i in range(150)]
    plan = plan_assignment(customers, {}, team, {}, ORG, POLICY)
    assert len(plan.moves) == 150 and plan.unplaced == []


def test_locked_branch_suggests_instead_of_moving_and_reserves_capacity():
    team = staff(("WM-1", "SUB-01", "WEALTH_MANAGER"), ("LM-1", "OUT-001", "LOBBY_MANAGER"))
    current = {"C1": {"WEALTH_MANAGER": "WM-1"}}
    customers = [CustomerNeed("C1", "OUT-001", ("LOBBY_MANAGER",))]
    customers += [CustomerNeed(f"N{i}", "OUT-001", ("LOBBY_MANAGER",)) for i in range(3)]
    plan = plan_assignment(customers, current, team, {"WM-1": 1}, ORG, POLICY, locked_branches={"BR-1"})
    assert plan.moves == []
    assert {(m.customer_id, m.action) for m in plan.suggestions} == {
        ("C1", "REMOVE"), ("C1", "ADD"), ("N0", "ADD"), ("N1", "ADD")}
    assert [u.customer_id for u in plan.unplaced] == ["N2"]  # lobby book of 3 is spoken for


def test_deterministic_whatever_the_input_order():
    team = staff(("WM-1", "SUB-01", "WEALTH_MANAGER"), ("WM-2", "SUB-01", "WEALTH_MANAGER"))
    customers = [CustomerNeed(f"C{i:02}", "OUT-001", ("WEALTH_MANAGER",)) for i in range(9)]
    a = plan_assignment(customers, {}, team, {}, ORG, POLICY)
    b = plan_assignment(list(reversed(customers)), {}, list(reversed(team)), {}, ORG, POLICY)
    assert a.moves == b.moves and a.unplaced == b.unplaced


# --- seed details: overflow upward, over-max books, approver level, group claim scopes ---------

from services.assignment.domain import (  # noqa: E402
    BOOK_OVER_MAX, STAFF_DEACTIVATED, check_approver, claim_covers, claims_overlap)
from services.common.errors import PermissionDenied  # noqa: E402

LEVELED = OrgTree({"BR-1": None, "SUB-01": "BR-1", "SUB-02": "BR-1", "OUT-001": "SUB-01", "OUT-003": "SUB-02"},
                  {"BR-1": "BRANCH", "SUB-01": "SUB_BRANCH", "SUB-02": "SUB_BRANCH", "OUT-001": "OUTLET",
                   "OUT-003": "OUTLET"})


def test_overflow_goes_up_as_far_as_the_policy_allows_and_names_the_units_tried():
    team = staff(("LM-O", "OUT-001", "LOBBY_MANAGER"), ("LM-B", "BR-1", "LOBBY_MANAGER"))
    customers = [CustomerNeed(f"C{i}", "OUT-001", ("LOBBY_MANAGER",)) for i in range(8)]
    small = Policy(books={"LOBBY_MANAGER": BookSize(3, 3)}, overflow_levels=1)
    plan = plan_assignment(customers, {}, team, {}, LEVELED, small)
    assert plan.loads == {"LM-O": 3, "LM-B": 0}  # the 分行 is two levels up
    assert {u.tried for u in plan.unplaced} == {("OUT-001",)}
    plan = plan_assignment(customers, {}, team, {}, LEVELED, Policy(books=small.books, overflow_levels=2))
    assert plan.loads == {"LM-O": 3, "LM-B": 3}
    assert {(u.reason, u.tried) for u in plan.unplaced} == {(ALL_BOOKS_FULL, ("OUT-001", "BR-1"))}


def test_an_over_full_book_gives_its_excess_to_someone_with_room_and_keeps_it_otherwise():
    team = staff(("LM-1", "OUT-001", "LOBBY_MANAGER"))
    current = {f"C{i}": {"LOBBY_MANAGER": "LM-1"} for i in range(5)}
    customers = [CustomerNeed(c, "OUT-001", ("LOBBY_MANAGER",)) for c in current]
    policy = Policy(books={"LOBBY_MANAGER": BookSize(3, 3)})
    alone = plan_assignment(customers, current, team, {"LM-1": 5}, LEVELED, policy)
    assert (alone.moves, alone.unplaced, alone.unchanged) == ([], [], 5)  # nowhere to go: never dropped
    team += staff(("LM-2", "OUT-001", "LOBBY_MANAGER"))
    plan = plan_assignment(customers, current, team, {"LM-1": 5}, LEVELED, policy)
    assert {(m.customer_id, m.to_staff_id, m.cause) for m in plan.moves} == {
        ("C4", "LM-2", BOOK_OVER_MAX), ("C3", "LM-2", BOOK_OVER_MAX)}


def test_a_deactivated_holder_is_the_cause_of_the_move():
    team = [StaffMember("LM-1", "OUT-001", "LOBBY_MANAGER", False), StaffMember("LM-2", "OUT-001", "LOBBY_MANAGER")]
    plan = plan_assignment([CustomerNeed("C", "OUT-001", ("LOBBY_MANAGER",))], {"C": {"LOBBY_MANAGER": "LM-1"}},
                           team, {"LM-1": 1}, LEVELED, Policy(books={"LOBBY_MANAGER": BookSize(3, 3)}))
    assert [(m.from_staff_id, m.to_staff_id, m.cause) for m in plan.moves] == [("LM-1", "LM-2", STAFF_DEACTIVATED)]


@pytest.mark.parametrize("approver_branch,level,allowed", [
    ("BR-1", "BRANCH", True), ("SUB-01", "BRANCH", False), ("SUB-01", "SUB_BRANCH", True),
    ("SUB-02", "SUB_BRANCH", False), ("BR-1", "SUB_BRANCH", True), ("OUT-001", "SUB_BRANCH", False)])
def test_the_approver_sits_at_the_policy_level_or_higher_above_the_customer(approver_branch, level, allowed):
    def check():
        check_approver("APPROVER", approver_branch, "maker", "OUT-001", LEVELED, level=level)
    if allowed:
        check()
    else:
        with pytest.raises(PermissionDenied) as refused:
            check()
        assert refused.value.reason == "NOT_APPROVER" and refused.value.metadata["required_level"] == level


def test_group_claims_cover_their_scope_and_overlap_only_where_a_customer_could_be_in_both():
    assert claim_covers("PAYROLL", {"payroll_employer_id": "E1"}, "SUB-01", ["PAYROLL"],
                        {"payroll_employer_id": "E1"}, "OUT-001", LEVELED)
    assert not claim_covers("PAYROLL", {}, "SUB-02", ["PAYROLL"], {}, "OUT-001", LEVELED)
    assert not claims_overlap({}, "SUB-01", {}, "SUB-02", LEVELED)  # sibling sub-branches
    assert claims_overlap({}, "BR-1", {"payroll_employer_id": "E1"}, "OUT-001", LEVELED)
    assert not claims_overlap({"payroll_employer_id": "E2"}, "BR-1", {"payroll_employer_id": "E1"}, "SUB-01",
                              LEVELED)
