"""A loaded server keeps its PostgreSQL connections: a run of concurrent
reads and writes opens no more connections than the pool holds.

Counted by PostgreSQL itself (pg_stat_database.sessions of a database only
this server uses), so churn anywhere in the process shows up."""
from __future__ import annotations

import secrets
import threading
import time

import psycopg
import pytest
from sqlalchemy.engine import make_url

from kequn.tiering.v1 import tiering_pb2 as pb
from kequn.tiering.v1 import tiering_pb2_grpc as rpc
from services.common.db import pool_size_for
from tests.conftest import DEFAULT_PG_URL, _libpq_url
from tests.e2e.harness import Suite

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
CONCURRENT_RPCS = 8
CALLERS = 16  # twice what the server runs at once: the rest queue
CALLS_EACH = 40


@pytest.fixture
def own_database():
    """A database of its own: its session counter counts this server only."""
    import os
    base = os.environ.get("KEQUN_TEST_PG_URL", DEFAULT_PG_URL)
    name = "kequn_pool_" + secrets.token_hex(5)
    try:
        admin = psycopg.connect(_libpq_url(base), autocommit=True, connect_timeout=3)
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL required in CI: {exc}")
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(base.replace("postgresql://", "postgresql+psycopg://", 1)).set(
        drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)

    def sessions() -> int:
        # A new connection each time: statistics are snapshotted per transaction.
        time.sleep(1.2)  # backends flush their counters at most once a second
        with psycopg.connect(_libpq_url(base), autocommit=True) as conn:
            return conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", (name,)).fetchone()[0]

    yield url, sessions
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def test_a_load_run_opens_no_more_connections_than_the_pool_holds(tmp_path, own_database):
    url, sessions = own_database
    suite = Suite(tmp_path, services=("tiering",), database_urls={"tiering": url},
                  extra_env={"KEQUN_TIERING_MAX_CONCURRENT_RPCS": str(CONCURRENT_RPCS)})
    try:
        suite.start("tiering")
        writer = rpc.TieringServiceStub(suite.channel("tiering", "core_banking"))
        for i in range(CALLERS):
            writer.EvaluateCustomer(pb.EvaluateCustomerRequest(customer=pb.CustomerSnapshot(
                customer_id=f"P{i}", as_of="2026-01-31", annual_avg_aum_fen=1_000_000 * (i + 1),
                monthly_avg_aum_fen=1_000_000 * (i + 1))), timeout=30)
        before = sessions()  # start-up (migrations, rule store) is not the point

        failures: list[BaseException] = []

        def caller(i: int) -> None:
            stub = rpc.TieringServiceStub(suite.channel("tiering", "core_banking"))
            try:
                for n in range(CALLS_EACH):
                    if n % 4 == 0:  # a write now and then: decisions and audit records
                        stub.EvaluateCustomer(pb.EvaluateCustomerRequest(customer=pb.CustomerSnapshot(
                            customer_id=f"P{i}", as_of="2026-01-31", annual_avg_aum_fen=1_000_000 * (n + 1),
                            monthly_avg_aum_fen=1_000_000 * (n + 1))), timeout=60)
                    else:
                        stub.GetCustomerTier(pb.GetCustomerTierRequest(customer_id=f"P{i}"), timeout=60)
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(CALLERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not failures, failures[:3]
        opened = sessions() - before
        # Every call was served, and the whole run opened at most the pool
        # (typically none: the warm-up already opened what it needed).
        assert opened <= pool_size_for(CONCURRENT_RPCS), opened
        assert suite.processes["tiering"].poll() is None
    finally:
        suite.close()
