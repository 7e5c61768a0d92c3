"""Rule governance in the console, in a real browser against the real suite:
a rule owner uploads a version, sees its impact on the stored population
(with the downstream dry runs), and requests a release with an effective
date; they cannot approve it themselves (SELF_APPROVAL, in words); a second
owner approves it; it is cancelled before its instant. And a real tier
decision's explanation shows that it is reproduced."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from kequn.rules.v1 import rules_pb2 as rpb
from kequn.tiering.v1 import tiering_pb2 as tpb

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

# Private banking from ¥300,000 instead of ¥6,000,000: the seeded C5..C8 (¥300,000-¥330,000
# annual average) move up from WEALTH; the examples move with the floor so the version is valid.
LOWER_PB = (("{value: WEALTH, from: 20000000, below: 600000000}", "{value: WEALTH, from: 20000000, below: 30000000}"),
            ("{value: PRIVATE_BANKING, from: 600000000}", "{value: PRIVATE_BANKING, from: 30000000}"),
            ("input: {annual_avg_aum_fen: 599999999}", "input: {annual_avg_aum_fen: 29999999}"),
            ("input: {annual_avg_aum_fen: 600000000}", "input: {annual_avg_aum_fen: 30000000}"))
NAME = "tiering.tiers"


def release_row(page, release_id: str):
    return page.locator(f'[id="release-{release_id}"]')


def releases(world, version: int):
    page = world.rules("tiering", "operations").ListReleases(rpb.ListReleasesRequest(name=NAME, page_size=100))
    return [r for r in page.releases if r.version == version]


def test_an_owner_sees_the_population_impact_and_requests_a_release_a_second_owner_approves_it(world, person):
    rules = world.rules("tiering", "rule_admin")
    active = rules.GetRuleset(rpb.GetRulesetRequest(name=NAME)).ruleset_version
    candidate = active.document
    for old, new in LOWER_PB:
        assert old in candidate, old
        candidate = candidate.replace(old, new)

    one = person("rule_owner_1")
    page = one.go(f"/rules/tiering/{NAME}")
    assert page.locator("#release-policy").inner_text() == "Four eyes: a second rule owner approves each release."
    page.get_by_label("Document (YAML)").fill(candidate)
    page.get_by_label("Comment", exact=True).fill("private banking from ¥300,000")
    page.get_by_role("button", name="Upload a new version").click()
    page.wait_for_load_state()
    flash = page.locator(".flash.ok").inner_text()
    version = int(flash.removeprefix("Stored as version ").removesuffix(" (draft)."))
    assert page.get_by_role("button", name="Publish").count() == 0  # four eyes: a release instead

    # --- population impact: what the service computes, shown as a heat map and in numbers
    page.get_by_role("button", name="Simulate on the stored population").click()
    page.wait_for_load_state()
    expected = None
    for message in world.rules("tiering", "rule_admin").SimulatePopulation(
            rpb.SimulatePopulationRequest(name=NAME, version=version)):
        if message.done:
            expected = message.result
    assert expected is not None and expected.changed >= 4
    summary = page.locator("#population-summary").inner_text()
    assert summary.startswith(f"{expected.changed} of {expected.total} customers change;"), summary
    heatmap = page.locator("#population svg.heatmap").first
    assert heatmap.get_attribute("role") == "img"
    assert f"Population: version {version} against version {expected.active_version}" in heatmap.get_attribute(
        "aria-label")
    cells = page.locator("#population-cells-tier tbody tr")
    shown = {tuple(cells.nth(i).locator("td").all_inner_texts()[:3]) for i in range(cells.count())}
    assert shown == {(t.from_outcome or "—", t.to_outcome or "—", str(t.count))
                     for t in expected.transitions if t.outcome_key == "tier"}
    moved = page.locator("#population-cells-tier tbody tr.moved", has_text="PRIVATE_BANKING").first
    examples = moved.locator("td").nth(3).inner_text()
    assert any(f"C{i}" in examples for i in range(5, 9)), examples
    branches = page.locator("#population-branches").inner_text()
    for b in expected.branches:
        assert f"Branch {b.branch_id or '—'}: {b.changed} of {b.total} change" in branches
    downstream = page.locator("#downstream").inner_text()
    assert f"Of the {expected.changed} customers whose outcome changes" in downstream, downstream
    for table in ("#impact-unplaced", "#impact-new-manager", "#impact-full-books", "#impact-entitlements",
                  "#impact-budgets"):
        assert page.locator(table).count() == 1, table
    one.check_page("rule-population")

    # --- request a release effective 2099-01-01 09:30 Shanghai = 01:30 UTC, exactly
    page.get_by_label("Effective from (Asia/Shanghai, empty = on approval)").fill("2099-01-01T09:30")
    page.get_by_label("Why this release").fill("lower private banking floor")
    page.get_by_role("button", name="Request a release").click()
    page.wait_for_load_state()
    assert "requested (effective 2099-01-01 09:30)" in page.locator(".flash.ok").inner_text()
    [asked] = releases(world, version)
    assert asked.status == rpb.RELEASE_STATUS_PENDING and asked.requested_by == "rule_owner_1"
    assert asked.effective_from.seconds == int(datetime(2099, 1, 1, 1, 30, tzinfo=timezone.utc).timestamp())
    row = release_row(page, asked.release_id)
    assert row.locator(".release-status").inner_text() == "PENDING"
    one.check_page("rule-release-requested")

    # --- the requester cannot approve their own release: refused, in words
    page = one.go(f"/rules/tiering/{NAME}")
    release_row(page, asked.release_id).get_by_role("button", name=f"Approve release {asked.release_id}").click()
    page.wait_for_load_state()
    refusal = page.locator(".flash.error").inner_text()
    assert "You cannot decide a request you made yourself" in refusal and "[SELF_APPROVAL]" in refusal, refusal
    assert releases(world, version)[0].status == rpb.RELEASE_STATUS_PENDING
    one.check_page("rule-release-self-approval")

    # --- a second owner approves it: scheduled, the version in force unchanged until 2099
    two = person("rule_owner_2")
    page = two.go(f"/rules/tiering/{NAME}")
    row = release_row(page, asked.release_id)
    row.get_by_label(f"Note on release {asked.release_id}").fill("checked the impact")
    row.get_by_role("button", name=f"Approve release {asked.release_id}").click()
    page.wait_for_load_state()
    assert page.locator(".flash.ok").inner_text() == f"Release {asked.release_id} approved."
    [approved] = releases(world, version)
    assert approved.status == rpb.RELEASE_STATUS_APPROVED and approved.decided_by == "rule_owner_2"
    assert approved.decision_comment == "checked the impact"
    row = release_row(page, asked.release_id)
    assert row.locator(".release-status").inner_text() == "APPROVED"
    assert "2099-01-01 09:30" in row.inner_text() and "rule_owner_2" in row.inner_text()
    assert rules.GetRuleset(rpb.GetRulesetRequest(name=NAME)).ruleset_version.version == active.version
    two.check_page("rule-release-approved")

    # --- cancelled before its instant: it never takes effect (and leaves the suite as it was)
    row.get_by_role("button", name=f"Cancel release {asked.release_id}").click()
    page.wait_for_load_state()
    assert page.locator(".flash.ok").inner_text().startswith(f"Release {asked.release_id} cancelled")
    assert releases(world, version)[0].status == rpb.RELEASE_STATUS_CANCELLED
    assert release_row(page, asked.release_id).locator(".release-status").inner_text() == "CANCELLED"
    assert rules.GetRuleset(rpb.GetRulesetRequest(name=NAME)).ruleset_version.version == active.version
    two.check_page("rule-release-cancelled")


def test_a_decision_is_explained_from_the_customers_tier_history(world, person):
    history = world.stub("tiering", "operations").ListTierChanges(tpb.ListTierChangesRequest(customer_id="C3"))
    decision_id = history.changes[-1].decision_id
    assert decision_id
    expected = world.stub("tiering", "operations").ExplainDecision(tpb.ExplainDecisionRequest(decision_id=decision_id))
    assert expected.reproduced

    ops = person("operations")
    page = ops.go("/customers?customer_id=C3")
    page.locator("#history a.explain-link", has_text=decision_id).click()
    page.wait_for_load_state()
    assert page.url.endswith(f"/decisions/{decision_id}")
    assert page.locator("#reproduced").inner_text().startswith("yes: re-evaluating the stored input")
    assert page.locator("#explain-tier").inner_text().startswith(f"{expected.previous_tier or '—'} → WEALTH")
    versions = page.locator("#explain-versions").inner_text()
    for ref in expected.rulesets:
        assert f"{ref.name} v{ref.version}" in versions
    rules = page.locator("#explain-rules tbody").inner_text()
    for fired in expected.fired_rules:
        assert fired.rule_id in rules and fired.description in rules
    assert "annual_avg_aum_fen\t28000000 (¥280,000.00)" in page.locator("#explain-input").inner_text()
    ops.check_page("explain")

    # Who may not call ExplainDecision sees no link, and the page is refused.
    staff = person("branch_staff")
    page = staff.go("/customers?customer_id=C3")
    assert page.locator("#history a.explain-link").count() == 0
    staff.go(f"/decisions/{decision_id}")
    staff.answered(403)
