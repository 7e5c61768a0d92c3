"""Versioned ruleset storage (SQLAlchemy Core), in each service's database.

Lifecycle: DRAFT → PUBLISHED → RETIRED. A published version's document never
changes. Exactly one version per name is active (row in ``rules_active``);
publishing activates a draft and retires the version it replaces; rollback
re-activates an older published or retired version. Every change is an event
row with who, when and why. ``rules_active.generation`` rises on every
activation so running services poll one cheap query.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from sqlalchemy import (Column, DateTime, Engine, ForeignKeyConstraint, Integer, MetaData, String, Table, Text,
                        UniqueConstraint, func, insert, select, update)
from sqlalchemy.exc import IntegrityError

from services.common.db import retry_on_conflict
from services.common.errors import Aborted, FailedPrecondition, NotFound

from .document import checksum

DRAFT, PUBLISHED, RETIRED = "DRAFT", "PUBLISHED", "RETIRED"

metadata = MetaData()

versions = Table(
    "rules_versions", metadata,
    Column("name", String(100), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("kind", String(100), nullable=False),
    Column("status", String(16), nullable=False),
    Column("checksum", String(64), nullable=False),
    Column("document", Text, nullable=False),
    Column("comment", Text, nullable=False, default=""),
    Column("created_by", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("published_by", String(200)),
    Column("published_at", DateTime(timezone=True)),
)

active = Table(
    "rules_active", metadata,
    Column("name", String(100), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("generation", Integer, nullable=False),
    Column("activated_by", String(200), nullable=False),
    Column("activated_at", DateTime(timezone=True), nullable=False),
    ForeignKeyConstraint(["name", "version"], ["rules_versions.name", "rules_versions.version"]),
)

events = Table(
    "rules_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, index=True),
    Column("version", Integer, nullable=False),
    Column("action", String(16), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("request_id", String(200)),
    UniqueConstraint("action", "request_id", name="uq_rules_events_request"),
)


@dataclass(frozen=True)
class VersionRecord:
    name: str
    version: int
    kind: str
    status: str
    checksum: str
    document: str
    comment: str
    created_by: str
    created_at: datetime
    published_by: str | None
    published_at: datetime | None
    active: bool = False


@dataclass(frozen=True)
class ActiveRef:
    name: str
    version: int
    kind: str
    generation: int


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _record(row, active_version: int | None) -> VersionRecord:
    return VersionRecord(
        name=row.name, version=row.version, kind=row.kind, status=row.status, checksum=row.checksum,
        document=row.document, comment=row.comment or "", created_by=row.created_by, created_at=row.created_at,
        published_by=row.published_by, published_at=row.published_at, active=row.version == active_version,
    )


class RuleStore:
    def __init__(self, engine: Engine, clock: Callable[[], datetime] = _now):
        self.engine = engine
        self.clock = clock

    # -- reads -------------------------------------------------------------
    def _active_version(self, conn, name: str) -> int | None:
        return conn.execute(select(active.c.version).where(active.c.name == name)).scalar()

    def get(self, name: str, version: int = 0) -> VersionRecord:
        """``version`` 0 = the active one."""
        with self.engine.connect() as conn:
            current = self._active_version(conn, name)
            wanted = version or current
            if wanted is None:
                raise NotFound(f"ruleset {name} has no active version", metadata={"ruleset": name})
            row = conn.execute(select(versions).where(versions.c.name == name,
                                                      versions.c.version == wanted)).first()
        if row is None:
            raise NotFound(f"ruleset {name} version {wanted} not found",
                           metadata={"ruleset": name, "version": wanted})
        return _record(row, current)

    def list_versions(self, name: str) -> list[VersionRecord]:
        with self.engine.connect() as conn:
            current = self._active_version(conn, name)
            rows = conn.execute(select(versions).where(versions.c.name == name)
                                .order_by(versions.c.version.desc())).all()
        if not rows:
            raise NotFound(f"ruleset {name} not found", metadata={"ruleset": name})
        return [_record(r, current) for r in rows]

    def list_active(self, kinds: set[str] | None = None) -> list[ActiveRef]:
        """The poll query of running services."""
        query = (select(active.c.name, active.c.version, active.c.generation, versions.c.kind)
                 .join(versions, (versions.c.name == active.c.name) & (versions.c.version == active.c.version)))
        if kinds is not None:
            query = query.where(versions.c.kind.in_(sorted(kinds)))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(active.c.name)).all()
        return [ActiveRef(r.name, r.version, r.kind, r.generation) for r in rows]

    def names(self, kinds: set[str] | None = None) -> list[str]:
        query = select(versions.c.name).distinct()
        if kinds is not None:
            query = query.where(versions.c.kind.in_(sorted(kinds)))
        with self.engine.connect() as conn:
            return sorted(conn.execute(query).scalars())

    def events(self, name: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(events).where(events.c.name == name).order_by(events.c.id)).mappings().all()
        return [dict(r) for r in rows]

    def _replayed(self, conn, action: str, request_id: str | None):
        if not request_id:
            return None
        return conn.execute(select(events.c.name, events.c.version)
                            .where(events.c.action == action, events.c.request_id == request_id)).first()

    # -- writes ------------------------------------------------------------
    def create_version(self, name: str, kind: str, document: str, actor: str, comment: str = "",
                       request_id: str | None = None) -> VersionRecord:
        """Stores a validated document as the next DRAFT version."""
        digest = checksum(document)

        def attempt() -> tuple[str, int]:
            with self.engine.begin() as conn:
                replay = self._replayed(conn, "CREATE", request_id)
                if replay:
                    return replay.name, replay.version
                existing_kind = conn.execute(select(versions.c.kind).where(versions.c.name == name).limit(1)).scalar()
                if existing_kind is not None and existing_kind != kind:
                    raise FailedPrecondition(f"ruleset {name} is of kind {existing_kind}, not {kind}",
                                             reason="KIND_MISMATCH",
                                             metadata={"ruleset": name, "kind": existing_kind})
                latest = conn.execute(select(func.max(versions.c.version)).where(versions.c.name == name)).scalar()
                version = (latest or 0) + 1
                now = self.clock()
                conn.execute(insert(versions).values(
                    name=name, version=version, kind=kind, status=DRAFT, checksum=digest, document=document,
                    comment=comment, created_by=actor, created_at=now))
                conn.execute(insert(events).values(name=name, version=version, action="CREATE", actor=actor, at=now,
                                                   reason=comment, request_id=request_id or None))
                return name, version

        name, version = self._write(attempt)
        return self.get(name, version)

    def publish(self, name: str, version: int, actor: str, reason: str = "",
                request_id: str | None = None) -> VersionRecord:
        """Activates a DRAFT (which becomes immutable); the replaced version retires.
        The caller has already validated the document and run its examples."""

        def attempt() -> None:
            with self.engine.begin() as conn:
                if self._replayed(conn, "PUBLISH", request_id):
                    return
                row = conn.execute(select(versions).where(versions.c.name == name, versions.c.version == version)
                                   .with_for_update()).first()
                if row is None:
                    raise NotFound(f"ruleset {name} version {version} not found",
                                   metadata={"ruleset": name, "version": version})
                if row.status != DRAFT:
                    raise FailedPrecondition(f"{name} v{version} is {row.status}; only a DRAFT can be published "
                                             f"(use rollback to re-activate an older version)", reason="WRONG_STATE",
                                             metadata={"ruleset": name, "version": version, "status": row.status})
                now = self.clock()
                conn.execute(update(versions).where(versions.c.name == name, versions.c.version == version)
                             .values(status=PUBLISHED, published_by=actor, published_at=now))
                self._activate(conn, name, version, actor, now)
                conn.execute(insert(events).values(name=name, version=version, action="PUBLISH", actor=actor, at=now,
                                                   reason=reason, request_id=request_id or None))

        self._write(attempt)
        return self.get(name, version)

    def rollback(self, name: str, to_version: int, actor: str, reason: str = "",
                 request_id: str | None = None) -> VersionRecord:
        def attempt() -> None:
            with self.engine.begin() as conn:
                if self._replayed(conn, "ROLLBACK", request_id):
                    return
                row = conn.execute(select(versions).where(versions.c.name == name, versions.c.version == to_version)
                                   .with_for_update()).first()
                if row is None:
                    raise NotFound(f"ruleset {name} version {to_version} not found",
                                   metadata={"ruleset": name, "version": to_version})
                if row.status == DRAFT:
                    raise FailedPrecondition(f"{name} v{to_version} was never published; publish it instead",
                                             reason="WRONG_STATE",
                                             metadata={"ruleset": name, "version": to_version, "status": row.status})
                if self._active_version(conn, name) == to_version:
                    raise FailedPrecondition(f"{name} v{to_version} is already active", reason="WRONG_STATE",
                                             metadata={"ruleset": name, "version": to_version, "status": "ACTIVE"})
                now = self.clock()
                conn.execute(update(versions).where(versions.c.name == name, versions.c.version == to_version)
                             .values(status=PUBLISHED))
                self._activate(conn, name, to_version, actor, now)
                conn.execute(insert(events).values(name=name, version=to_version, action="ROLLBACK", actor=actor,
                                                   at=now, reason=reason, request_id=request_id or None))

        self._write(attempt)
        return self.get(name, to_version)

    def _activate(self, conn, name: str, version: int, actor: str, now: datetime) -> None:
        current = conn.execute(select(active).where(active.c.name == name).with_for_update()).first()
        if current is None:
            conn.execute(insert(active).values(name=name, version=version, generation=1, activated_by=actor,
                                               activated_at=now))
            return
        conn.execute(update(versions).where(versions.c.name == name, versions.c.version == current.version)
                     .values(status=RETIRED))
        conn.execute(update(active).where(active.c.name == name).values(
            version=version, generation=current.generation + 1, activated_by=actor, activated_at=now))

    def _write(self, attempt):
        try:
            return retry_on_conflict(attempt)
        except IntegrityError as exc:
            # Two writers took the same version number or request id at once.
            raise Aborted(f"concurrent change to the ruleset, retry: {exc.orig.__class__.__name__}") from None
