"""The tamper-evident audit chains: the helper itself (SQLite and
PostgreSQL), concurrent appenders, `kequn audit verify`, and the chains
of the running services that write through append_audit.

Records chain per bucket of their subject (services.common.audit): the
fixture writes three subjects, four records each, so each subject's records
form one chain whose order the tests know."""
from __future__ import annotations

import subprocess
import sys
import threading
from decimal import Decimal

import pytest
from sqlalchemy import MetaData, delete, insert, select, update

from services.common.audit import (BUCKETS, append_audit, append_audit_many, audit_table, bucket_of, chain_head,
                                   default_table_name, verify_audit, verify_chain)
from services.common.db import make_engine
from services.common.testing import REPO_ROOT

SUBJECTS = ("thing/a", "thing/b", "thing/c")
assert len({bucket_of(s) for s in SUBJECTS}) == 3  # three distinct chains


@pytest.fixture
def chain(db_url):
    engine = make_engine(db_url)
    metadata = MetaData()
    table = audit_table(metadata, "demo_audit_log")
    metadata.create_all(engine)
    with engine.begin() as conn:
        for i in range(12):
            append_audit(conn, table, actor=f"user{i}", action="thing.update", subject=SUBJECTS[i % 3],
                         before={"qty": i, "price": Decimal("1.10")}, after={"qty": i + 1}, request_id=f"r{i}",
                         reason="because")
    yield engine, table
    engine.dispose()


def _ids(engine, table, subject=None):
    """Record ids in order (of one subject's chain when given)."""
    q = table.select().order_by(table.c.id)
    if subject is not None:
        q = q.where(table.c.subject == subject)
    with engine.connect() as conn:
        return [r.id for r in conn.execute(q)]


def _verify(engine, table):
    with engine.connect() as conn:
        return verify_chain(conn, table)


def test_a_batch_appends_in_order_onto_the_chains_and_a_change_in_it_is_named(chain):
    engine, table = chain
    with engine.begin() as conn:
        append_audit_many(conn, table, [dict(action="thing.batch", subject=f"thing/b{i}", after={"i": i})
                                        for i in range(50)], actor="batcher", request_id="rb")
    assert _verify(engine, table) == (True, None)
    with engine.connect() as conn:
        rows = conn.execute(table.select().order_by(table.c.id)).fetchall()
    assert [r.subject for r in rows[12:]] == [f"thing/b{i}" for i in range(50)]
    assert all(r.actor == "batcher" and r.request_id == "rb" for r in rows[12:])
    assert len({r.bucket for r in rows[12:]}) > 1  # a batch spreads over several chains
    with engine.begin() as conn:
        conn.execute(update(table).where(table.c.id == rows[30].id).values(after_json='{"i":999}'))
    assert _verify(engine, table) == (False, rows[30].id)


def test_intact_chains_verify(chain):
    assert _verify(*chain) == (True, None)


@pytest.mark.parametrize("column,value", [("after_json", '{"qty":99}'), ("actor", "mallory"),
                                          ("request_id", "forged"), ("at", "2020-01-01T00:00:00+00:00"),
                                          ("subject", "thing/z")])
def test_changing_any_field_of_a_record_names_that_record(chain, column, value):
    engine, table = chain
    target = _ids(engine, table)[4]
    with engine.begin() as conn:
        conn.execute(update(table).where(table.c.id == target).values({column: value}))
    assert _verify(engine, table) == (False, target)


def test_deleting_a_middle_record_names_its_successor_in_its_chain(chain):
    engine, table = chain
    ids = _ids(engine, table, "thing/b")
    with engine.begin() as conn:
        conn.execute(delete(table).where(table.c.id == ids[1]))
    assert _verify(engine, table) == (False, ids[2])


def test_cutting_the_tail_of_a_chain_is_detected_by_its_anchored_head(chain):
    engine, table = chain
    ids = _ids(engine, table, "thing/c")
    with engine.begin() as conn:
        conn.execute(delete(table).where(table.c.id.in_(ids[-2:])))
    with engine.connect() as conn:
        verdict = verify_audit(conn, table)
    assert not verdict.ok and verdict.bucket == bucket_of("thing/c")
    assert verdict.bad_id == ids[-3] and "removed from its end" in verdict.problem
    # The other chains are untouched; the cut one only: every record of it gone is detected too.
    with engine.begin() as conn:
        conn.execute(delete(table).where(table.c.id.in_(ids[:-2])))
    assert _verify(engine, table) == (False, None)


def test_a_forged_record_past_a_chains_head_is_named(chain):
    engine, table = chain
    with engine.connect() as conn:
        last = conn.execute(table.select().where(table.c.subject == "thing/a").order_by(table.c.seq.desc())).first()
    with engine.begin() as conn:
        forged = conn.execute(insert(table).values(
            at=last.at, actor="mallory", action="x", subject="thing/a", before_json="null", after_json="null",
            request_id="", reason="", prev_hash=last.hash, hash="f" * 64, bucket=last.bucket, seq=last.seq + 1)
        ).inserted_primary_key[0]
    assert _verify(engine, table) == (False, forged)


