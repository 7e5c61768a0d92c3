"""Validation names the exact path of every problem and refuses what the
engine could not run."""
import pytest

from services.rules.validation import MAX_RULES, validate_text


def problems(text, kinds, engine):
    return {(p.path, p.message.split(":")[0]) for p in validate_text(text, kinds, engine).problems}


def paths(text, kinds, engine):
    return [p.path for p in validate_text(text, kinds, engine).problems]


def test_the_sample_document_is_valid_and_its_examples_pass(doc_text, kinds, engine):
    result = validate_text(doc_text, kinds, engine)
    assert result.ok, result.problems
    assert result.document.name == "test.tiers"
    assert engine.loaded_names() == []  # the trial load was unloaded


def test_a_gap_between_bands_is_refused_with_its_path(doc_text, kinds, engine):
    text = doc_text.replace("{value: AFFLUENT, from: 5000000", "{value: AFFLUENT, from: 5000001")
    result = validate_text(text, kinds, engine)
    assert [(p.path, p.message) for p in result.problems] == [
        ("bands[0].bands[2].from", "gap: nothing covers 5000000 to 5000001")]


def test_an_overlap_between_bands_is_refused(doc_text, kinds, engine):
    text = doc_text.replace("{value: AFFLUENT, from: 5000000", "{value: AFFLUENT, from: 4999999")
    assert paths(text, kinds, engine) == ["bands[0].bands[2].from"]
    assert "overlap" in validate_text(text, kinds, engine).problems[0].message


def test_only_the_last_band_may_be_open_at_the_top(doc_text, kinds, engine):
    text = doc_text.replace("{value: LONG_TAIL, from: 1000000, below: 5000000}", "{value: LONG_TAIL, from: 1000000}")
    assert "bands[0].bands[1].below" in paths(text, kinds, engine)


def test_unknown_field_operator_and_outcome_are_named(doc_text, kinds, engine):
    text = (doc_text.replace("age: {gte: {param: silver_age}}", "agee: {gte: 1}")
            .replace("card: {in: [PLATINUM, BLACK]}", "card: {among: [PLATINUM]}")
            .replace("then: {flags: [PB_PROSPECT]}", "then: {flagz: [PB_PROSPECT]}"))
    found = [(p.path, p.message) for p in validate_text(text, kinds, engine).problems]
    assert ("rules[0].when", "unknown field 'agee' for kind test.customer") in found
    assert any(path == "rules[1].when.card.among" and "unknown operator" in msg for path, msg in found)
    assert any(path == "rules[2].then.flagz" for path, _ in found)


def test_unknown_parameter_and_unknown_top_level_key(doc_text, kinds, engine):
    text = doc_text.replace("{param: silver_age}", "{param: silver_agee}") + "\nextras: 1\n"
    found = paths(text, kinds, engine)
    assert "extras" in found and "rules[0].when.age.gte.param" in found


def test_unknown_kind_and_bad_yaml(doc_text, kinds, engine):
    assert paths(doc_text.replace("kind: test.customer", "kind: nope"), kinds, engine) == ["kind"]
    assert validate_text("rules: [", kinds, engine).problems[0].message.startswith("not valid YAML")


def test_failing_example_is_reported_with_expected_and_actual(doc_text, kinds, engine):
    text = doc_text.replace("expect: {tier: PRIVATE_BANKING", "expect: {tier: WEALTH")
    (problem,) = validate_text(text, kinds, engine).problems
    assert problem.path == "examples[0]"
    assert "expected 'WEALTH', got 'PRIVATE_BANKING'" in problem.message


def test_pathological_regex_and_too_many_rules_are_refused(doc_text, kinds, engine):
    text = doc_text.replace("card: {in: [PLATINUM, BLACK]}", "name: {matches: '(a+)+b'}")
    assert any("nested quantifier" in p.message for p in validate_text(text, kinds, engine).problems)
    many = "\n".join(f"  - id: r{i}\n    when: {{age: {{eq: {i}}}}}\n    then: {{flags: [F]}}"
                     for i in range(MAX_RULES + 1))
    text = f"name: big\nkind: test.customer\nrules:\n{many}\n"
    assert any(p.path == "rules" and "limited" in p.message for p in validate_text(text, kinds, engine).problems)


