"""A real TieringService over SQLite and PostgreSQL, default rulesets published."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from services.common.db import make_engine, make_session_factory, run_migrations
from services.rules.testing import runtime_for
from services.tiering.rules_kind import KINDS
from services.tiering.service import TieringService

ROOT = Path(__file__).resolve().parents[3] / "services" / "tiering"


@dataclass
class Harness:
    service: TieringService
    runtime: object
    engine: object
    url: str

    def publish(self, path: Path) -> int:
        """Publishes a YAML file as a new version and waits for it to serve."""
        record = self.runtime.admin.create(path.read_text(encoding="utf-8"), "tester")
        self.runtime.admin.publish(record.name, record.version, "tester")
        self.runtime.refresh()
        return record.version

    def count(self, table: str) -> int:
        from sqlalchemy import text
        with self.engine.connect() as conn:
            return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


def make_harness(url: str) -> Harness:
    runtime = runtime_for(KINDS, ROOT / "rulesets", url)
    run_migrations(url, str(ROOT / "migrations"), "alembic_version_tiering")
    engine = make_engine(url)
    return Harness(TieringService(make_session_factory(engine), runtime), runtime, engine, url)


@pytest.fixture
def harness(db_url):
    h = make_harness(db_url)
    yield h
    h.runtime.stop()
    h.engine.dispose()


@pytest.fixture
def pg_harness(pg_url):
    h = make_harness(pg_url)
    yield h
    h.runtime.stop()
    h.engine.dispose()