def test_recomputing_the_hash_of_a_changed_record_still_breaks_at_the_next(chain):
    engine, table = chain
    ids = _ids(engine, table, "thing/a")
    from services.common.audit import _record_of, record_hash
    with engine.begin() as conn:
        conn.execute(update(table).where(table.c.id == ids[1]).values(after_json='{"qty":1000}'))
        row = conn.execute(table.select().where(table.c.id == ids[1])).one()
        conn.execute(update(table).where(table.c.id == ids[1]).values(hash=record_hash(row.prev_hash, _record_of(row))))
    assert _verify(engine, table) == (False, ids[2])


def test_the_heads_digest_changes_with_every_append(chain):
    engine, table = chain
    with engine.connect() as conn:
        before = chain_head(conn, table)
    with engine.begin() as conn:
        append_audit(conn, table, actor="a", action="y", subject="thing/a", after=1, request_id="r")
    with engine.connect() as conn:
        after = chain_head(conn, table)
    assert before[0] == 12 and after[0] == 13 and before[1] != after[1]


def test_rolled_back_append_leaves_no_trace(chain):
    engine, table = chain
    with pytest.raises(RuntimeError):
        with engine.begin() as conn:
            append_audit(conn, table, actor="a", action="x", subject="s", before=None, after=1, request_id="r")
            raise RuntimeError("the mutation failed")
    with engine.begin() as conn:
        append_audit(conn, table, actor="a", action="y", subject="s", before=None, after=2, request_id="r2")
    assert _verify(engine, table) == (True, None)
    assert len(_ids(engine, table)) == 13


def test_concurrent_appenders_never_fork_a_chain(chain):
    engine, table = chain
    errors = []

    def writer(n):
        try:
            for i in range(25):
                with engine.begin() as conn:
                    # Some subjects shared by every writer (one chain, contended), some their own.
                    subject = SUBJECTS[i % 3] if i % 2 else f"w{n}/s{i}"
                    append_audit(conn, table, actor=f"w{n}", action="race", subject=subject, before=None,
                                 after={"i": i}, request_id=f"{n}-{i}")
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(_ids(engine, table)) == 12 + 200
    assert _verify(engine, table) == (True, None)
    with engine.connect() as conn:  # seq runs 1..n in every chain: no fork, no gap
        rows = conn.execute(select(table.c.bucket, table.c.seq)).fetchall()
    for b in {r.bucket for r in rows}:
        assert sorted(r.seq for r in rows if r.bucket == b) == list(range(1, 1 + sum(r.bucket == b for r in rows)))


@pytest.mark.postgres
def test_appends_to_different_chains_do_not_wait_for_each_other(pg_url):
    """No table-wide lock: while one transaction holds chain A open, another
    appends to chain B and commits; a third on chain A waits for the first."""
    engine = make_engine(pg_url)
    metadata = MetaData()
    table = audit_table(metadata, "demo_audit_log")
    metadata.create_all(engine)
    a, b = "thing/a", "thing/b"
    try:
        holder = engine.connect()
        tx = holder.begin()
        append_audit(holder, table, actor="x", action="hold", subject=a, after=1, request_id="")
        other_done, same_done = threading.Event(), threading.Event()

        def append(subject, done):
            with engine.begin() as conn:
                append_audit(conn, table, actor="y", action="go", subject=subject, after=2, request_id="")
            done.set()

        threads = [threading.Thread(target=append, args=(b, other_done)),
                   threading.Thread(target=append, args=(a, same_done))]
        for t in threads:
            t.start()
        assert other_done.wait(60), "an append to another chain waited for an open transaction"
        assert not same_done.is_set()  # the same chain is serialized
        tx.commit()
        holder.close()
        for t in threads:
            t.join(60)
        assert same_done.is_set()
        with engine.connect() as conn:
            assert verify_chain(conn, table) == (True, None)
    finally:
        engine.dispose()


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
    with engine.begin() as conn:  # a record in a chain that has no head
        conn.execute(insert(table).values(at="x", actor="mallory", action="a", subject="s", before_json="null",
                                          after_json="null", request_id="", reason="", prev_hash="0" * 64,
                                          hash="f" * 64, bucket=BUCKETS + 1, seq=1))
    bad = _cli("--service", "benefits", "--database-url", url)
    assert bad.returncode == 1 and "BROKEN at record id 4" in bad.stdout
    with engine.begin() as conn:  # gone again, but the tail of a real chain cut too
        conn.execute(delete(table).where(table.c.id >= 3))
    cut = _cli("--service", "benefits", "--database-url", url)
    assert cut.returncode == 1 and "removed from its end" in cut.stdout
    missing = _cli("--service", "scoring", "--database-url", url)
    assert missing.returncode == 2
    engine.dispose()
