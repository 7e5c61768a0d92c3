"""A real TieringService over SQLite and PostgreSQL, default rulesets published."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from services.common.db import make_engine, make_session_factory, run_migrations
from services.rules.testing import release, runtime_for
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
        """Releases a YAML file as a new version (written by one person,
        released by another where four eyes apply) and waits for it to serve."""
        admin = self.runtime.admin
        record = admin.create(path.read_text(encoding="utf-8"), "author")
        if admin.four_eyes(record.name, record.kind):
            release(admin, record.name, record.version, requester="author", approver="checker")
        else:
            admin.publish(record.name, record.version, "author")
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
