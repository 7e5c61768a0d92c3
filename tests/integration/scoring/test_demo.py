"""The demo scores assignment's demo staff, every role calculated, once."""
from decimal import Decimal

from services.scoring.demo import ROLES, demo_staff, load_into


def book_sizes():
    return {staff: 40 + 7 * n for n, (staff, _, _) in enumerate(demo_staff("WEALTH_MANAGER"))}


def everyone(scoring):
    return scoring.list_scores("2025", page_size=1000).scores


def test_demo_scores_exactly_the_demo_staff_once(scoring):
    scoring.books.sizes.update(book_sizes())
    assert load_into(scoring) is True
    scores = everyone(scoring)
    assert sorted((s.staff_id, s.branch_id, s.role) for s in scores) == sorted(demo_staff())
    assert {s.role for s in scores} == set(ROLES)
    assert all(s.status == "CALCULATED" and s.total != "" for s in scores)
    assert scoring.get_score("WM-06-1", "2025").peer_group_size == 3         # per sub-branch
    assert scoring.get_score("HEAD-01", "2025").peer_group_size == 10        # branch heads bank-wide
    assert load_into(scoring) is False
    assert len(everyone(scoring)) == len(scores)


def test_wealth_managers_book_counts_are_shares_of_their_real_book(scoring):
    sizes = book_sizes()
    scoring.books.sizes.update(sizes)
    load_into(scoring)
    assert set(sizes) <= set(scoring.books.calls)
    for staff, size in sizes.items():
        shown = {i.indicator_id: i for i in scoring.get_score(staff, "2025").indicators}
        for indicator in ("penetration", "maintenance"):
            assert 0 <= Decimal(shown[indicator].raw_value) <= size
            assert f"/ {size} customers in the locked book" in shown[indicator].note


def test_book_roles_wait_for_the_books_and_a_restart_finishes_them(scoring):
    scoring.books.sizes.update(book_sizes())
    asked = []
    assert load_into(scoring, books_ready=lambda: asked.append(1) or False) is True   # stopping meanwhile
    assert asked and {s.role for s in everyone(scoring)} == set(ROLES) - {"WEALTH_MANAGER"}
    before = {s.staff_id: s.calculated_at for s in everyone(scoring)}

    assert load_into(scoring, books_ready=lambda: True) is True                       # the next start
    scores = everyone(scoring)
    assert sorted((s.staff_id, s.branch_id, s.role) for s in scores) == sorted(demo_staff())
    assert all(s.calculated_at == before[s.staff_id] for s in scores if s.staff_id in before)  # not redone
