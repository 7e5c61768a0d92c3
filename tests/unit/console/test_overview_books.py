"""The Overview's figures and charts, and the Books page's branch reads, with plain stand-ins."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import pytest

from services.console import charts, views
from services.console.backend import BackendError
from tests.unit.console.test_web_edge import CSRF, EN, TestClient, make, sign_in, tokens  # noqa: F401 - fixture


@dataclass
class B:
    role: str
    size: int
    max_size: int


def test_tier_distribution_counts_each_customers_latest_tier_in_ladder_order():
    latest = {"C1": "WEALTH", "C2": "MASS", "C3": "WEALTH", "C4": "PRIVATE_BANKING", "C5": "ODD", "C6": ""}
    assert views.tier_distribution(latest, ("PRIVATE_BANKING", "WEALTH", "MASS")) == [
        ("PRIVATE_BANKING", 1), ("WEALTH", 2), ("MASS", 1), ("ODD", 1)]


def test_fill_by_role_sums_capped_books_against_their_caps():
    roles = views.fill_by_role([B("WM", 10, 20), B("WM", 20, 20), B("LM", 5, 0), B("WM", 3, 0)])
    lm, wm = roles
    assert (lm.role, lm.people, lm.customers, lm.capacity, lm.uncapped, lm.percent) == ("LM", 1, 5, 0, 1, None)
    assert (wm.people, wm.customers, wm.customers_capped, wm.capacity, wm.full, wm.uncapped) == (3, 33, 30, 40, 1, 1)
    assert wm.percent == 75


def test_budget_periods_are_the_ones_a_claim_is_charged_to_most_specific_first():
    assert views.budget_periods(date(2026, 5, 9)) == ["2026-05", "2026Q2", "2026"]
    assert views.budget_periods(date(2026, 12, 31)) == ["2026-12", "2026Q4", "2026"]


def test_durations():
    assert [views.duration(s) for s in (0, 59, 60, 3600, 90000, 7 * 86400)] == ["0", "59s", "1min", "1h", "1d 1h", "7d"]


def test_charts_are_labelled_scaled_and_escaped():
    svg = str(charts.bars([("WEALTH", 2, "2 (50%)"), ("<b>", 4, "4")], "Customers by tier"))
    assert 'role="img"' in svg and 'aria-label="Customers by tier"' in svg and "<title>Customers by tier</title>" in svg
    assert f'width="{charts.BAR_W}"' in svg and f'width="{charts.BAR_W // 2}"' in svg  # 4 is the peak, 2 half of it
    assert "<b>" not in svg and "&lt;b&gt;" in svg
    shares = str(charts.shares([("WM", 40, 40, "40 / 40"), ("LM", 1, 4, "1 / 4"), ("X", 3, 0, "3")], "Fill"))
    assert shares.count('height="22" fill="#c0392b"') == 1  # only the full one is red
    assert f'width="{charts.BAR_W // 4}"' in shares


def test_the_books_page_shows_lock_period_dates_unplaced_reasons_and_branch_books(tmp_path, tokens):
    console, backend = make(tmp_path)
    client = TestClient(console.app(), headers=EN)
    sign_in(client, tokens["branch_staff"])
    page = client.get("/books?staff_id=WM-1")
    assert page.status_code == 200, page.text
    text = page.text
    assert "2026-01-01" in text and "2026-12-31" in text and "in force now" in text
    assert "Every book in reach is full." in text and "ALL_BOOKS_FULL" in text and "SUB-1 → BR-1" in text
    assert 'id="branch-books"' in text and "3 / 500" in text
    assert 'id="no-group-books"' in text
    # Every read went out with the signed-in person's token, for WM-1's branch.
    reads = {name: (tok, arg) for name, tok, arg in backend.calls}
    assert reads["ListLockPeriods"] == (tokens["branch_staff"], "SUB-1")
    assert reads["ListUnplaced"] == (tokens["branch_staff"], "SUB-1")
    assert reads["GetGroupBook"] == (tokens["branch_staff"], "WM-1")


def test_what_is_left_is_red_only_when_nothing_is_and_long_labels_are_cut_with_the_whole_in_the_title():
    svg = str(charts.shares([("a gift with a very long name indeed", 0, 5, "0 / 5"), ("B", 5, 5, "5 / 5")],
                            "Stock", left=True))
    assert svg.count('height="22" fill="#c0392b"') == 1
    assert svg.count('fill="#c0392b" font-weight="bold"') == 1  # its figures too: an empty bar is easy to miss
    assert "a gift with a ver…" in svg and "<title>a gift with a very long name indeed: 0 / 5</title>" in svg


def test_the_overview_shows_only_the_charts_the_persons_roles_may_read(tmp_path, tokens):
    console, backend = make(tmp_path)
    client = TestClient(console.app(), headers=EN)
    sign_in(client, tokens["hr"])  # hr reads staff and books, not the tier feed nor the catalog
    page = client.get("/overview")
    assert page.status_code == 200, page.text
    assert 'id="fill"' in page.text and 'data-role="WEALTH_MANAGER"' in page.text and "3 / 500" in page.text
    for hidden in ('id="tiers"', 'id="stock"', 'id="budgets"'):
        assert hidden not in page.text
    assert {name for name, _, _ in backend.calls} == {"ListStaff", "GetBook"}
    assert all(token == tokens["hr"] for _, token, _ in backend.calls)
    sign_in(client, tokens["rule_admin"])  # no chart at all: no page
    assert client.get("/overview").status_code == 403


@pytest.mark.parametrize("reason, english, chinese", [
    ("BOOK_FULL", "The receiving book is already at its maximum size.", "接收方管户包已达上限。"),
    ("SELF_APPROVAL", "You cannot decide a request you made yourself", "不能审批自己提交的申请"),
    ("NOT_APPROVER", "You are not an approver at the level this change needs", "所需层级（默认为分行）的审批人"),
    ("BOOK_LOCKED", "The book is locked for the lock period", "管户包处于锁包期"),
    ("ROLE_MISMATCH", "does not hold the role this book is for", "岗位与管户包岗位不符"),
])
def test_a_refused_decision_is_shown_in_words_in_both_languages(tmp_path, tokens, reason, english, chinese):
    console, backend = make(tmp_path)

    def refuse(token, change_request_id, approve, comment, request_id):
        backend.calls.append(("Decide", token, change_request_id))
        raise BackendError("FAILED_PRECONDITION", reason, "the service's own words")
    backend.decide_change_request = refuse
    for lang, words in (("en", english), ("zh", chinese)):
        client = TestClient(console.app(), headers={"accept-language": lang})
        sign_in(client, tokens["branch_approver"])
        csrf = CSRF.search(client.get("/books").text).group(1)
        answer = client.post("/approvals/CR-9/decide", data={"csrf_token": csrf, "decision": "approve",
                                                             "comment": "ok"}, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"] == "/approvals"
        flash = client.get("/books").text
        assert words in flash and f"[{reason}]" in flash and "the service&#39;s own words" in flash
        assert ("Decide", tokens["branch_approver"], "CR-9") in backend.calls  # as the approver


def test_unplaced_customers_and_the_branchs_books_are_paged_with_the_services_tokens(tmp_path, tokens):
    from kequn.assignment.v1 import assignment_pb2 as apb

    console, backend = make(tmp_path)
    seen = []

    def list_unplaced(token, branch_id, page_size=50, page_token=""):
        seen.append(("ListUnplaced", page_token))
        customer = "C-NEXT" if page_token == "u-2" else "C-FIRST"
        return apb.ListUnplacedResponse(unplaced=[apb.Unplaced(customer_id=customer, reason="ALL_BOOKS_FULL")],
                                        next_page_token="" if page_token else "u-2")

    def list_staff(token, branch_id="", role="", page_size=50, page_token=""):
        seen.append(("ListStaff", page_token))
        return apb.ListStaffResponse(staff=[apb.Staff(staff_id="WM-1", role="WEALTH_MANAGER", active=True)],
                                     next_page_token="" if page_token else "s-2")
    backend.list_unplaced, backend.list_staff = list_unplaced, list_staff
    client = TestClient(console.app(), headers=EN)
    sign_in(client, tokens["branch_approver"])
    first = client.get("/books?staff_id=WM-1").text
    assert "C-FIRST" in first and "unplaced_token=u-2" in first and "staff_token=s-2" in first
    second = client.get("/books?staff_id=WM-1&unplaced_token=u-2").text
    assert "C-NEXT" in second and "C-FIRST" not in second
    assert '<a href="/books?staff_id=WM-1&amp;unplaced_token=' not in second  # the last page links no further
    assert ("ListUnplaced", "u-2") in seen
