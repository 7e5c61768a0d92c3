"""Four-eyes releases and effective dates (DOMAIN.md §7), beside the
versions in the same database and transactions.

A release asks for one DRAFT version to become active, now or at
``effective_from``:

    PENDING --approve--> APPROVED --effective_from reached--> ACTIVE
       |                    |
       reject               reject before the cancel cut-off
       v                    v
    REJECTED             CANCELLED

Approving a release without ``effective_from`` activates it at once
(PENDING -> ACTIVE). An APPROVED release is *scheduled*: every replica loads
the version ahead of time and switches at the instant by its own clock
(runtime.py); the store catches up (version PUBLISHED, ``rules_active``
moved, release ACTIVE) on the first poll or write after the instant, in
``activate_due``. The approver is neither the requester nor the author of
the version. Every step is a ``rules_events`` row (the rule store's audit
trail), with who, when and why.

Timing: a future ``effective_from`` must be at least ``lead`` seconds after
the approval, and a scheduled release can only be cancelled up to ``lead``
seconds before its instant, so every replica (polling more often than
``lead``) has seen the final word before the instant.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import (Boolean, Column, DateTime, ForeignKeyConstraint, Index, Integer, String, Table, Text,
                        func, insert, select, update)

from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied

from .store import DRAFT, PUBLISHED, RuleStore, events, metadata, versions

PENDING, APPROVED, REJECTED, ACTIVE, CANCELLED = "PENDING", "APPROVED", "REJECTED", "ACTIVE", "CANCELLED"
STATUSES = (PENDING, APPROVED, REJECTED, ACTIVE, CANCELLED)
OPEN = (PENDING, APPROVED)
SYSTEM = "system"

releases = Table(
    "rules_releases", metadata,
    Column("release_id", String(32), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("version", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("requested_by", String(200), nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("comment", Text, nullable=False),
    Column("effective_from", DateTime(timezone=True)),
    Column("decided_by", String(200)),
    Column("decided_at", DateTime(timezone=True)),
    Column("decision_comment", Text),
    Column("activated_at", DateTime(timezone=True)),
    Column("request_id", String(200), unique=True),
    ForeignKeyConstraint(["name", "version"], ["rules_versions.name", "rules_versions.version"]),
    Index("ix_rules_releases_status_effective", "status", "effective_from"),
    Index("ix_rules_releases_name", "name"),
)

# Per-ruleset release policy; no row = the kind's default (KindSpec.four_eyes).
policies = Table(
    "rules_policies", metadata,
    Column("name", String(100), primary_key=True),
    Column("four_eyes", Boolean, nullable=False),
    Column("set_by", String(200), nullable=False),
    Column("set_at", DateTime(timezone=True), nullable=False),
    Column("reason", Text, nullable=False),
)


@dataclass(frozen=True)
class Release:
    release_id: str
    name: str
    version: int
    status: str
    requested_by: str
    requested_at: datetime
    comment: str
    effective_from: datetime | None
    decided_by: str
    decided_at: datetime | None
    decision_comment: str
    activated_at: datetime | None


@dataclass(frozen=True)
class Scheduled:
    """An approved release a replica must switch to at ``effective_from``."""

    release_id: str
    name: str
    version: int
    effective_from: datetime


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back naive; they were stored as UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _release(row) -> Release:
    return Release(row.release_id, row.name, row.version, row.status, row.requested_by, aware(row.requested_at),
                   row.comment or "", aware(row.effective_from), row.decided_by or "", aware(row.decided_at),
                   row.decision_comment or "", aware(row.activated_at))


class ReleaseStore:
    """Releases of one rule store (same engine, same clock)."""

    def __init__(self, store: RuleStore, lead_seconds: float = 60.0):
        self.store = store
        self.lead = timedelta(seconds=lead_seconds)

    @property
    def engine(self):
        return self.store.engine

    def _event(self, conn, name: str, version: int, action: str, actor: str, at: datetime, reason: str,
               request_id: str | None = None) -> None:
        conn.execute(insert(events).values(name=name, version=version, action=action, actor=actor, at=at,
                                           reason=reason, request_id=request_id or None))

    # -- policy ------------------------------------------------------------
    def policy_override(self, name: str) -> bool | None:
        with self.engine.connect() as conn:
            return conn.execute(select(policies.c.four_eyes).where(policies.c.name == name)).scalar()

    def set_policy(self, name: str, four_eyes: bool, actor: str, reason: str) -> None:
        def attempt() -> None:
            with self.engine.begin() as conn:
                now = self.store.clock()
                if conn.execute(select(policies.c.name).where(policies.c.name == name)).first():
                    conn.execute(update(policies).where(policies.c.name == name).values(
                        four_eyes=four_eyes, set_by=actor, set_at=now, reason=reason))
                else:
                    conn.execute(insert(policies).values(name=name, four_eyes=four_eyes, set_by=actor, set_at=now,
                                                         reason=reason))
                latest = conn.execute(select(func.max(versions.c.version)).where(versions.c.name == name)).scalar()
                self._event(conn, name, latest or 0, "POLICY_4EYES_" + ("ON" if four_eyes else "OFF"), actor, now,
                            reason)
        self.store._write(attempt)

    # -- reads -------------------------------------------------------------
    def get(self, release_id: str) -> Release:
        with self.engine.connect() as conn:
            row = conn.execute(select(releases).where(releases.c.release_id == release_id)).first()
        if row is None:
            raise NotFound(f"release {release_id[:40]} not found")
        return _release(row)

    def list(self, names: list[str] | None = None, status: str = "", offset: int = 0,
             limit: int = 100) -> list[Release]:
        """Newest request first."""
        query = select(releases)
        if names is not None:
            query = query.where(releases.c.name.in_(sorted(names)))
        if status:
            query = query.where(releases.c.status == status)
        query = query.order_by(releases.c.requested_at.desc(), releases.c.release_id).offset(offset).limit(limit)
        with self.engine.connect() as conn:
            return [_release(r) for r in conn.execute(query)]

    def scheduled(self, names: set[str] | None = None) -> list[Scheduled]:
        """Approved releases waiting for their instant (the runtime's poll)."""
        query = (select(releases.c.release_id, releases.c.name, releases.c.version, releases.c.effective_from)
                 .where(releases.c.status == APPROVED).order_by(releases.c.effective_from))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [Scheduled(r.release_id, r.name, r.version, aware(r.effective_from)) for r in rows
                if names is None or r.name in names]

    # -- writes ------------------------------------------------------------
    def request(self, name: str, version: int, effective_from: datetime | None, actor: str, comment: str = "",
                request_id: str | None = None) -> Release:
        def attempt() -> str:
            with self.engine.begin() as conn:
                if request_id:
                    found = conn.execute(select(releases.c.release_id)
                                         .where(releases.c.request_id == request_id)).scalar()
                    if found:
                        return found
                row = conn.execute(select(versions.c.status).where(versions.c.name == name,
                                                                   versions.c.version == version)).first()
                if row is None:
                    raise NotFound(f"ruleset {name} version {version} not found")
                if row.status != DRAFT:
                    raise FailedPrecondition(f"{name} v{version} is {row.status}; only a DRAFT can be released",
                                             reason="WRONG_STATE",
                                             metadata={"ruleset": name, "version": version, "status": row.status})
                now = self.store.clock()
                if effective_from is not None and effective_from <= now:
                    raise InvalidArgument(violations=[("effective_from", "must be in the future (empty = on "
                                                                         "approval)")])
                open_one = conn.execute(select(releases.c.release_id).where(
                    releases.c.name == name, releases.c.version == version, releases.c.status.in_(OPEN))).scalar()
                if open_one:
                    raise AlreadyExists(f"{name} v{version} already has an open release {open_one}",
                                        metadata={"ruleset": name, "version": version, "release_id": open_one})
                release_id = uuid.uuid4().hex
                conn.execute(insert(releases).values(
                    release_id=release_id, name=name, version=version, status=PENDING, requested_by=actor,
                    requested_at=now, comment=comment, effective_from=effective_from, request_id=request_id or None))
                when = effective_from.isoformat() if effective_from else "on approval"
                self._event(conn, name, version, "RELEASE_REQUEST", actor, now,
                            f"release {release_id}, effective {when}: {comment}".rstrip(": "))
                return release_id

        return self.get(self.store._write(attempt))

    def approve(self, release_id: str, actor: str, comment: str = "") -> Release:
        """The second pair of eyes. Activates at once without effective_from."""
        def attempt() -> None:
            with self.engine.begin() as conn:
                row = self._locked(conn, release_id)
                if row.status != PENDING:
                    raise FailedPrecondition(f"release {release_id} is {row.status}, not PENDING",
                                             reason="WRONG_STATE",
                                             metadata={"release_id": release_id, "status": row.status})
                author = conn.execute(select(versions.c.created_by).where(
                    versions.c.name == row.name, versions.c.version == row.version)).scalar()
                if actor == row.requested_by:
                    raise PermissionDenied(f"{actor} requested this release and cannot approve it",
                                           reason="SELF_APPROVAL", metadata={"release_id": release_id})
                if actor == author:
                    raise PermissionDenied(f"{actor} wrote {row.name} v{row.version} and cannot approve its release",
                                           reason="SELF_APPROVAL", metadata={"release_id": release_id,
                                                                            "author": author})
                status = conn.execute(select(versions.c.status).where(
                    versions.c.name == row.name, versions.c.version == row.version)).scalar()
                if status != DRAFT:
                    raise FailedPrecondition(f"{row.name} v{row.version} is {status} now; the release is moot",
                                             reason="WRONG_STATE",
                                             metadata={"ruleset": row.name, "version": row.version, "status": status})
                now = self.store.clock()
                effective = aware(row.effective_from)
                if effective is not None and effective < now + self.lead:
                    raise FailedPrecondition(
                        f"effective_from {effective.isoformat()} is less than {self.lead.total_seconds():g}s away: "
                        f"request a new release with a later date", reason="EFFECTIVE_FROM_TOO_SOON",
                        metadata={"release_id": release_id, "effective_from": effective.isoformat(),
                                  "lead_seconds": f"{self.lead.total_seconds():g}"})
                values = dict(decided_by=actor, decided_at=now, decision_comment=comment)
                self._event(conn, row.name, row.version, "RELEASE_APPROVE", actor, now,
                            f"release {release_id}: {comment}".rstrip(": "))
                if effective is None:
                    self._activate(conn, row, now, actor)
                    values.update(status=ACTIVE, activated_at=now)
                else:
                    values.update(status=APPROVED)
                conn.execute(update(releases).where(releases.c.release_id == release_id).values(**values))

        self.store._write(attempt)
        return self.get(release_id)

    def reject(self, release_id: str, actor: str, comment: str = "") -> Release:
        """PENDING -> REJECTED; APPROVED (not yet in force) -> CANCELLED, up
        to ``lead`` before its instant."""
        def attempt() -> None:
            with self.engine.begin() as conn:
                row = self._locked(conn, release_id)
                now = self.store.clock()
                if row.status == PENDING:
                    status, action = REJECTED, "RELEASE_REJECT"
                elif row.status == APPROVED:
                    effective = aware(row.effective_from)
                    if now > effective - self.lead:
                        raise FailedPrecondition(
                            f"release {release_id} takes effect at {effective.isoformat()}: too late to cancel "
                            f"(cut-off {self.lead.total_seconds():g}s before); roll back after it instead",
                            reason="TOO_LATE_TO_CANCEL",
                            metadata={"release_id": release_id, "effective_from": effective.isoformat(),
                                      "lead_seconds": f"{self.lead.total_seconds():g}"})
                    status, action = CANCELLED, "RELEASE_CANCEL"
                else:
                    raise FailedPrecondition(f"release {release_id} is {row.status}", reason="WRONG_STATE",
                                             metadata={"release_id": release_id, "status": row.status})
                conn.execute(update(releases).where(releases.c.release_id == release_id).values(
                    status=status, decided_by=actor, decided_at=now, decision_comment=comment))
                self._event(conn, row.name, row.version, action, actor, now,
                            f"release {release_id}: {comment}".rstrip(": "))

        self.store._write(attempt)
        return self.get(release_id)

    def activate_due(self, now: datetime | None = None) -> list[Release]:
        """Makes the store agree with what replicas already serve: every
        APPROVED release whose instant has passed becomes ACTIVE, in
        effective_from order. Safe to run from every replica at once."""
        now = now or self.store.clock()
        with self.engine.connect() as conn:
            due = conn.execute(select(releases.c.release_id).where(
                releases.c.status == APPROVED, releases.c.effective_from <= now)
                .order_by(releases.c.effective_from)).scalars().all()
        done = []
        for release_id in due:
            def attempt(release_id=release_id) -> bool:
                with self.engine.begin() as conn:
                    row = self._locked(conn, release_id)
                    if row.status != APPROVED:
                        return False  # another replica did it
                    self._activate(conn, row, aware(row.effective_from), SYSTEM)
                    conn.execute(update(releases).where(releases.c.release_id == release_id).values(
                        status=ACTIVE, activated_at=now))
                    return True
            if self.store._write(attempt):
                done.append(self.get(release_id))
        return done

    def _locked(self, conn, release_id: str):
        row = conn.execute(select(releases).where(releases.c.release_id == release_id).with_for_update()).first()
        if row is None:
            raise NotFound(f"release {release_id[:40]} not found")
        return row

    def _activate(self, conn, row, at: datetime, actor: str) -> None:
        """The publish of the version, attributed to the approver."""
        approver = row.decided_by or actor
        conn.execute(update(versions).where(versions.c.name == row.name, versions.c.version == row.version,
                                            versions.c.status == DRAFT)
                     .values(status=PUBLISHED, published_by=approver, published_at=at))
        self.store._activate(conn, row.name, row.version, approver, at)
        self._event(conn, row.name, row.version, "RELEASE_ACTIVATE", actor, at,
                    f"release {row.release_id} requested by {row.requested_by}, approved by {approver}")
