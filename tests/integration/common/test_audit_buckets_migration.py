"""The migration to per-bucket audit chains keeps existing records
verifiable: they become the legacy chain, new chains start from its last
hash, and cutting its tail is still detected. Real Alembic migrations of a
real service (tiering), on SQLite and PostgreSQL."""
from __future__ import annotations

from sqlalchemy import delete, select, text

from services.common.audit import GENESIS, LEGACY_BUCKET, append_audit, record_hash, verify_audit
from services.common.db import make_engine, run_migrations
from services.common.testing import REPO_ROOT
from services.tiering.store import audit_log

MIGRATIONS = str(REPO_ROOT / "services" / "tiering" / "migrations")
VERSION_TABLE = "alembic_version_tiering"


def _legacy_records(conn, n: int) -> list[str]:
    """What the single-chain audit log wrote before the buckets (its columns only)."""
    prev, hashes = GENESIS, []
    for i in range(n):
        record = {"at": f"2026-01-0{i + 1}T00:00:00.000000+00:00", "actor": "ops", "action": "old.thing",
                  "subject": f"customer/C{i}", "before": None, "after": {"i": i}, "request_id": f"r{i}",
                  "reason": ""}
        digest = record_hash(prev, record)
        conn.execute(text(
            "INSERT INTO tiering_audit_log (at, actor, action, subject, before_json, after_json, request_id, "
            "reason, prev_hash, hash) VALUES (:at, 'ops', 'old.thing', :subject, 'null', :after, :rid, '', "
            ":prev, :hash)"),
            dict(at=record["at"], subject=record["subject"], after=f'{{"i":{i}}}', rid=record["request_id"],
                 prev=prev, hash=digest))
        prev = digest
        hashes.append(digest)
    return hashes


def test_old_records_stay_verifiable_and_anchor_the_new_chains(db_url):
    run_migrations(db_url, MIGRATIONS, VERSION_TABLE, "tiering_0002")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            legacy = _legacy_records(conn, 5)
        run_migrations(db_url, MIGRATIONS, VERSION_TABLE)
        with engine.connect() as conn:
            assert verify_audit(conn, audit_log).ok
            rows = conn.execute(select(audit_log.c.bucket, audit_log.c.seq).order_by(audit_log.c.id)).fetchall()
        assert [tuple(r) for r in rows] == [(LEGACY_BUCKET, i) for i in range(1, 6)]

        with engine.begin() as conn:
            append_audit(conn, audit_log, actor="ops", action="new.thing", subject="customer/N1", after=1,
                         request_id="n1")
        with engine.connect() as conn:
            assert verify_audit(conn, audit_log).ok
            first_new = conn.execute(select(audit_log).where(audit_log.c.bucket != LEGACY_BUCKET)).one()
        assert first_new.prev_hash == legacy[-1] and first_new.seq == 1

        # Cutting the legacy chain's tail: its anchored head no longer matches.
        with engine.begin() as conn:
            conn.execute(delete(audit_log).where(audit_log.c.hash == legacy[-1]))
        with engine.connect() as conn:
            verdict = verify_audit(conn, audit_log)
        assert not verdict.ok and verdict.bucket == LEGACY_BUCKET and "removed from its end" in verdict.problem
    finally:
        engine.dispose()
