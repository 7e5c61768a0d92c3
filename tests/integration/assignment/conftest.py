"""A real AssignmentService over SQLite and PostgreSQL, with the default policy published."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from services.assignment.rules_kind import KINDS
from services.assignment.service import AssignmentService, CustomerChange
from services.common.db import make_engine, run_migrations
from services.rules.testing import runtime_for

ROOT = Path(__file__).resolve().parents[3] / "services" / "assignment"


class Clock:
    def __init__(self):
        self.now = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)

    def __call__(self):
        return self.now

    def advance(self, **kw):
        self.now += timedelta(**kw)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def make_service(db_url, clock):
    made = []

    def make():
        runtime = runtime_for(KINDS, ROOT / "rulesets", db_url)
        run_migrations(db_url, str(ROOT / "migrations"), "alembic_version_assignment")
        engine = make_engine(db_url)
        made.append((runtime, engine))
        return AssignmentService(engine, runtime, clock)

    yield make
    for runtime, engine in made:
        runtime.stop()
        engine.dispose()


@pytest.fixture
def svc(make_service):
    return make_service()


def org(svc, branches=1, subs=2, outlets=2):
    """BR-i → SUB-ij → OUT-ijk."""
    for b in range(1, branches + 1):
        svc.upsert_branch("ops", f"BR-{b}", "", f"branch {b}", "BRANCH")
        for s in range(1, subs + 1):
            svc.upsert_branch("ops", f"SUB-{b}{s}", f"BR-{b}", "", "SUB_BRANCH")
            for o in range(1, outlets + 1):
                svc.upsert_branch("ops", f"OUT-{b}{s}{o}", f"SUB-{b}{s}", "", "OUTLET")


def customers(svc, rows, start_cursor=None):
    """rows: (customer_id, tier, home, extra dict). Fed as tiering feed entries."""
    cursor = start_cursor if start_cursor is not None else svc.feed_cursor()
    changes = []
    for cid, tier, home, *extra in rows:
        cursor += 1
        changes.append(CustomerChange(cursor=cursor, customer_id=cid, tier=tier, home_branch_id=home,
                                      **(extra[0] if extra else {})))
    svc.apply_changes(changes)
    return changes
