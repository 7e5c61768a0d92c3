"""The scoring demo scores exactly the people assignment's demo creates.

Services never import each other, so scoring's demo repeats assignment's small id
scheme; this test (tests may import both) fails the day the two drift apart."""
from services.assignment.demo import staff_rows
from services.scoring.demo import ROLES, demo_staff


def test_demo_scores_assignment_demo_staff_with_their_roles_and_branches():
    scored_roles = set(ROLES)
    assignment = {(staff, branch, role) for staff, branch, role in staff_rows() if role in scored_roles}
    assert sorted(demo_staff()) == sorted(assignment)
    assert len(demo_staff()) == len(set(demo_staff()))   # nobody twice
    assert {role for _, _, role in demo_staff()} == scored_roles  # every card has people


def test_demo_staff_of_one_role():
    managers = demo_staff("WEALTH_MANAGER")
    assert {role for _, _, role in managers} == {"WEALTH_MANAGER"}
    assert ("WM-06-3", "SUB-06", "WEALTH_MANAGER") in managers and len(managers) == 30
