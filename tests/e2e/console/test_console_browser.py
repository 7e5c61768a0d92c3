"""The console in a real browser (Debian's Chromium through Playwright) against
the real suite on PostgreSQL: people sign in with their own tokens and do
their work; what they do is recorded under their names. Every page visited is
checked for console errors and accessible labels, and its screenshot kept
under tests/artifacts/console/."""
from __future__ import annotations

import csv
import io
from decimal import ROUND_HALF_UP
from decimal import Decimal as D

import pytest

from kequn.assignment.v1 import assignment_pb2 as apb
from kequn.rules.v1 import rules_pb2 as rpb
from kequn.scoring.v1 import scoring_pb2 as spb

from .conftest import ARTIFACTS, PERIOD, keep_docs_screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def other_wm(staff_id: str) -> str:
    return "WM-2" if staff_id == "WM-1" else "WM-1"


def row_of(page, change_request_id: str):
    return page.locator(f'[id="cr-{change_request_id}"]')


def test_an_approver_approves_a_request_and_the_book_changes(world, person):
    customer = "C1"
    source = world.manager(customer)
    target = other_wm(source)
    cr = world.request_change("branch_staff", customer, target, "closer to the customer's office")

    approver = person("branch_approver")
    page = approver.go(f"/books?staff_id={target}")
    before = int(page.locator("#book-size").inner_text())
    assert customer not in page.locator("#book-customers").inner_text().split()
    assert page.locator("#lock-status").inner_text() == "Locked (lock period)"
    approver.check_page("books")

    page = approver.go("/approvals")
    # Why these wait for a decision: the lock period in force on the branch, with its dates.
    assert "2026 (BR-1, 2026-01-01 – 2099-12-31)" in page.locator("#locked-by").inner_text()
    row = row_of(page, cr.change_request_id)
    text = row.inner_text()
    for expected in (customer, "WEALTH", "TRANSFER", f"{source} → {target}", "closer to the customer's office",
                     "branch_staff", f"{target}: {before} → {before + 1}", f"{source}:"):
        assert expected in text, (expected, text)
    row.get_by_label("Comment").fill("agreed at the branch meeting")
    row.get_by_label("Comment").press("Enter")  # Enter in the comment decides nothing
    assert world.status_of(cr.change_request_id).status == apb.CHANGE_REQUEST_STATUS_PENDING
    assert row.get_by_label("Comment").input_value() == "agreed at the branch meeting"
    approver.check_page("approvals")
    keep_docs_screenshot(ARTIFACTS / "approvals.png")

    row.get_by_role("button", name="Approve").click()
    page.wait_for_load_state()
    assert page.locator(".flash.ok").inner_text() == f"Approved: change request {cr.change_request_id} is applied."
    assert row_of(page, cr.change_request_id).count() == 0

    page = approver.go(f"/books?staff_id={target}")
    assert int(page.locator("#book-size").inner_text()) == before + 1
    assert customer in page.locator("#book-customers").inner_text().split()
    decided = world.status_of(cr.change_request_id)
    assert decided.status == apb.CHANGE_REQUEST_STATUS_APPROVED
    assert decided.decided_by == "branch_approver" and decided.requested_by == "branch_staff"
    assert decided.decision_comment == "agreed at the branch meeting"
    assert world.manager(customer) == target
    assert approver.errors == []


