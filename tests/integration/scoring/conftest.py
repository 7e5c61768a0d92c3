"""A real scoring service (store, rule store, runtime) on SQLite and PostgreSQL."""
from pathlib import Path

import pytest

from services.common.db import make_engine, make_session_factory, run_migrations
from services.rules.testing import runtime_for
from services.scoring.rules_kind import KINDS
from services.scoring.scorecards import RuleStoreScorecards
from services.scoring.service import ScoringService, ValueInput

SCORING = Path(__file__).parents[3] / "services" / "scoring"


class Books:
    """A fake of the assignment service's GetBook: sizes by staff id, calls counted."""

    def __init__(self, sizes=None):
        self.sizes = dict(sizes or {})
        self.calls = []

    def __call__(self, staff_id):
        self.calls.append(staff_id)
        return self.sizes.get(staff_id)


@pytest.fixture
def scoring(db_url):
    run_migrations(db_url, str(SCORING / "migrations"), "alembic_version_scoring")
    runtime = runtime_for(KINDS, SCORING / "rulesets", db_url)
    engine = make_engine(db_url)
    books = Books()
    service = ScoringService(make_session_factory(engine), RuleStoreScorecards(runtime), books)
    service.books, service.runtime, service.engine = books, runtime, engine
    yield service
    runtime.stop()
    engine.dispose()


def metric(staff, role, indicator, value, branch="B1"):
    return ValueInput(staff, role, branch, indicator, str(value))


@pytest.fixture
def open_period(scoring):
    scoring.create_period("2025", "2025-01-01", "2025-12-31", "2026-01-31", actor="hr")
    return "2025"
