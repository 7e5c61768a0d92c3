"""Rulesets that made one input satisfy more than 64 tests at once crashed
the process (durable-rules' alpha stack of 64: the error leaves the state
half-built and freeing it aborts). A ruleset is registered as shards below
that bound, and a single rule past it is refused at validation.

The evaluations run in a child process: a regression shows as its death,
not as the death of the test run."""
import subprocess
import sys
import textwrap

import pytest

from services.rules.compiler import MAX_SHARD_WEIGHT, compile_document
from services.rules.document import load_text
from services.rules.validation import MAX_RULE_BRANCHES, MAX_RULE_WEIGHT, validate_text


def _bands(n: int) -> str:
    rows = "".join(f"      - {{value: B{i}, from: {i * 10}, below: {(i + 1) * 10}}}\n" for i in range(n))
    return f"name: t.bands\nkind: test.customer\nbands:\n  - id: tier\n    field: aum\n    output: tier\n    bands:\n{rows}"


def _thresholds(n: int) -> str:
    rules = "".join(f"  - id: r{i}\n    when: {{aum: {{gt: {i}}}}}\n    then: {{flags: [F{i}]}}\n" for i in range(n))
    return f"name: t.many\nkind: test.customer\nrules:\n{rules}"


def _in_child(document: str, inputs: list) -> str:
    code = textwrap.dedent(f"""
        from services.rules.compiler import compile_document
        from services.rules.document import load_text
        from services.rules.engine import RuleEngine
        engine = RuleEngine()
        loaded = engine.load(compile_document(load_text({document!r})), 1, ["flags"])
        for evaluation in loaded.evaluate_many({inputs!r}):
            print(len(evaluation.rule_ids), evaluation.outcome.get("tier"), len(evaluation.outcome["flags"]))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"the engine died ({done.returncode}): {done.stderr[-2000:]}"
    return done.stdout


@pytest.mark.parametrize("bands", [65, 70, 400])
def test_a_value_in_the_top_band_of_a_long_table_is_answered(bands):
    top = bands * 10 - 5
    assert _in_child(_bands(bands), [{"aum": top}, {"aum": 5}]).split("\n")[:2] == [
        f"1 B{bands - 1} 0", "1 B0 0"]


def test_an_input_passing_a_hundred_rules_at_once_fires_them_all():
    assert _in_child(_thresholds(100), [{"aum": 1000}, {"aum": 50}]).split("\n")[:2] == ["100 None 100", "50 None 50"]


def test_shards_stay_below_the_engine_stack():
    compiled = compile_document(load_text(_bands(400)))
    shards = compiled.shards
    assert len(shards) > 1
    weights = {r.engine_name: r.weight for r in compiled.rules}
    assert all(sum(weights.get(name, 0) for name in shard) <= MAX_SHARD_WEIGHT for shard in shards)
    assert sum(len(shard) - 1 for shard in shards) == len(compiled.rules)  # each rule once, plus the sentinel


def test_a_small_ruleset_is_one_shard():
    assert len(compile_document(load_text(_thresholds(20))).shards) == 1


def test_one_rule_past_the_stack_or_expanding_too_far_is_refused(kinds, engine):
    wide = ", ".join(f"{{aum: {{gt: {i}}}}}" for i in range(MAX_RULE_WEIGHT + 1))
    text = f"name: t.wide\nkind: test.customer\nrules:\n  - id: wide\n    when: {{any: [{wide}]}}\n    then: {{tier: X}}\n"
    (problem,) = validate_text(text, kinds, engine).problems
    assert problem.path == "rules[0].when" and f"more than {MAX_RULE_WEIGHT} tests" in problem.message
    groups = ", ".join("{any: [" + ", ".join(f"{{aum: {k}}}" for k in range(6)) + f"], age: {{gt: {g}}}}}"
                       for g in range(5))
    text = f"name: t.dnf\nkind: test.customer\nrules:\n  - id: dnf\n    when: {{all: [{groups}]}}\n    then: {{tier: X}}\n"
    (problem,) = validate_text(text, kinds, engine).problems
    assert f"more than {MAX_RULE_BRANCHES} alternatives" in problem.message


def test_an_in_list_on_one_field_counts_once(kinds, engine):
    values = ", ".join(f"C{i}" for i in range(200))
    text = (f"name: t.in\nkind: test.customer\nrules:\n  - id: codes\n    when: {{card: {{in: [{values}]}}}}\n"
            "    then: {tier: X}\nexamples:\n  - {input: {card: C150}, expect: {tier: X}}\n")
    assert validate_text(text, kinds, engine).ok


def test_an_in_list_the_engine_would_hang_on_is_refused_at_validation_and_at_load(kinds, engine):
    """An in: list of 511 values made registering the ruleset loop forever
    (a hash set of 512 buckets), with the engine lock held."""
    from services.rules.engine import EngineError
    from services.rules.validation import MAX_RULE_TESTS
    values = ", ".join(f"C{i}" for i in range(600))
    text = f"name: t.in\nkind: test.customer\nrules:\n  - id: codes\n    when: {{card: {{in: [{values}]}}}}\n" \
           "    then: {tier: X}\n"
    (problem,) = validate_text(text, kinds, engine).problems
    assert f"more than {MAX_RULE_TESTS} tests" in problem.message
    with pytest.raises(EngineError, match="cannot take rule codes"):  # a version stored behind validation's back
        engine.load(compile_document(load_text(text)), 1)


def test_many_in_lists_spread_over_shards_are_answered():
    rules = "".join(f"  - id: r{k}\n    when: {{card: {{in: [{', '.join(f'C{k}x{i}' for i in range(300))}]}}}}\n"
                    f"    then: {{flags: [F{k}]}}\n" for k in range(4))
    text = f"name: t.ins\nkind: test.customer\nrules:\n{rules}"
    assert len(compile_document(load_text(text)).shards) == 4
    assert _in_child(text, [{"card": "C3x299"}, {"card": "C0x0"}, {"card": "nope"}]).split("\n")[:3] == [
        "1 None 1", "1 None 1", "0 None 0"]
