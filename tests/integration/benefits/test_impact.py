"""Downstream impact of a tiering candidate on benefits (issue 15): the
entitlements gained and lost per benefit equal ListEntitlements before and
after the simulated profiles arrive, and the budget needed per group is
priced from the catalog in force."""
from __future__ import annotations

import dataclasses
from collections import Counter

from services.benefits.impact import SimulatedProfile, entitlement_impact


def _entitled(svc, customer_id: str) -> set[str]:
    return {e.benefit_id for e in svc.list_entitlements(customer_id).entitlements if not e.locked}


def test_entitlement_impact_equals_list_entitlements_with_the_new_profiles(svc_and_profiles):
    svc, profiles = svc_and_profiles
    svc.set_budget("WEALTH", "2025-03", 5_000_000, "b-1")
    simulated = [SimulatedProfile("C-AFF-PAY", "WEALTH"), SimulatedProfile("C-MASS", "AFFLUENT"),
                 SimulatedProfile("C-WEALTH", "AFFLUENT"),
                 SimulatedProfile("C-TAIL", "", True, ("SILVER_HAIR", "CAR_OWNER"), ()),
                 SimulatedProfile("NOBODY", "WEALTH")]
    before = {s.customer_id: _entitled(svc, s.customer_id) for s in simulated[:-1]}
    impact = entitlement_impact(svc, simulated)
    assert (impact.simulated, impact.unknown) == (4, 1)

    for s in simulated[:-1]:  # the real thing: tiering now says so
        p = profiles.profiles[s.customer_id]
        p = dataclasses.replace(p, tier=s.tier or p.tier)
        if s.groups_changed:
            p = dataclasses.replace(p, segments=s.segments, flags=s.flags)
        profiles.put(p)
    gained, lost = Counter(), Counter()
    for cid, had in before.items():
        has = _entitled(svc, cid)
        gained.update(has - had)
        lost.update(had - has)
    assert impact.gained == gained and impact.lost == lost
    assert gained and lost

    catalog = svc.policy().catalog
    needed = Counter()
    for b in set(gained) | set(lost):
        d = catalog[b]
        if d.budget_group and d.unit_cost_fen:
            needed[d.budget_group] += (gained[b] - lost[b]) * (d.quota_per_period or 1) * d.unit_cost_fen
    assert {b["group"]: b["needed_fen"] for b in impact.budgets} == dict(needed)
    wealth = [b for b in impact.budgets if b["group"] == "WEALTH"]
    assert [(b["period"], b["remaining_fen"]) for b in wealth] == [("2025-03", 5_000_000)]
