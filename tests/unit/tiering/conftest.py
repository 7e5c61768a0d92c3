from pathlib import Path

import pytest

from services.rules.compiler import compile_document
from services.rules.engine import default_engine
from services.rules.kinds import KindRegistry
from services.rules.runtime import ActiveRuleset
from services.rules.validation import list_keys, validate_text
from services.tiering.rules_kind import KINDS

RULESETS = Path(__file__).resolve().parents[3] / "services" / "tiering" / "rulesets"
KIND_REGISTRY = KindRegistry(KINDS)


def load_active(path: Path, version: int = 1) -> ActiveRuleset:
    """A ruleset file validated (examples included), compiled and loaded in
    the real engine, as the runtime would serve it."""
    engine = default_engine()
    result = validate_text(path.read_text(encoding="utf-8"), KIND_REGISTRY, engine)
    assert result.ok, result.problems
    kind = KIND_REGISTRY.get(result.document.kind)
    loaded = engine.load(compile_document(result.document), version, list_keys(kind))
    return ActiveRuleset(result.document.name, version, kind.name, result.document, loaded)


@pytest.fixture(scope="session")
def tiers():
    return load_active(RULESETS / "tiers.yaml")


@pytest.fixture(scope="session")
def groups():
    return load_active(RULESETS / "groups.yaml")
