"""No input reaches durable-rules' C core unless it fits its limits.

Each case below crashed the process (SIGSEGV), leaked a session or silently
dropped the rest of the batch before the engine wrapper refused it. The
wrapper refuses per item: the other inputs of a batch are still evaluated,
and the engine keeps answering afterwards."""
import pytest

from services.rules.compiler import compile_document
from services.rules.document import load_text
from services.rules.engine import (MAX_FACT_DEPTH, MAX_FACT_FIELDS, MAX_FACT_STRING_CHARS, Evaluation,
                                   FactRefused, RuleEngine)

DOC = """
name: test.limits
kind: test.customer
rules:
  - id: rich
    when: {aum: {gte: 100}}
    then: {tier: RICH}
  - id: tagged
    when: {tags: {contains: vip}}
    then: {flags: [VIP]}
  - id: region
    when: {attributes.region: north}
    then: {flags: [NORTH]}
"""


@pytest.fixture(scope="module")
def loaded():
    engine = RuleEngine()
    loaded = engine.load(compile_document(load_text(DOC)), 1, ["flags"])
    yield loaded
    engine.unload(loaded)


def _nested(levels: int):
    value = 1
    for _ in range(levels):
        value = {"k": value}
    return value


def _wide(n: int) -> dict:
    return {f"f{i}": i for i in range(n)}


