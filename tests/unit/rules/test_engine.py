"""The durable-rules engine as we drive it: facts (every matching rule fires),
unique ids, state deleted after each evaluation, safe from many threads."""
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.rules.compiler import compile_document
from services.rules.document import load_text
from services.rules.engine import RuleEngine, merge_outcome
from services.rules.compiler import CompiledRule


def reference_tier(aum: int) -> str:
    """Plain reference of the sample bands, to check the engine against."""
    for floor, tier in ((600000000, "PRIVATE_BANKING"), (20000000, "WEALTH"), (5000000, "AFFLUENT"),
                        (1000000, "LONG_TAIL")):
        if aum >= floor:
            return tier
    return "MASS"


@pytest.fixture
def loaded(doc_text):
    engine = RuleEngine()
    loaded = engine.load(compile_document(load_text(doc_text)), 1, ["segments", "flags"])
    yield loaded
    engine.unload(loaded)


def test_every_matching_rule_fires_for_one_fact(loaded):
    evaluation = loaded.evaluate({"aum": 480000000, "age": 70, "card": "PLATINUM"})
    assert sorted(evaluation.rule_ids) == ["flag.pb_prospect", "group.high_spend", "group.silver", "tier.WEALTH"]
    assert evaluation.outcome == {"tier": "WEALTH", "segments": ["SILVER_HAIR", "HIGH_SPEND"],
                                  "flags": ["PB_PROSPECT"]}
    assert (evaluation.ruleset, evaluation.version) == ("test.tiers", 1)


def test_equal_snapshots_in_one_batch_do_not_collide(loaded):
    same = {"aum": 100, "age": 61}
    results = loaded.evaluate_many([same] * 50)
    assert all(r.outcome["tier"] == "MASS" and r.outcome["segments"] == ["SILVER_HAIR"] for r in results)


def test_boundaries_to_the_fen(loaded):
    cases = {599999999: "WEALTH", 600000000: "PRIVATE_BANKING", 19999999: "AFFLUENT", 20000000: "WEALTH",
             4999999: "LONG_TAIL", 5000000: "AFFLUENT", 999999: "MASS", 1000000: "LONG_TAIL", 0: "MASS"}
    results = loaded.evaluate_many([{"aum": aum} for aum in cases])
    assert [r.outcome["tier"] for r in results] == list(cases.values())


def test_absent_values_do_not_match_and_attributes_are_reachable(doc_text):
    engine = RuleEngine()
    text = doc_text.replace("card: {in: [PLATINUM, BLACK]}", "attributes.district: north")
    loaded = engine.load(compile_document(load_text(text)), 1, ["segments", "flags"])
    assert loaded.evaluate({"aum": 5, "age": None}).outcome["segments"] == []
    assert loaded.evaluate({"aum": 5, "attributes": {"district": "north"}}).outcome["segments"] == ["HIGH_SPEND"]


def test_thousands_of_evaluations_never_exhaust_session_ids(loaded):
    # durable-rules allows 1024 live sids per ruleset; each evaluation deletes its own.
    for i in range(3000):
        assert loaded.evaluate({"aum": i, "age": 1}).outcome["tier"] == "MASS"


def test_unloaded_ruleset_refuses_to_evaluate(doc_text):
    engine = RuleEngine()
    loaded = engine.load(compile_document(load_text(doc_text)), 1)
    engine.unload(loaded)
    with pytest.raises(Exception, match="unloaded"):
        loaded.evaluate({"aum": 1})


def test_a_new_version_registers_beside_the_old_one(doc_text):
    engine = RuleEngine()
    compiled = compile_document(load_text(doc_text))
    first, second = engine.load(compiled, 1), engine.load(compiled, 2)
    assert first.engine_name != second.engine_name
    assert first.evaluate({"aum": 1}).version == 1 and second.evaluate({"aum": 1}).version == 2


def _population(n):
    return [{"aum": (i * 7919) % 800000000, "age": i % 100, "card": "BLACK" if i % 13 == 0 else "STANDARD",
             "monthly": (i * 104729) % 700000000} for i in range(n)]


def _check(inputs, results):
    for values, result in zip(inputs, results):
        assert result.outcome["tier"] == reference_tier(values["aum"])
        assert ("SILVER_HAIR" in result.outcome["segments"]) == (values["age"] >= 60)
        assert ("HIGH_SPEND" in result.outcome["segments"]) == (values["card"] == "BLACK")
        prospect = 480000000 <= values["aum"] < 600000000 or values["monthly"] >= 600000000
        assert ("PB_PROSPECT" in result.outcome["flags"]) == prospect


