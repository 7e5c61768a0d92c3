"""make_engine, UnitOfWork, transaction, run_migrations, retry_on_conflict on
real databases (SQLite and PostgreSQL via `db_url`)."""

import textwrap
import threading
import time

import pytest
import sqlalchemy as sa
from google.rpc import code_pb2
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.db import (UnitOfWork, is_conflict, is_postgres, make_engine, make_session_factory,
                                retry_on_conflict, run_migrations, transaction)
from services.common.grpc_errors import to_status_proto
from services.common.testing import free_port


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "account"
    id: Mapped[int] = mapped_column(primary_key=True)
    balance_fen: Mapped[int]


class Entry(Base):
    __tablename__ = "entry"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("account.id"))


@pytest.fixture
def engine(db_url):
    eng = make_engine(db_url)
    Base.metadata.create_all(eng)
    yield eng
    eng.dispose()


def count(engine):
    with engine.connect() as c:
        return c.execute(sa.text("SELECT count(*) FROM account")).scalar_one()


def test_unit_of_work_commits(engine):
    factory = make_session_factory(engine)
    with UnitOfWork(factory) as uow:
        uow.session.add(Account(id=1, balance_fen=100))
        uow.commit()
    assert count(engine) == 1


def test_unit_of_work_rolls_back_unless_committed(engine):
    factory = make_session_factory(engine)
    with UnitOfWork(factory) as uow:
        uow.session.add(Account(id=1, balance_fen=100))
        uow.session.flush()
    assert count(engine) == 0
    with pytest.raises(RuntimeError):
        with UnitOfWork(factory) as uow:
            uow.session.add(Account(id=2, balance_fen=100))
            uow.session.flush()
            raise RuntimeError("use case failed")
    assert count(engine) == 0


def test_work_after_commit_is_rolled_back(engine):
    with UnitOfWork(make_session_factory(engine)) as uow:
        uow.session.add(Account(id=1, balance_fen=1))
        uow.commit()
        uow.session.add(Account(id=2, balance_fen=2))
        uow.session.flush()
    assert count(engine) == 1


def test_transaction_commits_and_rolls_back(engine):
    with transaction(engine) as conn:
        conn.execute(sa.text("INSERT INTO account (id, balance_fen) VALUES (1, 5)"))
    with pytest.raises(ZeroDivisionError):
        with transaction(engine) as conn:
            conn.execute(sa.text("INSERT INTO account (id, balance_fen) VALUES (2, 5)"))
            1 / 0
    assert count(engine) == 1


def test_foreign_keys_are_enforced(engine):
    with pytest.raises(sa_exc.IntegrityError):
        with transaction(engine) as conn:
            conn.execute(sa.text("INSERT INTO entry (id, account_id) VALUES (1, 999)"))


def test_is_postgres(engine, db_url):
    assert is_postgres(engine) == db_url.startswith("postgresql")


def test_sqlite_pragmas(tmp_path):
    eng = make_engine(f"sqlite:///{tmp_path}/sub/dir/x.db")  # parent dirs created
    with eng.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    eng.dispose()


def test_plain_postgresql_url_uses_psycopg3(pg_url):
    eng = make_engine(pg_url.replace("postgresql+psycopg://", "postgresql://"))
    assert eng.dialect.driver == "psycopg"
    with eng.connect() as c:
        assert c.execute(sa.text("SELECT 1")).scalar() == 1
    eng.dispose()


def test_concurrent_read_modify_write_does_not_fail_or_lose_updates(engine, db_url):
    """Many threads increment one row: no 'database is locked', no lost update."""
    with transaction(engine) as conn:
        conn.execute(sa.text("INSERT INTO account (id, balance_fen) VALUES (1, 0)"))
    lock_clause = " FOR UPDATE" if db_url.startswith("postgresql") else ""
    errors = []

    def worker():
        try:
            for _ in range(10):
                with transaction(engine) as conn:
                    bal = conn.execute(sa.text("SELECT balance_fen FROM account WHERE id = 1" + lock_clause)).scalar()
                    conn.execute(sa.text("UPDATE account SET balance_fen = :b WHERE id = 1"), {"b": bal + 1})
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT balance_fen FROM account")).scalar() == 80


def test_retry_on_conflict_survives_real_serialization_failure(pg_url):
    """Two SERIALIZABLE transactions write skew; the loser gets 40001 and
    retry_on_conflict re-runs it to success."""
    eng = make_engine(pg_url, isolation_level="SERIALIZABLE")
    with eng.begin() as c:
        c.execute(sa.text("CREATE TABLE oncall (doctor text PRIMARY KEY, on_call bool NOT NULL)"))
        c.execute(sa.text("INSERT INTO oncall VALUES ('a', true), ('b', true)"))

    a_read, b_committed = threading.Event(), threading.Event()
    attempts = []

    def take_off(doctor, first_attempt_hook):
        def txn():
            attempts.append(doctor)
            with eng.begin() as c:
                n = c.execute(sa.text("SELECT count(*) FROM oncall WHERE on_call")).scalar()
                first_attempt_hook()
                if n > 1:
                    c.execute(sa.text("UPDATE oncall SET on_call = false WHERE doctor = :d"), {"d": doctor})
        return txn

    def a_hook():
        if attempts.count("a") == 1:
            a_read.set()
            assert b_committed.wait(10)

    first_error = []

    def run_a():
        try:
            retry_on_conflict(take_off("a", a_hook), attempts=5)
        except Exception as exc:  # noqa: BLE001
            first_error.append(exc)

    t = threading.Thread(target=run_a)
    t.start()
    assert a_read.wait(10)
    take_off("b", lambda: None)()  # commits first
    b_committed.set()
    t.join(20)
    assert first_error == []
    assert attempts.count("a") == 2, attempts  # failed once with 40001, then re-ran
    with eng.connect() as c:
        on_call = c.execute(sa.text("SELECT count(*) FROM oncall WHERE on_call")).scalar()
    assert on_call == 1  # the invariant held: the retry saw b's change

    # Without retry the same race surfaces as a conflict -> ABORTED.
    attempts.clear()
    with eng.begin() as c:
        c.execute(sa.text("UPDATE oncall SET on_call = true"))
    a_read.clear(), b_committed.clear()
    caught = []

    def run_a_once():
        try:
            take_off("a", a_hook)()
        except Exception as exc:  # noqa: BLE001
            caught.append(exc)

    t = threading.Thread(target=run_a_once)
    t.start()
    assert a_read.wait(10)
    take_off("b", lambda: None)()
    b_committed.set()
    t.join(20)
    assert len(caught) == 1 and is_conflict(caught[0])
    assert to_status_proto(caught[0]).code == code_pb2.ABORTED
    eng.dispose()