def test_attributes_are_allowed_only_as_attributes_dot_key(doc_text, kinds, engine):
    ok = doc_text.replace("card: {in: [PLATINUM, BLACK]}", "attributes.district: north")
    assert validate_text(ok, kinds, engine, run_examples_too=False).ok
    bad = doc_text.replace("card: {in: [PLATINUM, BLACK]}", "attributes: north")
    assert not validate_text(bad, kinds, engine, run_examples_too=False).ok


@pytest.mark.parametrize("pattern", ["[a-z]+@bank\\.cn", "^VIP.*"])
def test_plain_regexes_compile_and_match(pattern, doc_text, kinds, engine):
    text = doc_text.replace("card: {in: [PLATINUM, BLACK]}", f"name: {{matches: '{pattern}'}}")
    assert validate_text(text, kinds, engine, run_examples_too=False).ok


def test_yaml_aliases_and_impossible_dates_are_refused_not_crashed(kinds, engine):
    levels = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 7)]
    bomb = "\n".join(levels) + "\nname: t\nkind: test.customer\n"  # 10^7 values once expanded
    (problem,) = validate_text(bomb, kinds, engine).problems
    assert "expands to more than" in problem.message
    shared = "defaults: &d {then: {flags: [F]}}\nname: t\n"
    assert "expands" not in " ".join(p.message for p in validate_text(shared, kinds, engine).problems)
    (problem,) = validate_text("0000-00-00", kinds, engine).problems
    assert problem.message.startswith("not valid YAML")


def test_documents_nested_thousands_deep_are_refused(kinds, engine):
    deep = "name: t\nkind: test.customer\nrules:\n  - id: r\n    then: {flags: [F]}\n    when: " + \
        "{all: [" * 3000 + "{age: 1}" + "]}" * 3000 + "\n"
    problems = validate_text(deep, kinds, engine).problems
    assert problems and ("nested" in problems[0].message)
    flow = "[" * 5000 + "]" * 5000
    assert validate_text(flow, kinds, engine).problems


def _aliased_string(doc_text: str, size: int, times: int) -> str:
    """One ``size``-character string, written once and aliased ``times`` times."""
    return (doc_text.rstrip() + f"\nparameters:\n  big: &big {'x' * size}\n  copies:\n"
            + "".join(f"    - *big\n" for _ in range(times)))


def test_a_string_aliased_thousands_of_times_is_refused_before_it_is_built(doc_text, kinds, engine):
    """100 kB aliased 3,000 times is 300 MB once expanded (every checksum and
    JSON copy of it): refused on its expanded size, while memory stays low."""
    import tracemalloc

    text = _aliased_string(doc_text, 100_000, 3_000)
    assert len(text.encode()) < 200_000
    tracemalloc.start()
    try:
        (problem,) = validate_text(text, kinds, engine).problems
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "expands to more than" in problem.message and "characters" in problem.message
    assert peak < 50_000_000  # a few times the text, nowhere near the 300 MB it expands to
    # A few aliases of a large value are fine: the bound is on the expanded size.
    assert "expands" not in " ".join(p.message for p in validate_text(
        _aliased_string(doc_text, 100_000, 3), kinds, engine).problems)


def test_a_recursive_alias_is_refused(kinds, engine):
    (problem,) = validate_text("name: t\nkind: test.customer\nloop: &l [*l]\n", kinds, engine).problems
    assert "refers to itself" in problem.message


@pytest.mark.parametrize("text", ["\x00", "name: a\x00b", "\ud800: 1", "a: [" * 5000])
def test_unreadable_text_is_a_problem_not_a_crash(text, kinds, engine):
    (problem,) = validate_text(text, kinds, engine).problems
    assert problem.message.startswith("not valid YAML")
