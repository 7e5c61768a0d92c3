"""What a candidate tier scheme would do to the books (issue 15, downstream
impact): the whole population planned twice in a dry run — as stored, and
with the simulated tiers of the customers tiering says would change — by the
same placement code as RunAssignment's dry run (placement.py ``_plan``:
overflow upward, local group books, lock periods). Writes nothing.

Figures, per (home branch, role): customers unplaced, customers who need a
new manager (an ADD or TRANSFER, applied or suggested in a locked branch);
and the books that would be full with customers still waiting for them
(``full_books``: their load has reached the role's max in a unit where
customers went unplaced for ALL_BOOKS_FULL).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from sqlalchemy import select

from . import domain as d
from . import store as t


@dataclass(frozen=True)
class SimulatedCustomer:
    """A customer's outcome under the candidate (tiering's simulation)."""

    customer_id: str
    tier: str


@dataclass
class PlanFigures:
    unplaced: Counter = field(default_factory=Counter)       # (branch, role, reason) -> customers
    new_manager: Counter = field(default_factory=Counter)    # (branch, role) -> customers
    assigned: int = 0
    moved: int = 0
    removed: int = 0
    loads: dict = field(default_factory=dict)                # staff id -> book size after the plan


@dataclass
class BookImpact:
    baseline: PlanFigures
    candidate: PlanFigures
    full_books: list[dict]      # staff_id, branch_id, role, load, max, waiting
    simulated: int              # customers with a simulated tier that assignment knows
    unknown: int                # simulated customers assignment has never seen


def _figures(plan: d.Plan, home_of: Mapping[str, str]) -> PlanFigures:
    f = PlanFigures(loads=dict(plan.loads), assigned=plan.count(d.ADD), moved=plan.count(d.TRANSFER),
                    removed=plan.count(d.REMOVE))
    for u in plan.unplaced:
        f.unplaced[(u.branch_id, u.role, u.reason)] += 1
    for m in [*plan.moves, *plan.suggestions]:
        if m.to_staff_id is not None:
            f.new_manager[(home_of.get(m.customer_id, ""), m.role)] += 1
    return f


def _plan(service, conn, overrides: Mapping[str, str]) -> tuple[d.Plan, dict[str, str], d.OrgTree, list]:
    """RunAssignment's dry run over every customer, with ``overrides``
    (customer id -> tier) applied before the roles are worked out."""
    policy, version = service.policy()
    org = service._org(conn)
    rows = conn.execute(select(t.customers)).all()
    roles = service._current_roles(conn, rows, version, dry_run=True)
    changed = [dict(r._mapping) | {"tier": overrides[r.customer_id]} for r in rows if r.customer_id in overrides]
    if changed:
        fresh, _ = service.needed_roles(changed)
        roles.update({row["customer_id"]: r for row, r in zip(changed, fresh)})
    plan, team = service._plan(conn, rows, roles, org, policy, whole=True)
    return plan, {r.customer_id: r.home_branch_id for r in rows}, org, team


def book_impact(service, simulated: Iterable[SimulatedCustomer]) -> BookImpact:
    overrides = {s.customer_id: s.tier for s in simulated}
    policy, _ = service.policy()
    with service.engine.connect() as conn:
        known = set(conn.execute(select(t.customers.c.customer_id)).scalars())
        base_plan, home_of, org, team = _plan(service, conn, {})
        plan, _, _, _ = _plan(service, conn, {k: v for k, v in overrides.items() if k in known})
    baseline, candidate = _figures(base_plan, home_of), _figures(plan, home_of)
    waiting: Counter = Counter()   # (unit chain member, role) -> customers left unplaced for a full book
    for u in plan.unplaced:
        if u.reason == d.ALL_BOOKS_FULL:
            for unit in org.chain(u.branch_id):
                waiting[(unit, u.role)] += 1
    full = []
    for s in sorted(team, key=lambda s: s.staff_id):
        size = policy.books.get(s.role)
        if not (s.active and size and size.max):
            continue
        load = candidate.loads.get(s.staff_id, 0)
        if load >= size.max and waiting[(s.branch_id, s.role)]:
            full.append({"staff_id": s.staff_id, "branch_id": s.branch_id, "role": s.role, "load": load,
                         "max": size.max, "waiting": waiting[(s.branch_id, s.role)]})
    simulated_known = sum(1 for k in overrides if k in known)
    return BookImpact(baseline, candidate, full, simulated_known, len(overrides) - simulated_known)