def test_a_makers_own_request_is_refused_in_words(world, person):
    customer = "C2"
    source = world.manager(customer)
    approver = person("branch_approver")

    # The approver, as a maker, asks for a transfer on the customer's page...
    page = approver.go(f"/customers?customer_id={customer}")
    form = page.locator("#request-change")
    form.get_by_label("Action").select_option("TRANSFER")
    form.get_by_label("From staff id").fill(source)
    form.get_by_label("To staff id").fill(other_wm(source))
    form.get_by_label("Reason").fill("my own idea")
    approver.check_page("customers-request")
    form.get_by_role("button", name="Send the request").click()
    page.wait_for_load_state()
    sent = page.locator(".flash.ok").inner_text()
    assert sent.startswith("Change request ") and sent.endswith(" is waiting for an approver.")
    cr = world.status_of(sent.removeprefix("Change request ").removesuffix(" is waiting for an approver."))
    assert cr.requested_by == "branch_approver" and cr.reason == "my own idea"
    assert cr.status == apb.CHANGE_REQUEST_STATUS_PENDING

    # ...and cannot approve it: the refusal is shown in words, nothing changes.
    page = approver.go("/approvals")
    row = row_of(page, cr.change_request_id)
    assert "your own request" in row.inner_text()
    row.get_by_role("button", name="Approve").click()
    page.wait_for_load_state()
    refusal = page.locator(".flash.error").inner_text()
    assert refusal.startswith(f"Refused ({cr.change_request_id}):")
    # In words, with the reason the service sent.
    assert "You cannot decide a request you made yourself" in refusal and "[SELF_APPROVAL]" in refusal, refusal
    approver.check_page("approvals-refused")
    assert world.status_of(cr.change_request_id).status == apb.CHANGE_REQUEST_STATUS_PENDING
    assert world.manager(customer) == source


def test_hr_downloads_a_finalized_period_and_its_numbers_equal_list_scores(world, person, tmp_path):
    hr = person("hr")
    page = hr.go("/scores")
    page.get_by_label("Period id").fill(PERIOD)
    page.get_by_label("Finalized only").check()
    page.get_by_role("button", name="Show").click()
    page.wait_for_load_state()
    assert page.locator("#scores-table tbody tr").count() == 7
    hr.check_page("scores")

    page.get_by_role("link", name="RM-3", exact=True).click()
    page.wait_for_load_state()
    indicators = page.locator("#indicators").inner_text()
    assert "calls_made" in indicators
    hr.check_page("score")

    page = hr.go(f"/scores?period_id={PERIOD}")
    with page.expect_download() as download:
        page.locator("#csv-link").click()
    saved = tmp_path / "scores.csv"
    download.value.save_as(saved)
    assert download.value.suggested_filename == f"scores-{PERIOD}.csv"
    rows = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8"))))

    expected, token = [], ""
    stub = world.stub("scoring", "hr")
    while True:
        reply = stub.ListScores(spb.ListScoresRequest(period_id=PERIOD, finalized_only=True, page_token=token))
        expected += reply.scores
        token = reply.next_page_token
        if not token:
            break
    assert [(r["staff_id"], r["total"], r["rank"], r["peer_group_size"], r["revision"], r["status"]) for r in rows] == \
        [(s.staff_id, s.total, str(s.rank), str(s.peer_group_size), str(s.revision), "FINALIZED") for s in expected]
    assert len(rows) == 7
    # The summary by role and branch agrees with the same numbers.
    page = hr.go(f"/scores?period_id={PERIOD}")
    summary = page.locator("#scores-summary tbody tr").all_inner_texts()
    by_branch = {}
    for s in expected:
        by_branch.setdefault(s.branch_id, []).append(D(s.total))
    assert summary == [f"REMOTE_MANAGER\t{b}\t{len(t)}\t{(sum(t) / len(t)).quantize(D('0.01'), ROUND_HALF_UP)}\t"
                       f"{min(t)}\t{max(t)}" for b, t in sorted(by_branch.items())]


