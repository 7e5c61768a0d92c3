"""Helpers for tests: a real store, engine and runtime with the defaults published."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

from services.common.db import make_engine, run_migrations

from .admin import RuleAdmin
from .engine import Evaluation, RuleEngine, default_engine
from .kinds import KindRegistry, KindSpec
from .runtime import RuleRuntime
from .store import RuleStore

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_rules"


def migrate_rules(url: str) -> None:
    run_migrations(url, str(MIGRATIONS), VERSION_TABLE)


def runtime_for(kinds: Iterable[KindSpec], rulesets_dir: Path | None = None, db_url: str | None = None,
                engine: RuleEngine | None = None, lead_seconds: float = 60.0, clock=None) -> RuleRuntime:
    """A RuleRuntime over a fresh (or given) database with the YAMLs in
    ``rulesets_dir`` published, already refreshed. ``runtime.admin`` is the
    matching RuleAdmin for tests that publish new versions."""
    if db_url is None:
        db_url = f"sqlite:///{tempfile.mkdtemp(prefix='kequn-rules-')}/rules.db"
    migrate_rules(db_url)
    registry = KindRegistry(kinds)
    engine = engine or default_engine()
    store = RuleStore(make_engine(db_url), **({"clock": clock} if clock else {}))
    admin = RuleAdmin(store, registry, engine, lead_seconds=lead_seconds)
    if rulesets_dir is not None:
        admin.install_defaults(Path(rulesets_dir))
    runtime = RuleRuntime(store, registry, engine, poll_seconds=0.2, **({"clock": clock} if clock else {}))
    runtime.admin = admin  # type: ignore[attr-defined]
    runtime.refresh()
    return runtime


def evaluate_text(text: str, kinds: Iterable[KindSpec], values: Mapping[str, Any]) -> Evaluation:
    """Validates, compiles and evaluates one document against one input."""
    from .compiler import compile_document
    from .validation import list_keys, validate_text

    registry = KindRegistry(kinds)
    engine = default_engine()
    result = validate_text(text, registry, engine, run_examples_too=False)
    if not result.ok:
        raise ValueError("; ".join(map(str, result.problems)))
    kind = registry.get(result.document.kind)
    loaded = engine.load(compile_document(result.document), 0, list_keys(kind))
    try:
        return loaded.evaluate(values)
    finally:
        engine.unload(loaded)


def release(admin: RuleAdmin, name: str, version: int, requester: str = "tester",
            approver: str = "checker", effective_from=None):
    """Four eyes in a test: ``requester`` asks, ``approver`` approves."""
    requested = admin.request_release(name, version, effective_from, requester, "test release")
    return admin.approve_release(requested.release_id, approver, "approved in a test")
