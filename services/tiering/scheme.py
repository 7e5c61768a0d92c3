"""Reading the active tier ruleset as a ``TierScheme`` (order, grace, entry).

The order of tiers comes from the ``tier`` band table (ascending) or, for
rule-based schemes such as seed 001's, from ``parameters.tier_order``. What
it takes to enter a tier (for the gap) is read from the same rules: a band's
lower bound, or the ``gte``/``gt`` thresholds in the condition of every rule
yielding that tier (``any`` = alternatives, ``all`` = every threshold).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from services.rules.conditions import ConditionError, compile_operand
from services.rules.document import RulesetDocument

from .domain import TierScheme

Requirement = tuple[tuple[str, int], ...]


def _threshold(raw: Any, parameters: Mapping[str, Any], op: str) -> int | None:
    try:
        operand = compile_operand(raw, parameters, "", set())
    except ConditionError:
        return None
    value = operand.engine_value() if operand.is_const else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    minimum = math.ceil(value)
    return minimum + 1 if op == "gt" and minimum == value else minimum


def _product(left: list[Requirement], right: list[Requirement]) -> list[Requirement]:
    return [a + b for a in left for b in right]


def entry_requirements(condition: Any, parameters: Mapping[str, Any]) -> list[Requirement]:
    """Disjunctive normal form of the numeric minimums in a condition.
    Tests that set no minimum (equality, upper bounds...) add nothing."""
    if condition is None:
        return [()]
    alternatives: list[Requirement] = [()]
    for key, value in (condition.items() if isinstance(condition, Mapping) else ()):
        if key == "all":
            for sub in value:
                alternatives = _product(alternatives, entry_requirements(sub, parameters))
        elif key == "any":
            union: list[Requirement] = []
            for sub in value:
                union.extend(entry_requirements(sub, parameters))
            alternatives = _product(alternatives, union)
        elif isinstance(value, Mapping):
            for op in ("gte", "gt"):
                if op in value:
                    minimum = _threshold(value[op], parameters, op)
                    if minimum is not None:
                        alternatives = _product(alternatives, [((str(key), minimum),)])
    return alternatives


def tier_scheme(document: RulesetDocument) -> TierScheme:
    parameters = document.parameters
    table = next((t for t in document.bands if t.output == "tier"), None)
    entry: dict[str, list[Requirement]] = {}
    if table is not None:
        for band in table.bands:
            entry.setdefault(band.value, []).append(((table.field, band.lower),) if band.lower is not None else ())
    for rule in document.rules:
        tier = rule.then.get("tier")
        if tier is not None:
            entry.setdefault(tier, []).extend(entry_requirements(rule.when, parameters))
    order = parameters.get("tier_order") or [b.value for b in table.bands]
    return TierScheme(
        order=tuple(order),
        grace_evaluations=int(parameters.get("downgrade_grace_evaluations", 0)),
        entry={tier: tuple(reqs) for tier, reqs in entry.items()},
    )
