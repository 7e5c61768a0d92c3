"""Ruleset document → durable-rules ruleset definition (pure).

Every rule becomes one durable-rules rule over a single fact ``m`` (the
customer, the staff member...). Rules are named ``r<n>`` inside the engine and
mapped back to the document's ids, so ids may use any characters.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .conditions import compile_condition
from .document import BandTable, RulesetDocument, band_rule_id

ALWAYS = {"$ex": {"id": 1}}  # every fact carries an id
# An internal rule matching only the engine's per-session sentinel fact (see
# engine.py): durable-rules crashes when no fact of a session matched anything.
SEEN_RULE = "_seen"
SENTINEL_FIELD = "_kequn_sentinel"


@dataclass(frozen=True)
class CompiledRule:
    engine_name: str
    rule_id: str
    priority: int
    then: Mapping[str, Any]
    order: int  # position in the document, the tie-breaker after priority


@dataclass(frozen=True)
class CompiledRuleset:
    name: str
    kind: str
    definition: Mapping[str, Any]  # durable-rules JSON, without actions
    rules: tuple[CompiledRule, ...]
    fields: frozenset[str]

    def rule(self, engine_name: str) -> CompiledRule:
        return self._by_engine_name[engine_name]

    @property
    def rule_names(self) -> dict[str, CompiledRule]:
        """Engine rule name → rule, for the document's rules only."""
        return self._by_engine_name

    @property
    def _by_engine_name(self) -> dict[str, CompiledRule]:
        cache = self.__dict__.get("_cache")
        if cache is None:
            cache = {r.engine_name: r for r in self.rules}
            object.__setattr__(self, "_cache", cache)
        return cache


def band_condition(table: BandTable, lower: int | None, upper: int | None) -> dict:
    tests = []
    if lower is not None:
        tests.append({"$gte": {table.field: lower}})
    if upper is not None:
        tests.append({"$lt": {table.field: upper}})
    if not tests:
        return {"$ex": {table.field: 1}}
    return tests[0] if len(tests) == 1 else {"$and": tests}


def compile_document(doc: RulesetDocument) -> CompiledRuleset:
    """Compiles a validated document; raises ConditionError on a bad condition."""
    definition: dict[str, Any] = {}
    rules: list[CompiledRule] = []
    fields: set[str] = set()

    def add(rule_id: str, expression: dict, priority: int, then: Mapping[str, Any]) -> None:
        engine_name = f"r{len(rules)}"
        definition[engine_name] = {"all": [{"m": expression}]}
        rules.append(CompiledRule(engine_name, rule_id, priority, dict(then), len(rules)))

    definition[SEEN_RULE] = {"all": [{"m": {"$ex": {SENTINEL_FIELD: 1}}}]}
    for table in doc.bands:
        fields.add(table.field)
        for band in table.bands:
            add(band_rule_id(table, band), band_condition(table, band.lower, band.upper), table.priority,
                {table.output: band.value})
    for i, rule in enumerate(doc.rules):
        expression = ALWAYS if rule.when is None else compile_condition(
            rule.when, doc.parameters, f"rules[{i}].when", fields)
        add(rule.id, expression, rule.priority, rule.then)
    return CompiledRuleset(doc.name, doc.kind, definition, tuple(rules), frozenset(fields))