def test_unreachable_postgres_maps_to_unavailable():
    eng = make_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere")
    with pytest.raises(sa_exc.OperationalError) as info:
        with eng.connect():
            pass
    st = to_status_proto(info.value)
    assert st.code == code_pb2.UNAVAILABLE and st.message == "database unavailable"


def _alembic_history(root):
    """A two-revision Alembic history whose env.py is the one-line run_env()."""
    (root / "versions").mkdir(parents=True)
    (root / "env.py").write_text("from services.common.migrations_env import run_env\nrun_env()\n")
    (root / "script.py.mako").write_text("")
    (root / "versions" / "0001_widget.py").write_text(textwrap.dedent("""
        from alembic import op
        import sqlalchemy as sa
        revision = "0001"
        down_revision = None
        def upgrade():
            op.create_table("widget", sa.Column("id", sa.Integer, primary_key=True))
    """))
    (root / "versions" / "0002_gadget.py").write_text(textwrap.dedent("""
        from alembic import op
        import sqlalchemy as sa
        revision = "0002"
        down_revision = "0001"
        def upgrade():
            op.create_table("gadget", sa.Column("id", sa.Integer, primary_key=True),
                            sa.Column("widget_id", sa.Integer, sa.ForeignKey("widget.id")))
    """))


def test_run_migrations_upgrades_to_head_in_own_version_table(db_url, tmp_path):
    _alembic_history(tmp_path / "mig")
    run_migrations(db_url, str(tmp_path / "mig"), "alembic_version_widgets")
    run_migrations(db_url, str(tmp_path / "mig"), "alembic_version_widgets")  # idempotent
    eng = make_engine(db_url)
    tables = set(sa.inspect(eng).get_table_names())
    assert {"widget", "gadget", "alembic_version_widgets"} <= tables
    assert "alembic_version" not in tables
    with eng.connect() as c:
        assert c.execute(sa.text("SELECT version_num FROM alembic_version_widgets")).scalar() == "0002"
    eng.dispose()


def test_two_services_share_a_database_with_separate_histories(db_url, tmp_path):
    _alembic_history(tmp_path / "a")
    (tmp_path / "b" / "versions").mkdir(parents=True)
    (tmp_path / "b" / "env.py").write_text((tmp_path / "a" / "env.py").read_text())
    (tmp_path / "b" / "script.py.mako").write_text("")
    (tmp_path / "b" / "versions" / "b1.py").write_text(textwrap.dedent("""
        from alembic import op
        import sqlalchemy as sa
        revision = "b1"
        down_revision = None
        def upgrade():
            op.create_table("other", sa.Column("id", sa.Integer, primary_key=True))
    """))
    run_migrations(db_url, str(tmp_path / "a"), "alembic_version_a")
    run_migrations(db_url, str(tmp_path / "b"), "alembic_version_b")
    eng = make_engine(db_url)
    with eng.connect() as c:
        assert c.execute(sa.text("SELECT version_num FROM alembic_version_a")).scalar() == "0002"
        assert c.execute(sa.text("SELECT version_num FROM alembic_version_b")).scalar() == "b1"
    eng.dispose()


def test_failed_migration_leaves_nothing_behind(db_url, tmp_path):
    _alembic_history(tmp_path / "mig")
    (tmp_path / "mig" / "versions" / "0003_broken.py").write_text(textwrap.dedent("""
        from alembic import op
        revision = "0003"
        down_revision = "0002"
        def upgrade():
            op.execute("SELECT * FROM no_such_table")
    """))
    with pytest.raises(sa_exc.DBAPIError):
        run_migrations(db_url, str(tmp_path / "mig"), "alembic_version_x")
    eng = make_engine(db_url)
    assert "widget" not in sa.inspect(eng).get_table_names()  # one transaction, all rolled back
    eng.dispose()


def test_database_ready(db_url):
    from services.common.db import database_ready

    eng = make_engine(db_url)
    assert database_ready(eng)() is True
    eng.dispose()
    down = make_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere")
    assert database_ready(down)() is False


def test_sqlite_readonly_transactions_do_not_take_the_write_lock(tmp_path):
    eng = make_engine(f"sqlite:///{tmp_path}/x.db", pool_size=2)
    with eng.begin() as c:
        c.execute(sa.text("CREATE TABLE t (x int)"))
    with eng.connect() as writer:
        writer.begin()
        writer.execute(sa.text("INSERT INTO t VALUES (1)"))  # holds the write lock
        with eng.connect().execution_options(sqlite_readonly=True) as reader:
            started = time.monotonic()
            assert reader.execute(sa.text("SELECT count(*) FROM t")).scalar() == 0
            assert time.monotonic() - started < 1
        writer.rollback()
    eng.dispose()
