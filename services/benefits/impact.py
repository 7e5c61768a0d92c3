"""What a tier or groups candidate would do to benefits (issue 15,
downstream impact): for each customer tiering's SimulatePopulation says
would change, the entitlements of the current profile (from tiering, as
ListEntitlements sees it) against those of the simulated one, under the
catalog in force; and what the net change costs each budget group in the
current period. Writes nothing.

Budget needed = per benefit with a budget group, (gained - lost) x claims a
customer may make per period (``quota_per_period``; 1 when unlimited) x
``unit_cost_fen`` — the most the change can draw in one period.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from services.common.errors import NotFound


@dataclass(frozen=True)
class SimulatedProfile:
    customer_id: str
    tier: str = ""                      # empty = unchanged
    groups_changed: bool = False
    segments: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()


@dataclass
class EntitlementImpact:
    gained: Counter            # benefit id -> customers
    lost: Counter
    budgets: list[dict]        # group, period, needed_fen, remaining_fen
    simulated: int
    unknown: int


def entitlement_impact(service, simulated: Iterable[SimulatedProfile]) -> EntitlementImpact:
    policy = service.policy()
    befores, afters, unknown = [], [], 0
    for s in simulated:
        try:
            profile = service._profile(policy, s.customer_id)
        except NotFound:
            unknown += 1
            continue
        after = dataclasses.replace(profile, tier=s.tier or profile.tier)
        if s.groups_changed:
            after = dataclasses.replace(after, segments=tuple(s.segments), flags=tuple(s.flags))
        befores.append(profile.facts())
        afters.append(after.facts())
    evaluations = policy.active.evaluate_many(befores + afters) if befores else []
    gained, lost = Counter(), Counter()
    for before, after in zip(evaluations[:len(befores)], evaluations[len(befores):]):
        had, has = set(policy.grants(before)), set(policy.grants(after))
        gained.update(has - had)
        lost.update(had - has)
    needed: Counter = Counter()
    for benefit_id in set(gained) | set(lost):
        definition = policy.catalog[benefit_id]
        if definition.budget_group and definition.unit_cost_fen:
            per_customer = (definition.quota_per_period or 1) * definition.unit_cost_fen
            needed[definition.budget_group] += (gained[benefit_id] - lost[benefit_id]) * per_customer
    now = service._clock()
    budgets = []
    for group, fen in sorted(needed.items()):
        periods = policy.calendar.budget_periods(now)
        period, remaining = periods[0], 0
        for key in periods:  # the most specific period with a budget, as a claim is charged
            try:
                view = service.get_budget(group, key)
            except NotFound:
                continue
            period, remaining = key, view.remaining_fen
            break
        budgets.append({"group": group, "period": period, "needed_fen": fen, "remaining_fen": remaining})
    return EntitlementImpact(gained, lost, budgets, len(befores), unknown)
