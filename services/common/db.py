"""Database engine, unit of work, transactions, conflict retry, migrations.

Every service runs on SQLite (dev, tests) and PostgreSQL (production); the
differences are contained here.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 30_000
# PostgreSQL SQLSTATEs that mean "you lost a race, run the transaction again".
PG_RETRYABLE = {"40001", "40P01"}  # serialization_failure, deadlock_detected


def normalize_url(url: str) -> str:
    """Route plain postgresql:// URLs to psycopg 3 (the driver we ship)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


# Threads besides the RPC workers that may hold a connection at once: the
# rule poller, the readiness check, a service's background loops (feed
# follower, housekeeping, reconcile) and a batch's read-ahead.
BACKGROUND_CONNECTIONS = 4


def pool_size_for(concurrency: int, background: int = BACKGROUND_CONNECTIONS) -> int:
    """Connections a service needs when `concurrency` calls run at once."""
    return concurrency + background


def make_engine(url: str, *, pool_size: int | None = None, **kwargs) -> Engine:
    """`pool_size`: a fixed pool of that many connections, no overflow.

    SQLAlchemy's default (5 + 10 overflow) opened and closed a connection
    per call once more than 15 ran at once, and PostgreSQL spent ~2 ms of
    CPU starting each one. A pool sized to the calls a service admits keeps
    every connection it ever opens, and never opens more than it holds."""
    url = normalize_url(url)
    parsed = make_url(url)
    in_memory = parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")
    if pool_size is not None and not in_memory:  # in-memory SQLite has one connection per thread anyway
        kwargs.update(pool_size=pool_size, max_overflow=0)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, parsed.database, **kwargs)
    if parsed.get_backend_name() == "postgresql":
        # Fail fast when the server is down so readiness flips quickly.
        kwargs.setdefault("connect_args", {}).setdefault("connect_timeout", 5)
    engine = create_engine(url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _ping_when_idle(engine)
    return engine


# A connection back from the pool after this long unused is pinged first.
IDLE_PING_SECONDS = 10.0


def _ping_when_idle(engine: Engine) -> None:
    """pool_pre_ping, but only for connections idle a while: the blanket
    pre-ping cost a round trip and ~10 % of a read call's CPU on every
    checkout, for connections that were in use milliseconds ago. A busy
    connection broken by a database restart fails its statement instead;
    the error maps to UNAVAILABLE (retryable) and SQLAlchemy then discards
    every connection of the pool opened before it, so the pool heals on the
    next checkout. A connection that sat idle (where firewalls, PgBouncer or
    a restart while quiet leave dead sockets) is checked before use and
    replaced transparently, as with pre-ping."""

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_conn, record):
        record.info["kequn_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn, record, _proxy):
        since = record.info.get("kequn_idle_since")
        if since is None or time.monotonic() - since < IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # noqa: BLE001 - the pool retries with a new connection
            raise sa_exc.DisconnectionError(f"idle connection is dead: {exc}") from exc


@contextmanager
def read_connection(engine: Engine) -> Iterator[Connection]:
    """A pooled connection for a read that needs no transaction: on
    PostgreSQL in autocommit, so a one-statement read costs one round trip
    instead of three (BEGIN, the query, ROLLBACK). SQLite: a read-only
    transaction (kequn's BEGIN, not BEGIN IMMEDIATE)."""
    if is_postgres(engine):
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            yield conn
    else:
        with engine.connect().execution_options(sqlite_readonly=True) as conn, conn.begin():
            yield conn


def _sqlite_engine(url: str, database: str | None, **kwargs) -> Engine:
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    connect_args = kwargs.pop("connect_args", {})
    connect_args.setdefault("check_same_thread", False)
    connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
    engine = create_engine(url, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Take transaction control from the driver so "begin" below decides.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # BEGIN IMMEDIATE takes the write lock up front. A deferred transaction
        # that reads and then writes fails with "database is locked" at once
        # (busy_timeout cannot help: its snapshot is stale); IMMEDIATE waits.
        # Pure readers may opt out: conn.execution_options(sqlite_readonly=True).
        readonly = conn.get_execution_options().get("sqlite_readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


def is_postgres(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "postgresql"


def database_ready(engine: Engine) -> Callable[[], bool]:
    """A readiness check for ServiceServer: can we run SELECT 1 right now?"""

    def check() -> bool:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            log.warning("database not ready: %s", exc)
            return False

    return check


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: use cases return values read inside the unit
    # of work after it committed.
    return sessionmaker(engine, expire_on_commit=False)


class UnitOfWork:
    """`with UnitOfWork(factory) as uow: ...; uow.commit()` — rolls back unless committed."""

    def __init__(self, session_factory: Callable[[], Session]) -> None:
        self._factory = session_factory
        self.session: Session | None = None

    def __enter__(self) -> "UnitOfWork":
        self.session = self._factory()
        return self

    def __exit__(self, *exc_info) -> None:
        assert self.session is not None
        try:
            # After commit() this only discards work done since; otherwise
            # it undoes everything.
            self.session.rollback()
        finally:
            self.session.close()

    def commit(self) -> None:
        assert self.session is not None, "UnitOfWork used outside 'with'"
        self.session.commit()

    def rollback(self) -> None:
        assert self.session is not None, "UnitOfWork used outside 'with'"
        self.session.rollback()


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """A Connection inside one transaction; commits on success, rolls back on error."""
    with engine.begin() as conn:
        yield conn


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack += [getattr(e, "orig", None), e.__cause__, e.__context__]


def is_conflict(exc: BaseException) -> bool:
    """A lost race worth retrying: PG serialization failure/deadlock, SQLite busy."""
    for e in _causes(exc):
        if getattr(e, "sqlstate", None) in PG_RETRYABLE or getattr(e, "pgcode", None) in PG_RETRYABLE:
            return True
        if isinstance(e, sqlite3.OperationalError):
            code = getattr(e, "sqlite_errorcode", None)
            if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "database is locked" in str(e):
                return True
    return False


def is_unavailable(exc: BaseException) -> bool:
    """The database cannot be reached or used right now."""
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError,
                        sa_exc.TimeoutError)):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated)


def retry_on_conflict(
    fn: Callable[[], T],
    attempts: int = 5,
    *,
    base_delay: float = 0.02,
    max_delay: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run the transaction function `fn` again when it loses a race.

    `fn` must open and finish its own transaction so a re-run starts clean.
    After `attempts` tries the last error propagates (mapped to ABORTED).
    """
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt >= attempts or not is_conflict(exc):
                raise
            # Full jitter: spread competing retries apart.
            delay = random.uniform(0, min(max_delay, base_delay * 2 ** (attempt - 1)))
            log.debug("transaction conflict, retry %d/%d in %.3fs: %s", attempt, attempts, delay, exc)
            sleep(delay)
    raise AssertionError("unreachable")


def run_migrations(url: str, script_location: str, version_table: str, revision: str = "head") -> None:
    """`alembic upgrade head` for one service, without an alembic.ini.

    The service's env.py should call services.common.migrations_env.run_env(),
    which picks up the connection and version table passed here.
    """
    from alembic import command
    from alembic.config import Config

    url = normalize_url(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["version_table"] = version_table
    cfg.attributes["url"] = url
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            if is_postgres(conn):
                # Two replicas starting at once must not both migrate.
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
                             {"k": f"kequn-migrate:{version_table}"})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()
