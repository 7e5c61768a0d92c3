"""ExplainDecision on a real store (SQLite and PostgreSQL): a decision is
shown with its input, versions and fired rules, and reproduces with the old
versions after later ones were published."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from services.common.errors import NotFound
from services.tiering.domain import Holding, Snapshot
from services.tiering.explain import explain
from services.tiering.service import EvaluateRequest

from .conftest import ROOT
from tests.tier_schemes import with_wealth_floor


def _evaluate(harness, **fields):
    snapshot = Snapshot(**{"customer_id": "X1", "as_of": "2026-10-31", **fields})
    return harness.service.evaluate(EvaluateRequest(snapshot))


def _version_file(tmp_path, floor: int):
    """The shipped tier scheme with the WEALTH floor moved to ``floor`` fen."""
    path = tmp_path / f"tiers_{floor}.yaml"
    path.write_text(with_wealth_floor(floor), encoding="utf-8")
    return path


def test_a_decision_is_explained_and_reproduced_after_three_later_versions(harness, tmp_path):
    first = _evaluate(harness, annual_avg_aum_fen=25_000_000, payroll_employer_id="EMP-9",
                      holdings=(Holding("B1", 20_000_000), Holding("B2", 5_000_000)), point_in_time_aum_fen=25_000_000)
    # Below the band once: the downgrade grace holds the tier (the state before matters).
    second = _evaluate(harness, as_of="2026-11-30", annual_avg_aum_fen=6_000_000,
                       holdings=(Holding("B2", 6_000_000),), point_in_time_aum_fen=6_000_000)
    assert (first.decision.tier, second.decision.tier) == ("WEALTH", "WEALTH")
    assert second.decision.downgrade_pending > 0
    for floor in (30_000_000, 24_000_000, 22_000_000):
        harness.publish(_version_file(tmp_path, floor))
    assert harness.runtime.active("tiering.tiers").version == 4

    e = explain(harness.service.session_factory, harness.runtime, first.decision_id)
    assert e.reproduced and e.difference == ""
    assert e.rulesets == (("tiering.tiers", 1), ("tiering.groups", 1))
    assert e.snapshot.annual_avg_aum_fen == 25_000_000 and e.snapshot.payroll_employer_id == "EMP-9"
    assert e.before is None and e.stored.decision == first.decision
    described = {r.rule_id: r.description for r in e.fired}
    assert "tier.WEALTH" in described and "annual_avg_aum_fen" in described["tier.WEALTH"]
    assert all(r.description for r in e.fired) and len(e.fired) == len(first.decision.fired)

    e2 = explain(harness.service.session_factory, harness.runtime, second.decision_id)
    assert e2.reproduced
    assert e2.before.tier == "WEALTH" and e2.before.home_branch_id == "B1"
    assert e2.stored.decision.downgrade_pending == second.decision.downgrade_pending
    # Today's rules would answer differently: it is the old version that reproduces it.
    now = harness.service.evaluate(EvaluateRequest(Snapshot("X2", "2026-10-31", annual_avg_aum_fen=25_000_000),
                                                   dry_run=True))
    assert (now.decision.tier, now.decision.ruleset_version) == ("WEALTH", 4)


def test_a_decision_whose_stored_input_was_altered_does_not_reproduce(harness):
    stored = _evaluate(harness, annual_avg_aum_fen=25_000_000)
    with harness.engine.begin() as conn:
        raw = conn.execute(text("SELECT input FROM tiering_decisions WHERE decision_id = :d"),
                           {"d": stored.decision_id}).scalar_one()
        conn.execute(text("UPDATE tiering_decisions SET input = :i WHERE decision_id = :d"),
                     {"i": raw.replace("25000000", "2500000", 1), "d": stored.decision_id})
    e = explain(harness.service.session_factory, harness.runtime, stored.decision_id)
    assert not e.reproduced and "tier: stored 'WEALTH'" in e.difference


def test_an_unknown_decision_is_not_found(harness):
    with pytest.raises(NotFound):
        explain(harness.service.session_factory, harness.runtime, "0" * 32)


def _groups_file(tmp_path, n: int, key_attributes: str):
    """The shipped groups ruleset naming other group-key attributes."""
    text_ = (ROOT / "rulesets" / "groups.yaml").read_text(encoding="utf-8")
    changed = text_.replace("group_key_attributes: []", f"group_key_attributes: {key_attributes}")
    assert changed != text_
    path = tmp_path / f"groups_{n}.yaml"
    path.write_text(changed, encoding="utf-8")
    return path


def test_groups_and_group_keys_reproduce_after_three_later_groups_versions(harness, tmp_path):
    harness.publish(_groups_file(tmp_path, 2, "[community_id]"))
    stored = _evaluate(harness, annual_avg_aum_fen=25_000_000, payroll_employer_id="EMP-7", is_merchant=True,
                       attributes={"merchant_market_id": "MKT-3", "community_id": "C-11", "other": "x"},
                       holdings=(Holding("B1", 25_000_000),))
    assert {"PAYROLL", "MERCHANT"} <= set(stored.decision.segments)
    for n, keys in ((3, "[]  # none"), (4, "[other]"), (5, "[community_id, other]")):
        harness.publish(_groups_file(tmp_path, n, keys))
    assert harness.runtime.active("tiering.groups").version == 5

    e = explain(harness.service.session_factory, harness.runtime, stored.decision_id)
    assert e.reproduced, e.difference
    assert e.rulesets == (("tiering.tiers", 1), ("tiering.groups", 2))
    assert dict(e.group_keys) == {"payroll_employer_id": "EMP-7", "merchant_market_id": "MKT-3",
                                  "community_id": "C-11"}
    assert any(r.ruleset == "tiering.groups" for r in e.fired)
    # The feed carried the same keys the explanation re-derives.
    with harness.engine.connect() as conn:
        fed = conn.execute(text("SELECT group_keys FROM tiering_changes WHERE decision_id = :d"),
                           {"d": stored.decision_id}).scalar_one()
    import json
    assert json.loads(fed) == dict(e.group_keys)


def test_altered_group_keys_do_not_reproduce(harness):
    stored = _evaluate(harness, annual_avg_aum_fen=25_000_000, payroll_employer_id="EMP-7")
    with harness.engine.begin() as conn:
        raw = conn.execute(text("SELECT input FROM tiering_decisions WHERE decision_id = :d"),
                           {"d": stored.decision_id}).scalar_one()
        assert raw.endswith('[["payroll_employer_id","EMP-7"]]]')
        conn.execute(text("UPDATE tiering_decisions SET input = :i WHERE decision_id = :d"),
                     {"i": raw.replace('[["payroll_employer_id","EMP-7"]]]', '[["payroll_employer_id","EMP-8"]]]'),
                      "d": stored.decision_id})
    e = explain(harness.service.session_factory, harness.runtime, stored.decision_id)
    assert not e.reproduced and "group_keys" in e.difference
