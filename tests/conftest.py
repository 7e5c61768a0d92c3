"""Shared fixtures: database URLs for SQLite and PostgreSQL.

Every integration test runs twice through `db_url`. PostgreSQL: one fresh
database per test session (`kequn_t_<hex>`, dropped at the end) and, inside
it, a fresh schema per test selected through search_path, so tests are as
isolated as with a new SQLite file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The tests start servers as subprocesses while gRPC is loaded in pytest: keep
# gRPC's fork handlers out of the forked children (grpc/grpc#43055), before
# anything imports grpc.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

_ROOT = Path(__file__).resolve().parents[1]
for _p in (_ROOT / "gen" / "python", _ROOT):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import secrets  # noqa: E402
from urllib.parse import quote  # noqa: E402

import pytest  # noqa: E402

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _libpq_url(sa_url: str) -> str:
    """psycopg.connect() wants postgresql://, not postgresql+psycopg://."""
    scheme, sep, rest = sa_url.partition("://")
    return "postgresql" + sep + rest


def _no_postgres(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL required in CI: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL unavailable: {reason}")


class _PgDatabase:
    """The session's database, created on first use."""

    def __init__(self) -> None:
        self.base = os.environ.get("KEQUN_TEST_PG_URL", DEFAULT_PG_URL)
        self.url: str | None = None
        self.error: str | None = None
        self.name = "kequn_t_" + secrets.token_hex(6)

    def admin(self):
        import psycopg

        return psycopg.connect(_libpq_url(self.base), autocommit=True, connect_timeout=3)

    def ensure(self) -> str:
        if self.url is None and self.error is None:
            try:
                with self.admin() as conn:
                    conn.execute(f'CREATE DATABASE "{self.name}"')
            except Exception as exc:  # noqa: BLE001 - any failure means "no PostgreSQL"
                self.error = str(exc).strip() or type(exc).__name__
            else:
                from sqlalchemy.engine import make_url

                url = make_url(self.base.replace("postgresql://", "postgresql+psycopg://", 1))
                self.url = url.set(drivername="postgresql+psycopg", database=self.name).render_as_string(
                    hide_password=False)
        if self.error:
            _no_postgres(self.error)
        return self.url

    def drop(self) -> None:
        if self.url is None:
            return
        try:
            with self.admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        except Exception as exc:  # noqa: BLE001
            print(f"warning: could not drop test database {self.name}: {exc}", file=sys.stderr)


@pytest.fixture(scope="session")
def _pg_database():
    db = _PgDatabase()
    yield db
    db.drop()


def _fresh_schema_url(db: _PgDatabase) -> tuple[str, str]:
    import psycopg

    base = db.ensure()
    schema = "t_" + secrets.token_hex(6)
    with psycopg.connect(_libpq_url(base), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in base else "?"
    return base + sep + "options=" + quote(f"-csearch_path={schema}"), schema


def _drop_schema(db: _PgDatabase, schema: str) -> None:
    import psycopg

    try:
        with psycopg.connect(_libpq_url(db.url), autocommit=True) as conn:
            # A test that leaked an open transaction must not hang teardown;
            # the whole database goes at session end anyway.
            conn.execute("SET lock_timeout = '2s'")
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    except Exception:  # noqa: BLE001
        pass


@pytest.fixture
def pg_url(_pg_database):
    """A SQLAlchemy URL to an empty PostgreSQL schema (skips/fails without PostgreSQL)."""
    url, schema = _fresh_schema_url(_pg_database)
    yield url
    _drop_schema(_pg_database, schema)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """A SQLAlchemy URL to an empty database, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    yield request.getfixturevalue("pg_url")
