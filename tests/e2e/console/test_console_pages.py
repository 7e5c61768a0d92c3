"""The console's read pages in a real browser against the real suite on PostgreSQL:
Books with the branch reads of issue 12 (lock periods, group books, unplaced
customers), the Overview's server-drawn charts, and the customer's entitlements
and the benefits catalog. Figures on the pages are checked against the
services' own answers over gRPC; every page is checked for console errors and
accessible labels, and its screenshot kept under tests/artifacts/console/."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from kequn.assignment.v1 import assignment_pb2 as apb
from kequn.benefits.v1 import benefits_pb2 as bpb
from kequn.tiering.v1 import tiering_pb2 as tpb

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def cells(page, selector: str) -> list[list[str]]:
    return page.locator(selector).evaluate(
        "t => [...t.tBodies[0].rows].map(r => [...r.cells].map(c => c.innerText.trim()))")


def test_a_manager_sees_lock_periods_group_books_and_the_unplaced_customers_of_the_branch(world, person):
    staff = person("branch_staff")
    page = staff.go("/books?staff_id=WM-1")
    assert page.locator("#book-branch").inner_text() == "SUB-11"
    assert page.locator("#lock-status").inner_text() == "Locked (lock period)"
    # The lock period on BR-1 locks SUB-11 too: shown with its dates, in force.
    [period] = [r for r in cells(page, "#lock-periods") if r[0] == "2026"]
    assert period[1:4] == ["BR-1", "2026-01-01", "2099-12-31"] and "in force now" in period[4]

    # WM-1's payroll group book by employer, with the customer it covers.
    group = page.locator("#group-book-PAYROLL")
    assert "payroll_employer_id=E-CONSOLE" in group.inner_text()
    assert "CP-1" in group.locator(".ids").inner_text().split()

    # The unplaced customers of the branch, with the reason in words and since when.
    [unplaced] = [r for r in cells(page, "#unplaced") if r[0].startswith("CU-1")]
    assert unplaced[1:3] == ["AFFLUENT", "LOAN_MANAGER"]
    assert unplaced[3].startswith("No staff of the needed role in reach.") and "NO_STAFF_OF_ROLE" in unplaced[3]
    expected = world.stub("assignment", "operations").ListUnplaced(apb.ListUnplacedRequest(branch_id="SUB-11"))
    since = next(u.since for u in expected.unplaced if u.customer_id == "CU-1")
    shown = datetime.fromtimestamp(since.seconds, ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M")
    assert unplaced[4] == shown

    # Every book of the branch against its max, as GetBook says.
    rows = {r[0].split()[0]: r for r in cells(page, "#branch-books")}
    for staff_id in ("WM-1", "WM-2"):
        book = world.stub("assignment", "operations").GetBook(apb.GetBookRequest(staff_id=staff_id))
        assert rows[staff_id][3].startswith(f"{book.size} / {book.max_size}"), rows[staff_id]
    staff.check_page("books-branch")

    # Asked for one group: a group the person holds no claim on says so.
    page = staff.go("/books?staff_id=WM-1&group=MERCHANT")
    assert "No group books on these groups. (MERCHANT)" in page.locator("#no-group-books").inner_text()
    staff.check_page("books-no-group")


def test_the_overview_draws_tiers_book_fill_stock_and_budget_as_the_services_count_them(world, person):
    benefits = world.stub("benefits", "operations")
    benefits.UpsertBenefit(bpb.UpsertBenefitRequest(benefit=bpb.Benefit(
        benefit_id="CONSOLE_GIFT", name="Console test gift", kind="GIFT", eligibility_rule="benefit.lobby_gift",
        physical=True, active=True), request_id="console-gift"))
    benefits.AdjustInventory(bpb.AdjustInventoryRequest(benefit_id="CONSOLE_GIFT", delta=7, reason="opening stock",
                                                        request_id="console-gift-stock"))
    groups = sorted({b.budget_group for b in benefits.ListBenefits(bpb.ListBenefitsRequest(page_size=1000)).benefits
                     if b.budget_group})
    assert groups, "the catalog has a benefit charged to a budget"
    month = datetime.now(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")
    benefits.SetBudget(bpb.SetBudgetRequest(group=groups[0], period=month, amount_fen=123_456,
                                            request_id="console-budget"))

    ops = person("operations")
    page = ops.go("/overview")
    for chart in ("#tiers", "#fill", "#stock", "#budgets"):
        assert page.locator(f"{chart} svg[role=img]").count() == 1, chart

    # Tiers: each customer's tier as GetCustomerTier answers it, counted.
    tiering = world.stub("tiering", "operations")
    customers = {c.customer_id for c in tiering.ListTierChanges(tpb.ListTierChangesRequest(page_size=1000)).changes}
    expected: dict[str, int] = {}
    for customer_id in customers:
        tier = tiering.GetCustomerTier(tpb.GetCustomerTierRequest(customer_id=customer_id)).tier
        expected[tier] = expected.get(tier, 0) + 1
    shown = {cell.get_attribute("data-tier"): int(cell.inner_text()) for cell in page.locator("#tiers td").all()}
    assert shown == expected and expected["WEALTH"] >= 8 and expected["AFFLUENT"] >= 2

    # Book fill by role: the wealth managers' books as GetBook counts them, against their caps.
    assignment = world.stub("assignment", "operations")
    wms = assignment.ListStaff(apb.ListStaffRequest(role="WEALTH_MANAGER")).staff
    books = [assignment.GetBook(apb.GetBookRequest(staff_id=s.staff_id)) for s in wms if s.active]
    row = page.locator('#fill-table tr[data-role="WEALTH_MANAGER"]')
    assert int(row.locator(".customers").inner_text()) == sum(b.size for b in books)
    assert int(row.locator(".capacity").inner_text()) == sum(b.max_size for b in books)

    # Stock and budget left.
    assert page.locator('#stock-table tr[data-benefit="CONSOLE_GIFT"] .available').inner_text() == "7"
    budget = page.locator(f'#budget-table tr[data-group="{groups[0]}"]')
    assert budget.locator(".left").inner_text() == "¥1,234.56" and month in budget.inner_text()
    ops.check_page("overview")

    page.get_by_role("button", name="Language: 中文").click()
    page.wait_for_load_state()
    assert page.locator("#tiers-title").inner_text().startswith("客户层级分布")
    assert page.locator("#tiers svg").get_attribute("aria-label") == "客户层级分布"
    ops.check_page("overview-zh")


def test_a_customers_entitlements_say_why_how_many_where_and_whether_in_stock_and_the_catalog_explains(
        world, person):
    expected = world.stub("benefits", "operations").ListEntitlements(bpb.ListEntitlementsRequest(customer_id="C3"))
    assert expected.entitlements, "a wealth customer has entitlements"
    staff = person("branch_staff")
    page = staff.go("/customers?customer_id=C3")
    for e in expected.entitlements:
        row = page.locator(f'#entitlements tr[data-benefit="{e.benefit_id}"]')
        assert row.locator(".why").inner_text() == (e.reason_text or e.reason)
        left = row.locator(".left").inner_text()
        if e.remaining < 0:
            assert left.startswith("unlimited")
        else:
            period = bpb.QuotaPeriod.Name(e.quota_period).removeprefix("QUOTA_PERIOD_").lower()
            assert left.startswith(f"{e.remaining} left ") and (period in left or "today" in left), left
        assert row.locator(".stock").inner_text() == ("yes" if e.in_stock else "out of stock")
    staff.check_page("customers-entitlements")

    first = expected.entitlements[0]
    page.locator(f'#entitlements tr[data-benefit="{first.benefit_id}"] a').click()
    page.wait_for_load_state()
    benefit = world.stub("benefits", "operations").GetBenefit(bpb.GetBenefitRequest(benefit_id=first.benefit_id))
    assert page.locator("#eligibility").inner_text() == (benefit.benefit.eligibility_text
                                                         or benefit.benefit.eligibility_rule)
    staff.check_page("benefit")

    page = staff.go("/benefits")
    listed = {b.benefit_id for b in world.stub("benefits", "operations").ListBenefits(
        bpb.ListBenefitsRequest(page_size=50)).benefits}
    shown = {r.get_attribute("data-benefit") for r in page.locator("#catalog tbody tr").all()}
    assert shown == listed
    staff.check_page("benefits")

    page = staff.go("/benefits/NO_SUCH_BENEFIT")
    assert "It does not exist" in page.locator(".flash.error").inner_text()
    staff.answered(404)
