"""A ruleset's own examples (input → expected outcome), run like `opa test`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .document import RulesetDocument
from .engine import FactRefused, LoadedRuleset


@dataclass(frozen=True)
class ExampleResult:
    index: int
    name: str
    passed: bool
    message: str = ""


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, list):
        return sorted(map(str, expected)) == sorted(map(str, actual or []))
    return expected == actual


def run_examples(loaded: LoadedRuleset, document: RulesetDocument) -> list[ExampleResult]:
    results = []
    evaluations = loaded.evaluate_each([e.input for e in document.examples])
    for index, (example, evaluation) in enumerate(zip(document.examples, evaluations)):
        if isinstance(evaluation, FactRefused):  # a hostile example fails alone; the others run
            results.append(ExampleResult(index, example.name, False, f"input refused: {evaluation.problem}"))
            continue
        wrong = [
            f"{key}: expected {expected!r}, got {evaluation.outcome.get(key)!r}"
            for key, expected in example.expect.items()
            if not _same(expected, evaluation.outcome.get(key))
        ]
        if example.expect_rules is not None and sorted(example.expect_rules) != sorted(evaluation.rule_ids):
            wrong.append(f"rules: expected {sorted(example.expect_rules)}, fired {sorted(evaluation.rule_ids)}")
        results.append(ExampleResult(index, example.name, not wrong, "; ".join(wrong)))
    return results