def test_a_rule_owner_uploads_a_version_runs_its_examples_and_sees_the_impact_on_a_sample(world, person, tmp_path):
    active = world.rules("tiering", "rule_admin").GetRuleset(rpb.GetRulesetRequest(name="tiering.tiers"))
    document = active.ruleset_version.document
    assert "downgrade_grace_evaluations: 3" in document
    candidate = document.replace("downgrade_grace_evaluations: 3", "downgrade_grace_evaluations: 2")

    owner = person("rule_admin")
    page = owner.go("/rules")
    owner.check_page("rules")
    page.get_by_role("link", name="tiering.tiers", exact=True).click()
    page.wait_for_load_state()
    assert "v1" in page.locator("#versions").inner_text()
    assert page.get_by_label("Document (YAML)").input_value() == document  # to edit, like `kequn rules export`
    owner.check_page("ruleset")

    # A broken document is refused, with the reason in words and where the problem is.
    page.get_by_label("Document (YAML)").fill("name: tiering.tiers\nbands: [")
    page.get_by_role("button", name="Upload a new version").click()
    page.wait_for_load_state()
    assert "Something sent is not valid." in page.locator(".flash.error").first.inner_text()
    owner.answered(400)

    page.get_by_label("Document (YAML)").fill(candidate)
    page.get_by_label("Comment").fill("shorter downgrade grace")
    page.get_by_role("button", name="Upload a new version").click()
    page.wait_for_load_state()
    flash = page.locator(".flash.ok").inner_text()
    assert flash.startswith("Stored as version ") and flash.endswith(" (draft).")
    version = int(flash.removeprefix("Stored as version ").removesuffix(" (draft)."))
    assert page.locator("#version-status").inner_text() == "DRAFT"
    stored = world.rules("tiering", "rule_admin").GetRuleset(rpb.GetRulesetRequest(name="tiering.tiers",
                                                                                   version=version))
    assert stored.ruleset_version.created_by == "rule_admin" and stored.ruleset_version.document == candidate

    page.get_by_role("button", name="Run its examples").click()
    page.wait_for_load_state()
    examples = world.rules("tiering", "rule_admin").TestRuleset(rpb.TestRulesetRequest(name="tiering.tiers",
                                                                                       version=version)).results
    assert len(examples) > 5
    assert page.locator("#examples-summary").inner_text() == f"All {len(examples)} examples pass."
    assert page.locator("#examples tbody tr").count() == len(examples)

    page.get_by_role("textbox", name="Sample").fill("\n".join(
        f'{{"customer_id": "S{i}", "annual_avg_aum_fen": {aum}}}'
        for i, aum in enumerate((500_000, 6_000_000, 30_000_000, 700_000_000))))
    page.get_by_role("button", name="Simulate", exact=True).click()
    page.wait_for_load_state()
    assert "of 4 change" in page.locator("#simulation-summary").inner_text()
    heatmap = page.locator("svg.heatmap").first
    assert heatmap.get_attribute("role") == "img" and "Migration against version" in heatmap.get_attribute("aria-label")
    owner.check_page("rule-version")

    page = owner.go(f"/rules/tiering/tiering.tiers/diff?from={active.ruleset_version.version}&to={version}")
    diff = page.locator("#diff").inner_text()
    assert "-  downgrade_grace_evaluations: 3" in diff and "+  downgrade_grace_evaluations: 2" in diff
    owner.check_page("rule-diff")

    # The same candidate again, as a file: a further draft with the same document.
    path = tmp_path / "tiers.yaml"
    path.write_text(candidate, encoding="utf-8")
    page = owner.go("/rules/tiering/tiering.tiers")
    page.get_by_label("…or a file").set_input_files(str(path))
    page.get_by_role("button", name="Upload a new version").click()
    page.wait_for_load_state()
    assert page.locator(".flash.ok").inner_text() == f"Stored as version {version + 1} (draft)."
    again = world.rules("tiering", "rule_admin").GetRuleset(rpb.GetRulesetRequest(name="tiering.tiers",
                                                                                  version=version + 1))
    assert again.ruleset_version.document == candidate
    # The population impact and the release flow: test_console_governance.py.


