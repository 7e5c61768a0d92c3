"""The tamper-evident audit chain: the helper itself (SQLite and
PostgreSQL), concurrent appenders, `kequn audit verify`, and the chains
of the running services that write through append_audit."""
from __future__ import annotations

import subprocess
import sys
import threading
from decimal import Decimal

import pytest
from sqlalchemy import MetaData, delete, insert, inspect, update

from services.common.audit import append_audit, append_audit_many, audit_table, default_table_name, verify_chain
from services.common.db import make_engine
from services.common.testing import REPO_ROOT
from tests.security.conftest import AVAILABLE
from tests.security.rpcs import SERVICES


@pytest.fixture
def chain(db_url):
    engine = make_engine(db_url)
    metadata = MetaData()
    table = audit_table(metadata, "demo_audit_log")
    metadata.create_all(engine)
    with engine.begin() as conn:
        for i in range(5):
            append_audit(conn, table, actor=f"user{i}", action="thing.update", subject=f"thing/{i}",
                         before={"qty": i, "price": Decimal("1.10")}, after={"qty": i + 1}, request_id=f"r{i}",
                         reason="because")
    yield engine, table
    engine.dispose()


def _ids(engine, table):
    with engine.connect() as conn:
        return [r.id for r in conn.execute(table.select().order_by(table.c.id))]


def _verify(engine, table):
    with engine.connect() as conn:
        return verify_chain(conn, table)


def test_a_batch_appends_in_order_onto_the_chain_and_a_change_in_it_is_named(chain):
    engine, table = chain
    with engine.begin() as conn:
        append_audit_many(conn, table, [dict(action="thing.batch", subject=f"thing/b{i}", after={"i": i})
                                        for i in range(50)], actor="batcher", request_id="rb")
    assert _verify(engine, table) == (True, None)
    with engine.connect() as conn:
        rows = conn.execute(table.select().order_by(table.c.id)).fetchall()
    assert [r.subject for r in rows[5:]] == [f"thing/b{i}" for i in range(50)]
    assert all(r.actor == "batcher" and r.request_id == "rb" for r in rows[5:])
    with engine.begin() as conn:
        conn.execute(update(table).where(table.c.id == rows[30].id).values(after_json='{"i":999}'))
    assert _verify(engine, table) == (False, rows[30].id)


def test_intact_chain_verifies(chain):
    assert _verify(*chain) == (True, None)


@pytest.mark.parametrize("column,value", [("after_json", '{"qty":99}'), ("actor", "mallory"),
                                          ("request_id", "forged"), ("at", "2020-01-01T00:00:00+00:00")])
def test_changing_any_field_of_a_record_names_that_record(chain, column, value):
    engine, table = chain
    target = _ids(engine, table)[2]
    with engine.begin() as conn:
        conn.execute(update(table).where(table.c.id == target).values({column: value}))
    assert _verify(engine, table) == (False, target)


def test_deleting_a_record_names_its_successor(chain):
    engine, table = chain
    ids = _ids(engine, table)
    with engine.begin() as conn:
        conn.execute(delete(table).where(table.c.id == ids[1]))
    assert _verify(engine, table) == (False, ids[2])


def test_recomputing_the_hash_of_a_changed_record_still_breaks_at_the_next(chain):
    engine, table = chain
    ids = _ids(engine, table)
    from services.common.audit import record_hash, _record_of
    with engine.begin() as conn:
        conn.execute(update(table).where(table.c.id == ids[1]).values(after_json='{"qty":1000}'))
        row = conn.execute(table.select().where(table.c.id == ids[1])).one()
        conn.execute(update(table).where(table.c.id == ids[1]).values(hash=record_hash(row.prev_hash, _record_of(row))))
    assert _verify(engine, table) == (False, ids[2])


def test_rolled_back_append_leaves_no_trace(chain):
    engine, table = chain
    with pytest.raises(RuntimeError):
        with engine.begin() as conn:
            append_audit(conn, table, actor="a", action="x", subject="s", before=None, after=1, request_id="r")
            raise RuntimeError("the mutation failed")
    with engine.begin() as conn:
        append_audit(conn, table, actor="a", action="y", subject="s", before=None, after=2, request_id="r2")
    assert _verify(engine, table) == (True, None)
    assert len(_ids(engine, table)) == 6


def test_concurrent_appenders_never_fork_the_chain(chain):
    engine, table = chain
    errors = []

    def writer(n):
        try:
            for i in range(25):
                with engine.begin() as conn:
                    append_audit(conn, table, actor=f"w{n}", action="race", subject=f"s{i}", before=None,
                                 after={"i": i}, request_id=f"{n}-{i}")
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(_ids(engine, table)) == 5 + 100
    assert _verify(engine, table) == (True, None)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "services.common.audit_cli", "verify", *args],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": f"{REPO_ROOT}:{REPO_ROOT / 'gen' / 'python'}", "PATH": "/usr/bin:/bin"})


def test_cli_verify_exit_codes(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    engine = make_engine(url)
    table = audit_table(MetaData(), default_table_name("benefits"))
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        for i in range(3):
            append_audit(conn, table, actor="ops", action="a", subject=str(i), before=None, after=i, request_id="")
    ok = _cli("--service", "benefits", "--database-url", url)
    assert ok.returncode == 0 and "3 records, chain intact" in ok.stdout
    with engine.begin() as conn:
        conn.execute(insert(table).values(at="x", actor="mallory", action="a", subject="s", before_json="null",
                                          after_json="null", request_id="", reason="", prev_hash="0" * 64,
                                          hash="f" * 64))
    bad = _cli("--service", "benefits", "--database-url", url)
    assert bad.returncode == 1 and "BROKEN at record id 4" in bad.stdout
    missing = _cli("--service", "scoring", "--database-url", url)
    assert missing.returncode == 2
    engine.dispose()
