"""Every stored evaluation that changes a customer's state appends one record
to the tamper-evident `tiering_audit_log` (SQLite and PostgreSQL)."""
from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import select, update

from services.common import testing
from services.common.audit import verify_chain
from services.common.errors import InvalidArgument
from services.tiering.domain import Snapshot
from services.tiering.service import EvaluateRequest
from services.tiering.store import audit_log


def calling_as(name: str, request_id: str):
    return testing.calling_as(name, request_id, "core_banking")


def records(harness) -> list:
    with harness.engine.connect() as conn:
        return conn.execute(select(audit_log).order_by(audit_log.c.id)).fetchall()


def chain(harness):
    with harness.engine.connect() as conn:
        return verify_chain(conn, audit_log)


def request(customer_id, amount, as_of="2026-01-31", **kw):
    return EvaluateRequest(Snapshot(customer_id, as_of=as_of, annual_avg_aum_fen=amount), **kw)


def test_each_state_change_is_one_record_with_who_and_why(harness):
    with calling_as("alice", "req-a"):
        first = harness.service.evaluate(request("C1", 30_000_000))
    with calling_as("bob", "req-b"):
        grace = harness.service.evaluate(request("C1", 10_000_000, as_of="2026-02-28"))
        harness.service.evaluate(request("C1", 10_000_000, as_of="2026-02-28"))  # a re-run of the day: no change
    rows = records(harness)
    assert [(r.actor, r.request_id, r.action, r.subject) for r in rows] == [
        ("alice", "req-a", "customer_tier.create", "customer/C1"),
        ("bob", "req-b", "customer_tier.update", "customer/C1"),
    ]
    created, pending = rows
    assert json.loads(created.before_json) is None
    assert json.loads(created.after_json) == {"tier": "WEALTH", "segments": [], "flags": [], "home_branch_id": "",
                                              "below_count": 0, "last_below_as_of": ""}
    assert json.loads(pending.before_json) == json.loads(created.after_json)
    assert json.loads(pending.after_json)["below_count"] == 1
    assert json.loads(pending.after_json)["last_below_as_of"] == "2026-02-28"
    assert first.decision_id in created.reason and grace.decision_id in pending.reason
    assert harness.count("tiering_decisions") == 3    # every evaluation is in the decision log
    assert chain(harness) == (True, None)


def test_a_batch_chunk_writes_one_record_per_changed_customer_and_none_for_refusals(harness):
    with calling_as("nightly", "req-night"):
        outcomes = harness.service.evaluate_batch_chunk([
            request("B1", 1_000_000), request("B2", 700_000_000), request("B3", -1),
            request("B4", 5, dry_run=True)])
    assert [o.error is None for o in outcomes] == [True, True, False, True]
    rows = records(harness)
    assert [(r.subject, r.actor, r.request_id) for r in rows] == [
        ("customer/B1", "nightly", "req-night"), ("customer/B2", "nightly", "req-night")]
    assert [json.loads(r.after_json)["tier"] for r in rows] == ["LONG_TAIL", "PRIVATE_BANKING"]
    with calling_as("nightly", "req-night-2"), pytest.raises(InvalidArgument):
        harness.service.evaluate(request("B5", -1))
    assert len(records(harness)) == 2 and chain(harness) == (True, None)


def test_coalesced_callers_keep_their_own_identity(harness):
    def call(i):
        with calling_as(f"teller{i}", f"req-{i}"):
            harness.service.evaluate(request(f"T{i}", 1_000_000 * (i + 1)))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted((r.subject, r.actor, r.request_id) for r in records(harness)) == sorted(
        (f"customer/T{i}", f"teller{i}", f"req-{i}") for i in range(8))
    assert chain(harness) == (True, None)


def test_a_replayed_request_id_writes_no_second_record(harness):
    with calling_as("alice", "req-1"):
        harness.service.evaluate(request("R1", 30_000_000, request_id="once"))
        harness.service.evaluate(request("R1", 30_000_000, request_id="once"))
    assert len(records(harness)) == 1


def test_tampering_a_record_breaks_the_chain_there(harness):
    with calling_as("alice", "req-1"):
        harness.service.evaluate_batch_chunk([request(f"X{i}", 1_000_000 * i) for i in range(1, 5)])
    rows = records(harness)
    assert chain(harness) == (True, None)
    victim = rows[2]
    after = json.loads(victim.after_json)
    after["tier"] = "PRIVATE_BANKING"
    with harness.engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.id == victim.id).values(after_json=json.dumps(after)))
    assert chain(harness) == (False, victim.id)
