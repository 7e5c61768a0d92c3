"""Condition trees as written in YAML → durable-rules JSON expressions.

Written form (one mapping per test)::

    all: [cond, ...]      any: [cond, ...]
    <field>: <literal>                      # equality
    <field>: {<op>: <operand>}              # eq ne lt lte gt gte in not_in
                                            # exists matches contains contains_any
Operands: a literal, ``{field: name}``, ``{param: dotted.name}`` (a document
parameter, resolved at compile time) or arithmetic ``{add|sub|mul|div: [a, b]}``.
Constant arithmetic is folded exactly with ``Decimal`` at compile time, so a
money threshold such as "80% of the private-banking floor" reaches the engine
as an exact integer.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any, Mapping

COMPARISONS = {"eq": None, "ne": "$neq", "lt": "$lt", "lte": "$lte", "gt": "$gt", "gte": "$gte"}
SET_OPS = {"in", "not_in", "contains", "contains_any"}
OTHER_OPS = {"exists", "matches"}
OPERATORS = frozenset(COMPARISONS) | SET_OPS | OTHER_OPS
ARITHMETIC = {"add": "$add", "sub": "$sub", "mul": "$mul", "div": "$div"}
GROUPS = ("all", "any")


class ConditionError(ValueError):
    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def lookup_param(parameters: Mapping[str, Any], dotted: str, path: str) -> Any:
    node: Any = parameters
    for part in str(dotted).split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ConditionError(path, f"unknown parameter '{dotted}'")
        node = node[part]
    return node


def _as_number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        try:
            return Decimal(value)
        except ArithmeticError:
            return None
    if isinstance(value, float):
        return Decimal(repr(value))
    return None


def _plain(value: Decimal) -> int | float:
    # Integral results stay exact integers; fractions only reach the engine when
    # a rule author compares against a non-integral constant on purpose.
    return int(value) if value == value.to_integral_value() else float(value)


class _Operand:
    """A compiled operand: a constant (``const``) or a durable-rules term."""

    def __init__(self, const: Any = None, term: Any = None, is_const: bool = True, refs: frozenset = frozenset()):
        self.const, self.term, self.is_const, self.refs = const, term, is_const, refs

    def engine_value(self) -> Any:
        if self.is_const:
            n = _as_number(self.const) if not isinstance(self.const, str) else None
            return _plain(n) if n is not None else self.const
        return self.term


def compile_operand(raw: Any, parameters: Mapping[str, Any], path: str, fields: set[str]) -> _Operand:
    if isinstance(raw, Mapping):
        if len(raw) != 1:
            raise ConditionError(path, "an operand mapping has exactly one key: field, param or add/sub/mul/div")
        (key, arg), = raw.items()
        if key == "field":
            fields.add(str(arg))
            return _Operand(term={"$m": str(arg)}, is_const=False, refs=frozenset({str(arg)}))
        if key == "param":
            return _Operand(const=lookup_param(parameters, arg, f"{path}.param"))
        if key in ARITHMETIC:
            if not isinstance(arg, list) or len(arg) != 2:
                raise ConditionError(f"{path}.{key}", "takes a list of two operands")
            left = compile_operand(arg[0], parameters, f"{path}.{key}[0]", fields)
            right = compile_operand(arg[1], parameters, f"{path}.{key}[1]", fields)
            if left.is_const and right.is_const:
                a, b = _as_number(left.const), _as_number(right.const)
                if a is None or b is None:
                    raise ConditionError(f"{path}.{key}", "arithmetic needs numbers")
                if key == "div" and b == 0:
                    raise ConditionError(f"{path}.{key}", "division by zero")
                folded = {"add": a + b, "sub": a - b, "mul": a * b, "div": a / b if b else a}[key]
                return _Operand(const=folded)
            return _Operand(
                term={ARITHMETIC[key]: {"$l": left.engine_value(), "$r": right.engine_value()}},
                is_const=False, refs=left.refs | right.refs,
            )
        raise ConditionError(path, f"unknown operand '{key}' (use field, param, add, sub, mul or div)")
    if isinstance(raw, list):
        raise ConditionError(path, "a list is only allowed after in / not_in / contains_any")
    return _Operand(const=raw)


def _const_list(raw: Any, parameters: Mapping[str, Any], path: str) -> list[Any]:
    if isinstance(raw, Mapping) and set(raw) == {"param"}:
        raw = lookup_param(parameters, raw["param"], f"{path}.param")
    if not isinstance(raw, list) or not raw:
        raise ConditionError(path, "needs a non-empty list")
    return [compile_operand(item, parameters, f"{path}[{i}]", set()).engine_value() for i, item in enumerate(raw)]


def _field_test(name: str, spec: Any, parameters: Mapping[str, Any], path: str, fields: set[str]) -> dict:
    fields.add(name)
    if not isinstance(spec, Mapping):
        return {name: compile_operand(spec, parameters, path, fields).engine_value()}
    tests = []
    for op, operand in spec.items():
        op_path = f"{path}.{op}"
        if op in COMPARISONS:
            compiled = compile_operand(operand, parameters, op_path, fields)
            value = compiled.engine_value()
            test = {name: value} if op == "eq" else {COMPARISONS[op]: {name: value}}
            # durable-rules reads an absent field on the right as a value, so
            # "age >= monthly" would match without "monthly": require it.
            guards = [{"$ex": {ref: 1}} for ref in sorted(compiled.refs)]
            tests.append({"$and": [*guards, test]} if guards else test)
        elif op == "in":
            tests.append({"$or": [{name: v} for v in _const_list(operand, parameters, op_path)]})
        elif op == "not_in":
            tests.append({"$and": [{"$neq": {name: v}} for v in _const_list(operand, parameters, op_path)]})
        elif op == "contains":
            value = compile_operand(operand, parameters, op_path, set()).engine_value()
            tests.append({"$iany": {name: {"$i": value}}})
        elif op == "contains_any":
            tests.append({"$or": [{"$iany": {name: {"$i": v}}} for v in _const_list(operand, parameters, op_path)]})
        elif op == "exists":
            if not isinstance(operand, bool):
                raise ConditionError(op_path, "takes true or false")
            tests.append({"$ex" if operand else "$nex": {name: 1}})
        elif op == "matches":
            if not isinstance(operand, str):
                raise ConditionError(op_path, "takes a regular expression string")
            tests.append({"$mt": {name: operand}})
        else:
            raise ConditionError(op_path, f"unknown operator '{op}' (known: {', '.join(sorted(OPERATORS))})")
    if not tests:
        raise ConditionError(path, "names no operator")
    return tests[0] if len(tests) == 1 else {"$and": tests}


def compile_condition(raw: Any, parameters: Mapping[str, Any], path: str, fields: set[str]) -> dict:
    """Compiles one condition tree; ``fields`` collects every field it names."""
    if not isinstance(raw, Mapping) or not raw:
        raise ConditionError(path, "a condition is a non-empty mapping")
    tests = []
    for key, value in raw.items():
        key_path = f"{path}.{key}"
        if key in GROUPS:
            if not isinstance(value, list) or not value:
                raise ConditionError(key_path, "takes a non-empty list of conditions")
            parts = [compile_condition(c, parameters, f"{key_path}[{i}]", fields) for i, c in enumerate(value)]
            tests.append(parts[0] if len(parts) == 1 else {"$and" if key == "all" else "$or": parts})
        else:
            tests.append(_field_test(str(key), value, parameters, key_path, fields))
    return tests[0] if len(tests) == 1 else {"$and": tests}


def depth(expression: Any) -> int:
    if isinstance(expression, Mapping):
        return 1 + max((depth(v) for v in expression.values()), default=0)
    if isinstance(expression, list):
        return 1 + max((depth(v) for v in expression), default=0)
    return 0