def test_20000_customers_sequentially_and_from_8_threads(loaded):
    inputs = _population(20000)
    _check(inputs, loaded.evaluate_many(inputs))
    # 8 threads at once, mixing batches and single evaluations, all on one engine.
    chunks = [inputs[i::8] for i in range(8)]
    errors = []

    def work(k):
        try:
            chunk = chunks[k]
            if k % 2:
                return chunk, [loaded.evaluate(v) for v in chunk]
            return chunk, loaded.evaluate_many(chunk)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            raise

    with ThreadPoolExecutor(max_workers=8) as pool:
        for chunk, results in pool.map(work, range(8)):
            _check(chunk, results)
    assert not errors
    assert threading.active_count() < 50


def test_merge_scalar_by_priority_lists_by_union():
    low = CompiledRule("r0", "low", 0, {"tier": "A", "segments": ["X"]}, 0)
    high = CompiledRule("r1", "high", 5, {"tier": "B", "segments": ["Y", "X"]}, 1)
    assert merge_outcome([high, low], ["segments"]) == {"segments": ["Y", "X"], "tier": "B"}


# A reference interpreter of the condition language, to check the engine on
# random batches mixing facts that match several rules, one, or none (the case
# durable-rules reports as NOT_HANDLED), with absent fields and empty lists.
MIXED = """
name: t.mixed
kind: test.customer
rules:
  - {id: a, when: {card: BLACK}, then: {segments: [A]}}
  - {id: b, when: {segs: {contains: Q}}, then: {segments: [B]}}
  - {id: c, when: {name: {ne: foo}}, then: {segments: [C]}}
  - {id: d, when: {any: [{segs: {contains_any: [Q, R]}}, {age: {gte: {field: monthly}}}]}, then: {segments: [D]}}
  - {id: e, when: {all: [{name: {exists: false}}, {age: {lt: 5}}]}, then: {segments: [E]}}
"""


def reference_segments(v):
    out = []
    if v.get("card") == "BLACK":
        out.append("A")
    if "Q" in v.get("segs", []):
        out.append("B")
    if "name" in v and v["name"] != "foo":
        out.append("C")
    if any(x in v.get("segs", []) for x in "QR") or ("age" in v and "monthly" in v and v["age"] >= v["monthly"]):
        out.append("D")
    if "name" not in v and "age" in v and v["age"] < 5:
        out.append("E")
    return sorted(out)


from hypothesis import given, settings, strategies as st  # noqa: E402

facts = st.fixed_dictionaries({}, optional={
    "card": st.sampled_from(["BLACK", "GOLD"]),
    "segs": st.lists(st.sampled_from(["Q", "R", "Z"]), max_size=3),
    "name": st.sampled_from(["foo", "bar"]),
    "age": st.integers(0, 10),
    "monthly": st.integers(0, 10),
})


@settings(max_examples=300, deadline=None)
@given(st.lists(facts, min_size=1, max_size=40))
def test_engine_equals_reference_on_random_mixed_batches(batch):
    engine = RuleEngine()
    loaded = engine.load(compile_document(load_text(MIXED)), 1, ["segments"])
    try:
        for values, result in zip(batch, loaded.evaluate_many(batch)):
            assert sorted(result.outcome["segments"]) == reference_segments(values)
        assert [sorted(loaded.evaluate(v).outcome["segments"]) for v in batch[:3]] == \
            [reference_segments(v) for v in batch[:3]]
    finally:
        engine.unload(loaded)


def test_a_rule_without_condition_fires_once_per_fact_and_never_for_engine_internals():
    text = "name: t.always\nkind: test.customer\nrules:\n  - {id: everyone, then: {flags: [SEEN]}}\n" \
           "  - {id: old, when: {age: {gte: 60}}, then: {flags: [OLD]}}\n"
    engine = RuleEngine()
    loaded = engine.load(compile_document(load_text(text)), 1, ["flags"])
    results = loaded.evaluate_many([{"age": 70}, {}, {"age": 1}])
    assert [r.rule_ids for r in results] == [["everyone", "old"], ["everyone"], ["everyone"]]
    assert [r.outcome["flags"] for r in results] == [["SEEN", "OLD"], ["SEEN"], ["SEEN"]]