def test_operations_customers_home_and_chinese_pages(world, person):
    ops = person("operations")
    page = ops.go("/operations")
    health = page.locator("#health").inner_text()
    for service in ("tiering", "assignment", "scoring", "benefits"):
        assert f"{service}: serving" in health
    assert "tiering.tiers" in page.locator("#in-force").inner_text()
    assert "lock_period.open" in page.locator("#audit").inner_text()
    ops.check_page("operations")
    ops.go("/")
    ops.check_page("home")

    staff = person("branch_staff")
    page = staff.go("/customers?customer_id=C3")
    assert page.locator("#tier").inner_text() == "WEALTH"
    # C3 has ¥280,000.00 annual avg: ¥5,720,000.00 short of private banking, to the fen.
    assert page.locator("#next-tier").inner_text().startswith("PRIVATE_BANKING: ¥5,720,000.00")
    assert "WEALTH_MANAGER" in page.locator("#managers").inner_text()
    staff.check_page("customers")

    page.get_by_role("button", name="Language: 中文").click()
    page.wait_for_load_state()
    assert page.get_by_role("navigation").get_by_role("link", name="客户").count() == 1
    assert page.locator("#tier").inner_text() == "WEALTH"
    staff.check_page("customers-zh")


def test_sign_in_page_is_accessible_and_a_wrong_token_is_refused(browser, world):
    from .conftest import Person

    visitor = Person(browser, world, "nobody")
    try:
        page = visitor.go("/signin")
        visitor.check_page("signin")
        page.get_by_label("Access token").fill("not-a-real-token")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_load_state()
        assert page.locator(".flash.error").inner_text() == "That token is unknown or expired."
        assert page.locator("#me").count() == 0
    finally:
        visitor.close()


def test_a_rule_owner_publishes_where_the_policy_allows_and_requests_a_release_where_four_eyes_apply(world, person):
    owner = person("rule_admin")
    # A scorecard needs four eyes (DOMAIN.md §7): no single-step Publish, a release request instead.
    scoring = world.rules("scoring", "rule_admin")
    card = "scoring.remote_manager"
    active_card = scoring.GetRuleset(rpb.GetRulesetRequest(name=card)).ruleset_version
    draft_card = scoring.CreateRulesetVersion(rpb.CreateRulesetVersionRequest(
        name=card, document=active_card.document + "\n# reviewed by the console test\n", comment="reviewed"
    )).ruleset_version
    page = owner.go(f"/rules/scoring/{card}/v/{draft_card.version}")
    assert page.locator("#release-policy").inner_text() == "Four eyes: a second rule owner approves each release."
    assert page.get_by_role("button", name="Publish").count() == 0
    assert page.get_by_role("button", name="Request a release").count() == 1
    owner.check_page("rule-four-eyes")

    # Customer groups are released by one owner (their kind's policy): Publish is kept.
    tiering = world.rules("tiering", "rule_admin")
    name = "tiering.groups"
    active = tiering.GetRuleset(rpb.GetRulesetRequest(name=name)).ruleset_version
    draft = tiering.CreateRulesetVersion(rpb.CreateRulesetVersionRequest(
        name=name, document=active.document + "\n# reviewed by the console test\n", comment="same groups, reviewed"
    )).ruleset_version
    page = owner.go(f"/rules/tiering/{name}/v/{draft.version}")
    assert page.locator("#release-policy").inner_text() == "Single step: a rule owner may publish directly."
    page.get_by_label("Comment", exact=True).fill("release after review")
    page.get_by_role("button", name="Publish").click()
    page.wait_for_load_state()
    assert page.locator(".flash.ok").inner_text() == f"Version {draft.version} is now in force."
    now_active = tiering.GetRuleset(rpb.GetRulesetRequest(name=name)).ruleset_version
    assert now_active.version == draft.version and now_active.published_by == "rule_admin"
    assert "in force" in page.locator("#version-status").inner_text()
    owner.check_page("rule-published")
    ops = person("operations")
    in_force = ops.go("/operations").locator("#in-force").inner_text()
    assert f"{name}\ttiering.customer_groups\t{draft.version}" in in_force
