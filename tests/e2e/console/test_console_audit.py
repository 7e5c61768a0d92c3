"""Operations reads each service's audit trail and verifies its hash chains
in the console (Chromium, the real suite on PostgreSQL): an intact chain is
said to be intact chain by chain; a record changed in SQL turns the verdict
into a marked BROKEN naming the chain and the record. Other roles never see
the button, and the services refuse them anyway."""
from __future__ import annotations

import pytest
from sqlalchemy import MetaData, select, update

from services.common.audit import audit_table, default_table_name
from services.common.db import make_engine

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def test_operations_sees_each_services_trail_and_a_verified_chain(world, person):
    ops = person("operations")
    page = ops.go("/operations")
    assert page.locator("#audit-heading").inner_text() == "Audit trail: assignment"
    assert "lock_period.open" in page.locator("#audit").inner_text()

    page.get_by_role("button", name="Verify chains (assignment)").click()
    page.wait_for_load_state()
    summary = page.locator("#verify-summary").inner_text()
    chains = page.locator("#chains tbody tr")
    assert summary.startswith(f"All {chains.count()} chains are intact:"), summary
    assert chains.count() >= 2 and "BROKEN" not in page.locator("#chains").inner_text()
    assert page.locator("#chains tr.chain-ok").count() == chains.count()
    ops.check_page("operations-verified")

    page.get_by_label("Service").select_option("tiering")
    page.get_by_role("button", name="Show").click()
    page.wait_for_load_state()
    assert page.locator("#audit-heading").inner_text() == "Audit trail: tiering"
    assert "customer_tier." in page.locator("#audit").inner_text()  # the seed's evaluations, tiering's own log


def test_a_changed_record_is_shown_broken_with_its_chain_and_record(world, person):
    """Runs on scoring's log, which no other console test verifies."""
    engine = make_engine(world.suite.env["KEQUN_SCORING_DATABASE_URL"])
    log = audit_table(MetaData(), default_table_name("scoring"))
    try:
        with engine.begin() as conn:
            victim = conn.execute(select(log).order_by(log.c.id)).first()
            assert victim is not None, "the seed (periods, metrics, finalize) wrote scoring's audit trail"
            conn.execute(update(log).where(log.c.id == victim.id).values(actor="someone-else"))
    finally:
        engine.dispose()
    ops = person("operations")
    page = ops.go("/operations?service=scoring")
    page.get_by_role("button", name="Verify chains (scoring)").click()
    page.wait_for_load_state()
    assert page.locator("#verify-summary").inner_text().startswith("BROKEN: 1 of ")
    broken = page.locator("#chains tr.chain-broken")
    assert broken.count() == 1
    cells = broken.locator("td").all_inner_texts()
    assert cells[0] == str(victim.bucket) and cells[1] == "BROKEN" and cells[3] == str(victim.id)
    assert f"record {victim.id}" in cells[4]
    assert page.locator("#chains tbody tr").first.get_attribute("class") == "chain-broken bad"  # listed first
    ops.check_page("operations-chain-broken")


def test_who_may_not_read_the_trail_does_not_get_the_page(world, person):
    approver = person("branch_approver")
    response = approver.page.goto(world.url + "/operations?service=assignment&verify=1")
    assert response.status == 403
    assert approver.page.locator("#chains").count() == 0 and approver.page.locator("#verify-chain").count() == 0
    approver.answered(403)