HOSTILE = {
    "300 top-level fields": {"aum": 500, **_wide(300)},
    "1,000 top-level fields": {"aum": 500, **_wide(1000)},
    "300 attributes": {"aum": 500, "attributes": {f"a{i}": "x" for i in range(300)}},
    "fields just over the limit": {"aum": 500, **_wide(MAX_FACT_FIELDS)},
    "nested 300 deep": {"aum": 500, "deep": _nested(300)},
    "nested past the depth limit": {"aum": 500, "deep": _nested(MAX_FACT_DEPTH + 1)},
    "a mapping of 300 in a list": {"aum": 500, "tags": [_wide(300)]},
    "nested lists": {"aum": 500, "tags": [[["vip"]]]},
    "a 20 MB string": {"aum": 500, "note": "x" * 20_000_000},
    "a fact over the size limit": {"aum": 500, "notes": ["x" * 15_000] * 70},
    "a string past the limit": {"aum": 500, "note": "x" * (MAX_FACT_STRING_CHARS + 1)},
    "a 100 kB field name": {"aum": 500, "k" * 100_000: 1},
    "infinity": {"aum": float("inf")},
    "not a number": {"aum": float("nan")},
    "an integer past int64": {"aum": 2**63},
    "a float with a bare exponent": {"aum": 1e16},
    "a tiny float": {"aum": 1e-05},
    "a lone surrogate": {"aum": 500, "note": "\ud800"},
    "the engine's sid": {"aum": 500, "sid": "other-session"},
    "the engine's id": {"aum": 500, "id": 0},
    "the sentinel field": {"aum": 500, "_kequn_sentinel": 1},
    "a $ field": {"aum": 500, "$s": 1},
    "an object value": {"aum": 500, "when": object()},
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_fact_that_does_not_fit_is_refused_alone_and_the_batch_goes_on(loaded, case):
    good = {"aum": 500, "tags": ["vip"], "attributes": {"region": "north"}}
    results = loaded.evaluate_each([good, HOSTILE[case], {"aum": 1}, good])
    refused = results[1]
    assert isinstance(refused, FactRefused), case
    assert refused.reason == "INVALID_INPUT" and refused.index == 1 and refused.metadata["limit"]
    assert len(refused.message) < 300  # names the limit, never echoes the input
    # The inputs before and after it are answered as if it were not there.
    assert [r.rule_ids for r in (results[0], results[2], results[3])] == \
        [["rich", "tagged", "region"], [], ["rich", "tagged", "region"]]
    assert all(isinstance(r, Evaluation) for r in (results[0], results[2], results[3]))


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_single_hostile_fact_is_refused_and_the_engine_keeps_answering(loaded, case):
    with pytest.raises(FactRefused) as refused:
        loaded.evaluate(HOSTILE[case])
    assert refused.value.violations[0][0] == "input"
    assert loaded.evaluate({"aum": 100}).rule_ids == ["rich"]


def test_evaluate_many_is_all_or_nothing_and_names_the_bad_input(loaded):
    with pytest.raises(FactRefused) as refused:
        loaded.evaluate_many([{"aum": 1}] * 3 + [HOSTILE["300 attributes"]])
    assert refused.value.index == 3
    assert refused.value.metadata["limit"] == "max_fields"
    assert f"at most {MAX_FACT_FIELDS}" in refused.value.message


def test_the_limits_leave_room_for_real_facts(loaded):
    """Up to the limits, facts are evaluated, wide ones included."""
    widest = {"aum": 500, **_wide(MAX_FACT_FIELDS - 2), "attributes": {"region": "north"}}
    deepest = {"aum": 500, "deep": _nested(MAX_FACT_DEPTH)}
    results = loaded.evaluate_many([widest, deepest, {"aum": 500, "note": "\x00 and ü \" \\ {,}"},
                                    {"aum": 1.5e17}, {"aum": -2**63}, {"aum": 2**63 - 1}])
    assert [r.rule_ids for r in results] == [["rich", "region"], ["rich"], ["rich"], ["rich"], [], ["rich"]]


def test_refused_engine_fields_leave_no_session_behind(loaded):
    """A caller's own ``sid`` used to open a session of its own that nothing
    deleted: at 1,024 of them durable-rules fails and may crash."""
    for i in range(1_100):
        with pytest.raises(FactRefused):
            loaded.evaluate({"aum": 500, "sid": f"s{i}"})
    assert loaded.evaluate({"aum": 500}).rule_ids == ["rich"]


def test_batches_larger_than_one_engine_call_report_the_right_index(loaded):
    inputs = [{"aum": 500}] * 1_200
    inputs[777] = HOSTILE["infinity"]
    results = loaded.evaluate_each(inputs)
    assert [i for i, r in enumerate(results) if isinstance(r, FactRefused)] == [777]
    assert results[777].index == 777
    assert all(r.rule_ids == ["rich"] for i, r in enumerate(results) if i != 777)


def test_an_input_the_core_cannot_read_is_found_and_refused_alone(loaded, monkeypatch):
    """Whatever our checks miss, the core must have read the whole batch (an
    end sentinel fires): otherwise the batch is split until the input it
    cannot read stands alone. Here the float check is switched off, so 1e+16
    (which the core's number parser stops at) reaches it."""
    import services.rules.engine as engine_module
    checked = engine_module._value_problem
    monkeypatch.setattr(engine_module, "_value_problem",
                        lambda name, value, depth: None if isinstance(value, float) else checked(name, value, depth))
    inputs = [{"aum": 500}] * 5 + [{"aum": 1e16}] + [{"aum": 500}] * 7 + [{"aum": 1e-05}]
    results = loaded.evaluate_each(inputs)
    assert [(r.index, r.limit) for r in results if isinstance(r, FactRefused)] == [
        (5, "engine_parse"), (13, "engine_parse")]
    assert all(r.rule_ids == ["rich"] for r in results if isinstance(r, Evaluation))
    assert len(results) == len(inputs)


def test_a_regular_expression_matches_a_string_at_the_limit():
    engine = RuleEngine()
    text = "name: t.re\nkind: test.customer\nrules:\n  - id: re\n    when: {name: {matches: 'a.*b'}}\n" \
           "    then: {tier: X}\n"
    loaded = engine.load(compile_document(load_text(text)), 1)
    try:
        for char in ("a", "語", "😀"):  # 1, 3 and 4 bytes of UTF-8
            value = "a" + char * (MAX_FACT_STRING_CHARS - 2) + "b"
            assert loaded.evaluate({"name": value}).rule_ids == ["re"], char
    finally:
        engine.unload(loaded)
