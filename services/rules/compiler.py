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
# durable-rules keeps the alpha nodes one fact satisfies on a stack of 64
# (events.c, MAX_STACK_SIZE): when a fact satisfies more at once, the core
# reports the error with its state half-built and the process dies freeing
# it (measured: 65 bands of one table, a value in the top band). A ruleset is
# therefore registered as shards whose conditions together stay below.
MAX_SHARD_WEIGHT = 56
# Its alpha nodes keep their children in a hash set of 512 buckets (rules.h,
# NEXT_BUCKET_LENGTH) probed without a bound: the 511th child (an in: list
# of 511 values) makes registering the ruleset loop forever, engine lock
# held. A shard also holds at most this many tests in all.
MAX_SHARD_TESTS = 400
# Each alternative of a rule (its any/in lists multiplied out) fires on its
# own: 8 lists of 8 alternatives took over a minute per input.
MAX_RULE_BRANCHES = 1024


def beyond_engine(rule: "CompiledRule") -> str | None:
    """Why durable-rules cannot take ``rule`` even alone in a shard, or None."""
    if rule.weight > MAX_SHARD_WEIGHT:
        return (f"more than {MAX_SHARD_WEIGHT} tests one input could pass at once (an in: list on one field "
                "counts once): durable-rules fails past 64")
    if rule.tests > MAX_SHARD_TESTS:
        return f"more than {MAX_SHARD_TESTS} tests (each value of an in: list counts): durable-rules hangs past 510"
    if rule.branches > MAX_RULE_BRANCHES:
        return f"expands to more than {MAX_RULE_BRANCHES} alternatives (any/in lists combined with all)"
    return None
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
    weight: int = 1  # alpha nodes one fact may satisfy at once (alpha_weight)
    tests: int = 1   # alpha tests in all (test_count)
    branches: int = 1  # alternatives the engine expands it into (branches)


@dataclass(frozen=True)
class CompiledRuleset:
    name: str
    kind: str
    definition: Mapping[str, Any]  # durable-rules JSON, without actions
    rules: tuple[CompiledRule, ...]
    fields: frozenset[str]

    @property
    def shards(self) -> list[dict[str, Any]]:
        """The definition split in document order into parts whose rules'
        weights add up to at most MAX_SHARD_WEIGHT and tests to at most
        MAX_SHARD_TESTS (a heavier rule alone; validation refuses those),
        each with the sentinel rule."""
        shards: list[dict[str, Any]] = []
        current: dict[str, Any] = {}
        weight = tests = 0
        for rule in self.rules:
            if current and (weight + rule.weight > MAX_SHARD_WEIGHT or tests + rule.tests > MAX_SHARD_TESTS):
                shards.append(current)
                current, weight, tests = {}, 0, 0
            current[rule.engine_name] = self.definition[rule.engine_name]
            weight += rule.weight
            tests += rule.tests
        if current or not shards:
            shards.append(current)
        return [{SEEN_RULE: self.definition[SEEN_RULE], **shard} for shard in shards]

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


def _equalities_of_one_field(tests: list) -> bool:
    fields = {next(iter(t)) for t in tests
              if isinstance(t, dict) and len(t) == 1 and not next(iter(t)).startswith("$")}
    return len(fields) == 1 and all(isinstance(t, dict) and len(t) == 1 and not isinstance(next(iter(t.values())), dict)
                                    for t in tests)


def alpha_weight(expression: Any) -> int:
    """How many of an expression's tests one fact may satisfy at once (an
    upper bound): one per test, except alternatives that are equalities of
    one field (``in``), of which a fact satisfies at most one."""
    if isinstance(expression, dict) and len(expression) == 1:
        (op, arg), = expression.items()
        if op in ("$and", "$or") and isinstance(arg, list):
            if op == "$or" and _equalities_of_one_field(arg):
                return 1
            return sum(alpha_weight(t) for t in arg)
    return 1


def test_count(expression: Any) -> int:
    """The alpha tests an expression registers, each value of an in: list one."""
    if isinstance(expression, dict) and len(expression) == 1:
        (op, arg), = expression.items()
        if op in ("$and", "$or") and isinstance(arg, list):
            return sum(test_count(t) for t in arg)
    return 1


def branches(expression: Any) -> int:
    """Alternatives durable-rules expands a condition into (its disjunctive
    normal form): each is a path that may fire for one fact."""
    if isinstance(expression, dict) and len(expression) == 1:
        (op, arg), = expression.items()
        if op == "$or" and isinstance(arg, list):
            return sum(branches(t) for t in arg)
        if op == "$and" and isinstance(arg, list):
            product = 1
            for t in arg:
                product *= branches(t)
            return product
    return 1


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
        rules.append(CompiledRule(engine_name, rule_id, priority, dict(then), len(rules), alpha_weight(expression),
                                  test_count(expression), branches(expression)))

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
