"""SimulatePopulation on tiering's stored customers (SQLite and PostgreSQL,
real worker processes): the migration matrix equals evaluating each stored
customer's latest snapshot one by one, and nothing is written."""
from __future__ import annotations

import dataclasses
from collections import Counter


from services.rules.population import ALL, PopulationSimulator
from services.tiering.domain import home_branch, project, rule_facts
from services.tiering.demo import synthetic_customers
from services.tiering.population import TieringPopulation
from services.tiering.service import EvaluateRequest

from .conftest import ROOT
from tests.tier_schemes import with_wealth_floor

N = 240


def _store_population(harness) -> dict[str, tuple]:
    """N customers evaluated and stored; 40 of them again with new figures
    (their latest snapshot is the one that counts). Returns id -> (snapshot, home)."""
    latest = {}
    customers = list(synthetic_customers(N, seed=11))
    for start in range(0, N, 100):
        outcomes = harness.service.evaluate_batch_chunk([EvaluateRequest(s) for s in customers[start:start + 100]])
        for o in outcomes:
            assert o.error is None, o.error
            latest[o.customer_id] = o.stored.decision.home_branch_id
    again = [dataclasses.replace(s, as_of="2026-11-30", annual_avg_aum_fen=s.annual_avg_aum_fen * 3 + 7)
             for s in customers[:40]]
    for o in harness.service.evaluate_batch_chunk([EvaluateRequest(s) for s in again]):
        latest[o.customer_id] = o.stored.decision.home_branch_id
    snapshots = {s.customer_id: s for s in customers}
    snapshots.update({s.customer_id: s for s in again})
    return {cid: (snapshots[cid], home) for cid, home in latest.items()}


def _one_by_one(harness, name: str, version: int, population: dict) -> tuple[Counter, Counter, Counter]:
    """The expected figures: each customer evaluated alone, active vs candidate."""
    active = harness.runtime.active(name)
    candidate = harness.runtime.version(name, version)
    cells, codes, by_branch = Counter(), Counter(), Counter()
    for cid, (snapshot, home) in population.items():
        facts = rule_facts(snapshot, home)
        before = active.evaluate(project(facts, active.loaded.compiled.fields)).outcome
        after = candidate.evaluate(project(facts, candidate.loaded.compiled.fields)).outcome
        for key in set(before) | set(after):
            b, a = before.get(key), after.get(key)
            if isinstance(b, list) or isinstance(a, list):
                for code in set(a or ()) - set(b or ()):
                    codes[(key, code, "gained")] += 1
                for code in set(b or ()) - set(a or ()):
                    codes[(key, code, "lost")] += 1
            else:
                cells[(key, str(b or ""), str(a or ""))] += 1
                by_branch[(home, key, str(b or ""), str(a or ""))] += 1
    return cells, codes, by_branch


def _draft(harness, text: str) -> int:
    return harness.runtime.admin.create(text, "author").version


def _counts(harness) -> dict:
    return {t: harness.count(t) for t in ("tiering_decisions", "tiering_customers", "tiering_changes",
                                          "rules_versions", "rules_events")}


def test_a_tier_scheme_candidate_against_every_stored_customer(harness):
    population = _store_population(harness)
    raised = with_wealth_floor(30_000_000)
    version = _draft(harness, raised)
    before = _counts(harness)
    seen = []
    simulator = PopulationSimulator(harness.runtime.admin, TieringPopulation(harness.url), workers=2)
    result = simulator.run("tiering.tiers", version, progress=lambda n, total: seen.append((n, total)))

    cells, codes, by_branch = _one_by_one(harness, "tiering.tiers", version, population)
    t = result.tally
    assert (t.total, t.skipped) == (len(population), 0)
    assert {k[1:]: n for k, n in t.cells.items() if k[0] is ALL} == dict(cells)
    assert {k: n for k, n in t.cells.items() if k[0] is not ALL} == dict(by_branch)
    assert not t.codes and not codes
    assert cells[("tier", "WEALTH", "AFFLUENT")] > 0  # the raised floor moved someone
    assert t.changed == sum(n for (_, b, a), n in cells.items() if b != a)
    for (scope, key, b, a), ids in t.examples.items():
        assert 1 <= len(ids) <= 3
        for cid in ids:
            snapshot, home = population[cid]
            assert scope is ALL or scope == home
    assert (result.active_version, result.candidate_version) == (1, version)
    assert seen and seen[0] == (0, len(population))
    assert _counts(harness) == before  # writes nothing


def test_a_groups_candidate_reports_groups_gained_and_lost(harness):
    population = _store_population(harness)
    text = (ROOT / "rulesets" / "groups.yaml").read_text(encoding="utf-8")
    simulator = PopulationSimulator(harness.runtime.admin, TieringPopulation(harness.url), workers=2)
    same = simulator.run("tiering.groups", _draft(harness, text))
    assert same.tally.changed == 0 and not same.tally.codes  # the active rules again: nobody moves
    assert same.tally.total == len(population)
    import yaml
    doc = yaml.safe_load(text)
    doc["rules"] = doc["rules"][1:]  # drop the first group rule
    version = _draft(harness, _without_examples(doc))
    result = simulator.run("tiering.groups", version)
    cells, codes, _ = _one_by_one(harness, "tiering.groups", version, population)
    assert {k[1:]: n for k, n in result.tally.codes.items() if k[0] is ALL} == dict(codes)
    assert codes and all(how == "lost" for _, _, how in codes)


def _without_examples(doc: dict) -> str:
    import yaml
    doc = {k: v for k, v in doc.items() if k != "examples"}
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def test_one_branch_only(harness):
    population = _store_population(harness)
    homes = Counter(home for _, home in population.values())
    branch_id = homes.most_common(1)[0][0]
    version = _draft(harness, (ROOT / "rulesets" / "tiers.yaml").read_text(encoding="utf-8"))
    simulator = PopulationSimulator(harness.runtime.admin, TieringPopulation(harness.url), workers=2)
    result = simulator.run("tiering.tiers", version, branch_id=branch_id)
    assert result.tally.total == homes[branch_id]
    assert set(result.tally.branches) == {branch_id}


def test_include_changes_lists_exactly_the_customers_who_move_with_their_new_outcome(harness):
    population = _store_population(harness)
    version = _draft(harness, (ROOT / "rulesets" / "alternatives" / "seed002_monthly.yaml").read_text(
        encoding="utf-8"))
    simulator = PopulationSimulator(harness.runtime.admin, TieringPopulation(harness.url), workers=2)
    result = simulator.run("tiering.tiers", version, include_changes=True)
    active, candidate = harness.runtime.active("tiering.tiers"), harness.runtime.version("tiering.tiers", version)
    expected = {}
    for cid, (snapshot, home) in population.items():
        facts = rule_facts(snapshot, home)
        before = active.evaluate(project(facts, active.loaded.compiled.fields)).outcome["tier"]
        after = candidate.evaluate(project(facts, candidate.loaded.compiled.fields)).outcome["tier"]
        if before != after:
            expected[cid] = (home, after)
    assert expected and {cid: (branch, o["tier"]) for cid, branch, o in result.tally.changes} == expected
    assert result.tally.changed == len(expected)
