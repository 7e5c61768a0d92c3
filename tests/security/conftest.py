"""Shared fixtures of the security and reliability suite: the services that
exist right now as real processes, and the fuzz call counter."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from services.common.testing import REPO_ROOT
from tests.e2e.harness import ORDER, Suite

AVAILABLE = tuple(s for s in ORDER if (REPO_ROOT / "services" / s / "__main__.py").exists())
FUZZ_COUNT_FILE = REPO_ROOT / "bench" / "results" / "fuzz-count.txt"


def require(service: str) -> None:
    if service not in AVAILABLE:
        pytest.skip(f"services/{service} has no __main__ yet")


def start_suite(workdir: Path, services=AVAILABLE, **kwargs) -> Suite:
    """Start `services` (in dependency order); on failure stop what started."""
    suite = Suite(workdir, services=services, **kwargs)
    try:
        suite.start()
    except BaseException:
        suite.close()
        raise
    return suite


class PgSchemas:
    """One PostgreSQL schema per service in a database of our own on the shared server
    (KEQUN_TEST_PG_URL); a content digest of every table of a service's schema."""

    def __init__(self) -> None:
        from tests.conftest import _PgDatabase
        self.db = _PgDatabase()
        self.schemas: dict[str, str] = {}
        self._conns: dict[str, object] = {}

    def url(self, service: str) -> str:
        from tests.conftest import _fresh_schema_url
        url, self.schemas[service] = _fresh_schema_url(self.db)  # skips, or fails under CI=true
        return url

    def digest(self, service: str) -> dict[str, str]:
        """table -> md5 of its rows (as text, sorted): any insert, update or delete shows."""
        import psycopg
        from tests.conftest import _libpq_url
        conn = self._conns.get(service)
        if conn is None or conn.closed:
            conn = self._conns[service] = psycopg.connect(_libpq_url(self.db.url), autocommit=True)
        schema = self.schemas[service]
        tables = [r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables WHERE "
                                             "table_schema = %s AND table_type = 'BASE TABLE' ORDER BY 1",
                                             (schema,))]
        if not tables:
            return {}
        sql = " UNION ALL ".join(
            f"SELECT '{t}', md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '')) FROM \"{schema}\".\"{t}\" x"
            for t in tables)
        return dict(conn.execute(sql).fetchall())

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self.db.drop()


@pytest.fixture(scope="session")
def pg_suite(tmp_path_factory):
    """Every available service on PostgreSQL (the production database), one schema each.
    Without PostgreSQL: skipped, or failed under CI=true. `suite.pg.digest(service)`."""
    pg = PgSchemas()
    try:
        urls = {service: pg.url(service) for service in AVAILABLE}
        suite = start_suite(tmp_path_factory.mktemp("security-pg-suite"), database_urls=urls)
    except BaseException:
        pg.close()
        raise
    suite.pg = pg
    yield suite
    suite.close()
    pg.close()


@pytest.fixture(scope="session")
def suite(tmp_path_factory):
    """Every available service, on SQLite, shared by the read-mostly attacks."""
    suite = start_suite(tmp_path_factory.mktemp("security-suite"))
    yield suite
    suite.close()


class FuzzCounter:
    def __init__(self) -> None:
        self.calls = 0
        self.by_service: dict[str, int] = {}
        self.codes: dict[str, int] = {}
        self.started = time.monotonic()

    def add(self, service: str, n: int = 1, code: str | None = None) -> None:
        self.calls += n
        self.by_service[service] = self.by_service.get(service, 0) + n
        if code:
            self.codes[code] = self.codes.get(code, 0) + n


@pytest.fixture(scope="session")
def fuzz_counter():
    return FuzzCounter()


def write_fuzz_count(counter: FuzzCounter) -> None:
    """Called once a complete fuzz run is over (a -k subset must not overwrite the figure)."""
    FUZZ_COUNT_FILE.parent.mkdir(parents=True, exist_ok=True)
    per = ", ".join(f"{s}={n}" for s, n in sorted(counter.by_service.items()))
    codes = dict(sorted(counter.codes.items(), key=lambda kv: -kv[1]))
    FUZZ_COUNT_FILE.write_text(f"{counter.calls} fuzz calls in {time.monotonic() - counter.started:.0f}s "
                               f"({per})\ncodes: {codes}\n")


@pytest.fixture(scope="session")
def pg():
    """A PostgreSQL cluster of our own (tests stop and restart it)."""
    from tests.security.pgcluster import PgCluster
    cluster = PgCluster().start()
    yield cluster
    cluster.destroy()


def record(name: str, line: str) -> None:
    """Figures a test measured (not asserted), for docs/reliability.md."""
    path = REPO_ROOT / "bench" / "results" / f"reliability-{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(line.rstrip() + "\n")
