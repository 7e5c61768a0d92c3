"""Every mutation of assignment appends to the tamper-evident
`assignment_audit_log` (SQLite and PostgreSQL): one record per changed object,
with who, which request, before and after; the chain verifies, and a tampered
row breaks it at that row. ListAuditEvents serves the same chain."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from services.assignment.store import audit_log
from services.common import testing
from services.common.audit import verify_chain
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound

from .conftest import customers, org
from .test_assignment_service import managers, team


def calling_as(name: str, request_id: str):
    return testing.calling_as(name, request_id, "operations")


class Trail:
    """Reads what was appended since the last look."""

    def __init__(self, svc):
        self.svc, self.seen = svc, 0

    def new(self) -> list[tuple]:
        with self.svc.engine.connect() as conn:
            rows = conn.execute(select(audit_log).where(audit_log.c.id > self.seen).order_by(audit_log.c.id)).all()
        self.seen = rows[-1].id if rows else self.seen
        return [(r.actor, r.request_id, r.action, r.subject, json.loads(r.before_json), json.loads(r.after_json))
                for r in rows]

    def verify(self):
        with self.svc.engine.connect() as conn:
            return verify_chain(conn, audit_log)


def test_every_kind_of_mutation_is_one_chained_record(svc, clock):
    trail = Trail(svc)
    with calling_as("ops", "req-org"):
        org(svc, subs=1, outlets=1)
    assert [(a, r, act, s, b, after["parent_branch_id"]) for a, r, act, s, b, after in trail.new()] == [
        ("ops", "req-org", "branch.upsert", "branch/BR-1", None, None),
        ("ops", "req-org", "branch.upsert", "branch/SUB-11", None, "BR-1"),
        ("ops", "req-org", "branch.upsert", "branch/OUT-111", None, "SUB-11")]

    with calling_as("hr", "req-staff"):
        team(svc, ("WM-1", "SUB-11", "WEALTH_MANAGER"), ("WM-2", "SUB-11", "WEALTH_MANAGER"),
             ("LM-1", "OUT-111", "LOBBY_MANAGER"), ("APPROVER-1", "BR-1", "BRANCH_APPROVER"))
        svc.upsert_staff("hr", "LM-1", "OUT-111", "LOBBY_MANAGER", True, "Li Mei")
    staff = trail.new()
    assert [(a, r, act, s) for a, r, act, s, _, _ in staff] == [
        ("hr", "req-staff", "staff.upsert", f"staff/{sid}") for sid in ("WM-1", "WM-2", "LM-1", "APPROVER-1", "LM-1")]
    renamed = staff[-1]
    assert (renamed[4]["name"], renamed[5]["name"]) == ("", "Li Mei")

    customers(svc, [("A", "WEALTH", "OUT-111"), ("B", "WEALTH", "OUT-111")])
    assert trail.new() == []  # the feed only stores tiering's facts: tiering audits them
    with calling_as("ops", "req-run"):
        run = svc.run_assignment("ops")
    placed = {c: dict(managers(svc, c))["WEALTH_MANAGER"] for c in "AB"}
    records = trail.new()
    books = {}
    for customer, staff_id in sorted(placed.items()):
        books.setdefault(staff_id, []).append(customer)
    assert records == [  # first placements: one record per book they went into
        *[("ops", "req-run", "assignment.add", f"staff/{staff_id}", None,
           {"role": "WEALTH_MANAGER", "customers": customers}) for staff_id, customers in sorted(books.items())],
        ("ops", "req-run", "assignment.run", f"run/{run.run_id}", None, records[-1][5])]
    assert (records[-1][5]["assigned"], records[-1][5]["unplaced"]) == (2, 0)

    other = {"WM-1": "WM-2", "WM-2": "WM-1"}
    with calling_as("maker", "req-cr1"):
        first = svc.create_change_request("maker", "A", "TRANSFER", placed["A"], other[placed["A"]], "balance")
    with calling_as("maker", "req-cr2"):
        second = svc.create_change_request("maker", "A", "TRANSFER", placed["A"], other[placed["A"]], "again")
    records = trail.new()
    assert [(a, r, act, s) for a, r, act, s, _, _ in records] == [
        ("maker", "req-cr1", "change_request.create", f"change_request/{first['change_request_id']}"),
        ("maker", "req-cr2", "change_request.supersede", f"change_request/{first['change_request_id']}"),
        ("maker", "req-cr2", "change_request.create", f"change_request/{second['change_request_id']}")]
    assert records[0][5]["status"] == "PENDING" and records[0][5]["reason"] == "balance"
    assert (records[1][4], records[1][5]) == ({"status": "PENDING"}, {
        "status": "SUPERSEDED", "superseded_by": second["change_request_id"]})

    with calling_as("APPROVER-1", "req-approve"):
        svc.decide("APPROVER-1", False, second["change_request_id"], True, "fine")
    assert trail.new() == [
        ("APPROVER-1", "req-approve", "change_request.approve", f"change_request/{second['change_request_id']}",
         {"status": "PENDING"}, {"status": "APPROVED", "decided_by": "APPROVER-1", "decision_request_id": None}),
        ("APPROVER-1", "req-approve", "assignment.transfer", "customer/A",
         {"WEALTH_MANAGER": placed["A"]}, {"WEALTH_MANAGER": other[placed["A"]]})]

    with calling_as("maker", "req-cr3"):
        doomed = svc.create_change_request("maker", "B", "REMOVE", placed["B"], "", "")
    with calling_as("APPROVER-1", "req-reject"):
        svc.decide("APPROVER-1", False, doomed["change_request_id"], False, "no")
    assert [(a, r, act, b, after["status"]) for a, r, act, _, b, after in trail.new()] == [
        ("maker", "req-cr3", "change_request.create", None, "PENDING"),
        ("APPROVER-1", "req-reject", "change_request.reject", {"status": "PENDING"}, "REJECTED")]

    with calling_as("maker", "req-cr4"):
        late = svc.create_change_request("maker", "B", "REMOVE", placed["B"], "", "")
    clock.advance(hours=73)
    with calling_as("ops", "req-list"):  # noticed while serving someone: still the system's doing
        assert svc.expire_due() == 1
    assert [(a, r, act, s) for a, r, act, s, _, _ in trail.new()][-1] == (
        "system", "req-list", "change_request.expire", f"change_request/{late['change_request_id']}")

    today = clock().date().isoformat()
    with calling_as("approver", "req-lock"):
        svc.open_lock_period("approver", "P1", "BR-1", today, "2026-12-31")
    assert [(a, r, act, s, b, after["status"]) for a, r, act, s, b, after in trail.new()] == [
        ("approver", "req-lock", "lock_period.open", "lock_period/P1/BR-1", None, "OPEN")]

    customers(svc, [("A", "AFFLUENT", "OUT-111")])
    with calling_as("ops", "req-run2"):
        locked_run = svc.run_assignment("ops", only_changed=True)
    records = trail.new()
    assert locked_run.suggestions_created == 2
    assert sorted((act, after.get("action"), after.get("requested_by")) for _, _, act, _, _, after in records
                  if act == "change_request.create") == [
        ("change_request.create", "ADD", "system"), ("change_request.create", "REMOVE", "system")]
    assert {(a, r) for a, r, *_ in records} == {("ops", "req-run2")}
    assert records[-1][2:4] == ("assignment.run", f"run/{locked_run.run_id}")

    with calling_as("approver", "req-unlock"):
        svc.close_lock_period("approver", "P1")
    assert [(a, r, act, s, b, after["status"]) for a, r, act, s, b, after in trail.new()] == [
        ("approver", "req-unlock", "lock_period.close", "lock_period/P1/BR-1", {"status": "OPEN"}, "CLOSED")]

    with calling_as("hr", "req-claim"):
        claim, _ = svc.claim_group("hr", "WM-1", "PAYROLL", {}, "")
        svc.claim_group("hr", "WM-1", "PAYROLL", {}, "")  # already his: nothing changes
    assert [(a, r, act, s, b, after["staff_id"]) for a, r, act, s, b, after in trail.new()] == [
        ("hr", "req-claim", "group.claim", f"group_claim/{claim['claim_id']}", None, "WM-1")]

    assert trail.verify() == (True, None)


def test_refused_requests_write_nothing(svc):
    trail = Trail(svc)
    org(svc, subs=1, outlets=1)
    team(svc, ("WM-1", "SUB-11", "WEALTH_MANAGER"))
    trail.new()
    for refused in (lambda: svc.upsert_staff("hr", "X", "SUB-11", "JANITOR", True),
                    lambda: svc.upsert_staff("hr", "X", "NOWHERE", "WEALTH_MANAGER", True),
                    lambda: svc.open_lock_period("ops", "P", "BR-1", "20260301", "2026-12-31"),
                    lambda: svc.run_assignment("ops", branch_id="NOWHERE"),
                    lambda: svc.claim_group("hr", "NOBODY", "G", {}, "")):
        with pytest.raises((InvalidArgument, NotFound, FailedPrecondition)):
            refused()
    assert trail.new() == []


def test_a_tampered_record_breaks_the_chain_at_that_record(svc):
    org(svc)
    team(svc, ("WM-1", "SUB-11", "WEALTH_MANAGER"))
    customers(svc, [("A", "WEALTH", "OUT-111")])
    svc.run_assignment("ops")
    trail = Trail(svc)
    rows = trail.new()
    assert len(rows) > 5 and trail.verify() == (True, None)
    with svc.engine.connect() as conn:
        target = conn.execute(select(audit_log.c.id).where(audit_log.c.action == "staff.upsert")).scalar_one()
    with svc.engine.begin() as conn:  # someone quietly moves the person to another branch
        conn.execute(update(audit_log).where(audit_log.c.id == target).values(
            after_json=json.dumps({"staff_id": "WM-1", "branch_id": "BR-1"})))
    assert trail.verify() == (False, target)


def test_list_audit_events_serves_the_chain(svc, clock):
    org(svc, subs=1, outlets=1)
    clock.advance(hours=1)
    team(svc, ("WM-1", "SUB-11", "WEALTH_MANAGER"))
    events, token = svc.list_audit_events(2, "")
    assert [e["action"] for e in events] == ["staff.upsert", "branch.upsert"] and token
    assert events[0]["after"]["staff_id"] == "WM-1" and events[0]["before"] is None
    rest, token = svc.list_audit_events(10, token)
    assert [e["subject"] for e in rest] == ["branch/SUB-11", "branch/BR-1"] and token == ""
    since = clock() - timedelta(minutes=1)
    assert [e["subject"] for e in svc.list_audit_events(10, "", start=since)[0]] == ["staff/WM-1"]
    assert [e["subject"] for e in svc.list_audit_events(10, "", end=since)[0]] == [
        "branch/OUT-111", "branch/SUB-11", "branch/BR-1"]


def test_migration_carries_the_old_audit_events_into_the_chain(db_url):
    """A database from before the chain: its audit events become the first links, in order."""
    from datetime import datetime, timezone

    from sqlalchemy import column, insert, table

    from services.common.db import make_engine, run_migrations
    from .conftest import ROOT

    run_migrations(db_url, str(ROOT / "migrations"), "alembic_version_assignment", revision="assignment_0001")
    old = table("assignment_audit_events", column("at"), column("actor"), column("action"), column("subject"),
                column("before_json"), column("after_json"), column("reason"), column("request_id"))
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(old), [
                {"at": datetime(2026, 1, 5, 8, 30, tzinfo=timezone.utc), "actor": "hr", "action": "staff.upsert",
                 "subject": "staff/WM-1", "before_json": "", "after_json": '{"role": "WEALTH_MANAGER"}',
                 "reason": "", "request_id": ""},
                {"at": datetime(2026, 1, 6, 9, 0, tzinfo=timezone.utc), "actor": "APPROVER-1",
                 "action": "change_request.approve", "subject": "change_request/CR-1",
                 "before_json": '{"status": "PENDING"}', "after_json": '{"status": "APPROVED"}',
                 "reason": "ok", "request_id": "r-7"}])
        run_migrations(db_url, str(ROOT / "migrations"), "alembic_version_assignment")
        with engine.connect() as conn:
            rows = conn.execute(select(audit_log).order_by(audit_log.c.id)).all()
            assert verify_chain(conn, audit_log) == (True, None)
        assert [(r.at, r.actor, r.action, r.subject, json.loads(r.before_json), json.loads(r.after_json),
                 r.reason, r.request_id) for r in rows] == [
            ("2026-01-05T08:30:00.000000+00:00", "hr", "staff.upsert", "staff/WM-1", None,
             {"role": "WEALTH_MANAGER"}, "", ""),
            ("2026-01-06T09:00:00.000000+00:00", "APPROVER-1", "change_request.approve", "change_request/CR-1",
             {"status": "PENDING"}, {"status": "APPROVED"}, "ok", "r-7")]
    finally:
        engine.dispose()
