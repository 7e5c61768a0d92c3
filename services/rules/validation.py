"""Validation of a ruleset document, with a precise path for every problem.

Order: YAML → shape → kind (fields, outputs, kind checks) → conditions →
durable-rules limits → a trial load into the engine → the examples. Only a
document with no problems may be stored as a version, and only a version whose
examples pass may be published (compile-before-activate).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from .compiler import (MAX_RULE_BRANCHES, MAX_SHARD_TESTS, MAX_SHARD_WEIGHT, CompiledRule, alpha_weight, beyond_engine,
                       branches, compile_document, test_count)
from .conditions import ConditionError, compile_condition, depth
from .document import DocumentSyntaxError, RulesetDocument, from_mapping, parse_yaml
from .engine import MAX_FACT_FIELDS, EngineError, RuleEngine
from .examples import run_examples
from .kinds import INT, STRING, STRING_LIST, KindRegistry, KindSpec, Problem

TOP_LEVEL = {"name", "kind", "description", "parameters", "bands", "rules", "examples"}
RULE_KEYS = {"id", "when", "then", "priority", "description"}
TABLE_KEYS = {"id", "field", "output", "bands", "priority"}
BAND_KEYS = {"value", "from", "below"}
EXAMPLE_KEYS = {"name", "input", "expect", "expect_rules"}
NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,99}$")
ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,120}$")

# durable-rules limits (ARCHITECTURE.md), kept with a margin.
MAX_RULES = 2000            # engine: ~4096
MAX_DEPTH = 24              # engine: stack 64 deep, our nesting adds levels
MAX_RULE_WEIGHT = MAX_SHARD_WEIGHT  # tests one input may satisfy at once in one rule (engine: 64, then it dies)
MAX_RULE_TESTS = MAX_SHARD_TESTS    # tests in one rule, each value of an in: list counted (engine: 511 hangs it)
MAX_REGEX_LENGTH = 200
MAX_DOCUMENT_BYTES = 1_000_000
# Nested quantifiers such as (a+)+ or (a*)* blow up durable-rules' regex state
# machine; refuse them outright rather than find out in production.
NESTED_QUANTIFIER = re.compile(r"\([^()]*[+*][^()]*\)[+*{]")


@dataclass(frozen=True)
class ValidationResult:
    document: RulesetDocument | None
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def _unknown_keys(raw: Mapping, allowed: set[str], path: str) -> list[Problem]:
    return [Problem(f"{path}.{k}" if path else str(k), f"unknown key (allowed: {', '.join(sorted(allowed))})")
            for k in raw if k not in allowed]


def _check_regexes(expression: Any, path: str, problems: list[Problem]) -> None:
    if isinstance(expression, Mapping):
        for key, value in expression.items():
            if key == "$mt" and isinstance(value, Mapping):
                for field, pattern in value.items():
                    _check_regex(str(pattern), f"{path} (matches on {field})", problems)
            else:
                _check_regexes(value, path, problems)
    elif isinstance(expression, list):
        for item in expression:
            _check_regexes(item, path, problems)


def _check_regex(pattern: str, path: str, problems: list[Problem]) -> None:
    if len(pattern) > MAX_REGEX_LENGTH:
        problems.append(Problem(path, f"regular expression longer than {MAX_REGEX_LENGTH} characters"))
    elif NESTED_QUANTIFIER.search(pattern):
        problems.append(Problem(path, "regular expression with a nested quantifier (e.g. (a+)+) is refused"))
    else:
        try:
            re.compile(pattern)
        except re.error as exc:
            problems.append(Problem(path, f"invalid regular expression: {exc}"))


def _check_fields(kind: KindSpec, fields: set[str], path: str, problems: list[Problem]) -> None:
    for name in sorted(fields):
        if kind.field_type(name) is None:
            problems.append(Problem(path, f"unknown field '{name}' for kind {kind.name}"))


def _check_rules(raw: Mapping, kind: KindSpec, problems: list[Problem]) -> None:
    rules = raw.get("rules", [])
    if not isinstance(rules, list):
        problems.append(Problem("rules", "must be a list"))
        return
    if len(rules) > MAX_RULES:
        problems.append(Problem("rules", f"{len(rules)} rules: durable-rules is limited to {MAX_RULES} here"))
    seen: set[str] = set()
    parameters = raw.get("parameters") or {}
    for i, rule in enumerate(rules):
        path = f"rules[{i}]"
        if not isinstance(rule, Mapping):
            problems.append(Problem(path, "a rule is a mapping with id, when, then"))
            continue
        problems.extend(_unknown_keys(rule, RULE_KEYS, path))
        rule_id = rule.get("id")
        if not isinstance(rule_id, str) or not ID_RE.match(rule_id):
            problems.append(Problem(f"{path}.id", "required: letters, digits and . _ : - (at most 120)"))
        elif rule_id in seen:
            problems.append(Problem(f"{path}.id", f"duplicate rule id '{rule_id}'"))
        seen.add(str(rule_id))
        if not isinstance(rule.get("priority", 0), int) or isinstance(rule.get("priority", 0), bool):
            problems.append(Problem(f"{path}.priority", "must be an integer"))
        then = rule.get("then")
        if not isinstance(then, Mapping) or not then:
            problems.append(Problem(f"{path}.then", "required: a non-empty mapping of outcomes"))
        elif kind.outputs:
            for key, value in then.items():
                if key not in kind.outputs:
                    problems.append(Problem(f"{path}.then.{key}",
                                            f"unknown outcome for kind {kind.name} (known: {', '.join(sorted(kind.outputs))})"))
                elif kind.outputs[key] == "list" and not isinstance(value, list):
                    problems.append(Problem(f"{path}.then.{key}", "must be a list"))
        if rule.get("when") is None:
            continue
        fields: set[str] = set()
        try:
            expression = compile_condition(rule["when"], parameters, f"{path}.when", fields)
        except ConditionError as exc:
            problems.append(Problem(exc.path, exc.message))
            continue
        _check_fields(kind, fields, f"{path}.when", problems)
        if depth(expression) > MAX_DEPTH:
            problems.append(Problem(f"{path}.when", f"nested deeper than {MAX_DEPTH} levels"))
        else:
            beyond = beyond_engine(CompiledRule("", "", 0, {}, 0, alpha_weight(expression), test_count(expression),
                                                branches(expression)))
            if beyond:
                problems.append(Problem(f"{path}.when", f"{beyond}; split the rule"))
        _check_regexes(expression, f"{path}.when", problems)


def _check_bands(raw: Mapping, kind: KindSpec, problems: list[Problem]) -> None:
    tables = raw.get("bands", [])
    if not isinstance(tables, list):
        problems.append(Problem("bands", "must be a list of band tables"))
        return
    for t, table in enumerate(tables):
        path = f"bands[{t}]"
        if not isinstance(table, Mapping):
            problems.append(Problem(path, "a band table is a mapping with id, field, output, bands"))
            continue
        problems.extend(_unknown_keys(table, TABLE_KEYS, path))
        if not isinstance(table.get("id"), str) or not ID_RE.match(table.get("id", "")):
            problems.append(Problem(f"{path}.id", "required"))
        field = table.get("field")
        if kind.field_type(str(field)) != INT:
            problems.append(Problem(f"{path}.field", f"'{field}' is not an integer field of kind {kind.name}"))
        output = table.get("output", table.get("id"))
        if kind.outputs and output not in kind.outputs:
            problems.append(Problem(f"{path}.output", f"unknown outcome '{output}' for kind {kind.name}"))
        bands = table.get("bands")
        if not isinstance(bands, list) or not bands:
            problems.append(Problem(f"{path}.bands", "required: a non-empty list"))
            continue
        previous_upper: Any = "start"
        values: set[Any] = set()
        for b, band in enumerate(bands):
            band_path = f"{path}.bands[{b}]"
            if not isinstance(band, Mapping):
                problems.append(Problem(band_path, "a band is a mapping with value, from, below"))
                continue
            problems.extend(_unknown_keys(band, BAND_KEYS, band_path))
            lower, upper, value = band.get("from"), band.get("below"), band.get("value")
            if value is None or value in values:
                problems.append(Problem(f"{band_path}.value", "required and unique within the table"))
            values.add(value)
            for key, bound in (("from", lower), ("below", upper)):
                if bound is not None and (not isinstance(bound, int) or isinstance(bound, bool)):
                    problems.append(Problem(f"{band_path}.{key}", "must be an integer (fen)"))
            if not all(x is None or (isinstance(x, int) and not isinstance(x, bool)) for x in (lower, upper)):
                continue
            if lower is not None and upper is not None and lower >= upper:
                problems.append(Problem(band_path, f"empty band: from {lower} is not below {upper}"))
            if previous_upper == "start":
                pass
            elif previous_upper is None:
                problems.append(Problem(band_path, "overlap: the previous band has no upper bound"))
            elif lower is None or lower < previous_upper:
                problems.append(Problem(f"{band_path}.from", f"overlap: starts at {lower}, previous band ends at {previous_upper}"))
            elif lower > previous_upper:
                problems.append(Problem(f"{band_path}.from", f"gap: nothing covers {previous_upper} to {lower}"))
            if b > 0 and lower is None:
                pass
            previous_upper = upper
            if b < len(bands) - 1 and upper is None:
                problems.append(Problem(f"{band_path}.below", "only the last band may be open at the top"))


def _check_examples(raw: Mapping, problems: list[Problem]) -> None:
    examples = raw.get("examples", [])
    if not isinstance(examples, list):
        problems.append(Problem("examples", "must be a list"))
        return
    for i, example in enumerate(examples):
        path = f"examples[{i}]"
        if not isinstance(example, Mapping):
            problems.append(Problem(path, "an example is a mapping with input and expect"))
            continue
        problems.extend(_unknown_keys(example, EXAMPLE_KEYS, path))
        if not isinstance(example.get("input"), Mapping):
            problems.append(Problem(f"{path}.input", "required: a mapping of input fields"))
        if not isinstance(example.get("expect"), Mapping):
            problems.append(Problem(f"{path}.expect", "required: a mapping of expected outcomes"))


def check_shape(raw: Mapping, kinds: KindRegistry) -> tuple[KindSpec | None, list[Problem]]:
    problems = _unknown_keys(raw, TOP_LEVEL, "")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        problems.append(Problem("name", "required: lower case letters, digits and . _ - (at most 100)"))
    kind = kinds.get(str(raw.get("kind")))
    if kind is None:
        problems.append(Problem("kind", f"unknown kind '{raw.get('kind')}' (known: {', '.join(kinds.names())})"))
        return None, problems
    if len(kind.fields) > MAX_FACT_FIELDS:
        problems.append(Problem("kind", f"kind has more than {MAX_FACT_FIELDS} fields"))
    if "parameters" in raw and not isinstance(raw["parameters"], Mapping):
        problems.append(Problem("parameters", "must be a mapping"))
    if not raw.get("rules") and not raw.get("bands") and not kind.check:
        problems.append(Problem("rules", "a ruleset needs at least one rule or band table"))
    _check_rules(raw, kind, problems)
    _check_bands(raw, kind, problems)
    _check_examples(raw, problems)
    if kind.check and not problems:
        problems.extend(kind.check(raw))
    return kind, problems


def validate_text(text: str, kinds: KindRegistry, engine: RuleEngine, *, run_examples_too: bool = True,
                  expected_name: str | None = None) -> ValidationResult:
    try:
        return _validate_text(text, kinds, engine, run_examples_too, expected_name)
    except RecursionError:  # a hostile document nested deeper than any check walks
        return ValidationResult(None, (Problem("", f"nested deeper than {MAX_DEPTH} levels"),))


def _validate_text(text: str, kinds: KindRegistry, engine: RuleEngine, run_examples_too: bool,
                   expected_name: str | None) -> ValidationResult:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_DOCUMENT_BYTES:  # a surrogate is refused by the parser
        return ValidationResult(None, (Problem("", f"document larger than {MAX_DOCUMENT_BYTES} bytes"),))
    try:
        raw = parse_yaml(text)
    except DocumentSyntaxError as exc:
        return ValidationResult(None, (Problem("", str(exc)),))
    kind, problems = check_shape(raw, kinds)
    if expected_name is not None and raw.get("name") != expected_name:
        problems.append(Problem("name", f"document names '{raw.get('name')}', expected '{expected_name}'"))
    if problems or kind is None:
        return ValidationResult(None, tuple(problems))
    document = from_mapping(raw)
    try:
        compiled = compile_document(document)
    except ConditionError as exc:
        return ValidationResult(None, (Problem(exc.path, exc.message),))
    try:  # the engine has the last word on what it accepts
        loaded = engine.load(compiled, 0, [k for k, mode in kind.outputs.items() if mode == "list"])
    except EngineError as exc:
        return ValidationResult(None, (Problem("rules", str(exc)),))
    try:
        if run_examples_too:
            for result in run_examples(loaded, document):
                if not result.passed:
                    problems.append(Problem(f"examples[{result.index}]", f"{result.name}: {result.message}"))
    finally:
        engine.unload(loaded)
    return ValidationResult(None if problems else document, tuple(problems))


def list_keys(kind: KindSpec) -> list[str]:
    return [k for k, mode in kind.outputs.items() if mode == "list"]


__all__ = ["MAX_RULE_BRANCHES", "MAX_RULE_TESTS", "MAX_RULE_WEIGHT", "ValidationResult", "validate_text", "check_shape",
           "list_keys", "Problem", "STRING", "STRING_LIST"]
