"""Every benefits mutation appends one record per changed business object to
the tamper-evident `benefits_audit_log`, with the caller and the request id;
refused requests and replays write nothing (SQLite and PostgreSQL)."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select, update

from services.benefits.store import audit_log
from services.common import testing
from services.common.audit import verify_chain
from services.common.errors import FailedPrecondition, ResourceExhausted

GIFT = "AUDIT_GIFT"  # points, stock and budget: a claim touches every balance
GIFT_ENTRY = {"name": "audit gift", "kind": "GIFT", "physical": True, "points_cost": 10, "budget_group": "PAYROLL",
              "unit_cost_fen": 100, "eligibility_rule": "benefit.payday_coupon"}
CUSTOMER = "C-AFF-PAY"  # PAYROLL: granted by benefit.payday_coupon


def calling_as(name: str, request_id: str):
    return testing.calling_as(name, request_id, "operations")


def engine_of(svc):
    return svc._sessions.kw["bind"]


def records(svc) -> list:
    with engine_of(svc).connect() as conn:
        return conn.execute(select(audit_log).order_by(audit_log.c.id)).fetchall()


def summary(rows) -> list[tuple]:
    return [(r.actor, r.request_id, r.action, r.subject, json.loads(r.before_json), json.loads(r.after_json))
            for r in rows]


def chain(svc):
    with engine_of(svc).connect() as conn:
        return verify_chain(conn, audit_log)


def test_every_mutation_is_audited_with_who_what_before_and_after(svc):
    with calling_as("ops-alice", "r-upsert"):
        svc.upsert_benefit(GIFT, GIFT_ENTRY, request_id="u-1")
    with calling_as("ops-alice", "r-rename"):
        svc.upsert_benefit(GIFT, {**GIFT_ENTRY, "name": "audit gift 2"}, request_id="u-2")
    with calling_as("ops-alice", "r-stock"):
        svc.adjust_inventory(GIFT, 5, "opening stock", request_id="s-1")
    with calling_as("ops-alice", "r-budget"):
        svc.set_budget("PAYROLL", "2025-03", 10_000, request_id="b-1")
    with calling_as("core", "r-credit"):
        svc.credit_points(CUSTOMER, 100, "salary day", "p-1")
    rows = records(svc)
    assert [(a, r, act, s) for a, r, act, s, _, _ in summary(rows)] == [
        ("ops-alice", "r-upsert", "benefit.create", f"benefit/{GIFT}"),
        ("ops-alice", "r-rename", "benefit.update", f"benefit/{GIFT}"),
        ("ops-alice", "r-stock", "inventory.in", f"inventory/{GIFT}"),
        ("ops-alice", "r-budget", "budget.set", "budget/PAYROLL/2025-03"),
        ("core", "r-credit", "points.credit", f"points/{CUSTOMER}"),
    ]
    created, renamed, stocked, budgeted, credited = summary(rows)
    assert created[4] is None and created[5]["name"] == "audit gift" and created[5]["unit_cost_fen"] == 100
    assert renamed[4] == created[5] and renamed[5]["name"] == "audit gift 2"
    assert (stocked[4], stocked[5]) == ({"on_hand": 0, "reserved": 0}, {"on_hand": 5, "reserved": 0})
    assert (budgeted[4], budgeted[5]) == (None, {"amount_fen": 10_000, "spent_fen": 0})
    assert (credited[4], credited[5]) == ({"balance": 0}, {"balance": 100})
    assert rows[2].reason == "opening stock" and rows[4].reason == "salary day"

    with calling_as("mobile", "r-claim"):
        claim = svc.claim(CUSTOMER, GIFT, "MOBILE", "c-1")
        svc.claim(CUSTOMER, GIFT, "MOBILE", "c-1")  # a retry changes nothing
    claimed = summary(records(svc)[5:])
    assert [(a, r, act, s) for a, r, act, s, _, _ in claimed] == [
        ("mobile", "r-claim", "claim.create", f"claim/{claim.claim_id}"),
        ("mobile", "r-claim", "points.claim", f"points/{CUSTOMER}"),
        ("mobile", "r-claim", "inventory.reserve", f"inventory/{GIFT}"),
        ("mobile", "r-claim", "budget.spend", "budget/PAYROLL/2025-03"),
    ]
    assert claimed[0][4] is None
    assert {k: claimed[0][5][k] for k in ("customer_id", "benefit_id", "status", "points_spent", "budget_spent_fen",
                                          "rule_id")} == {
        "customer_id": CUSTOMER, "benefit_id": GIFT, "status": "CLAIMED", "points_spent": 10,
        "budget_spent_fen": 100, "rule_id": "benefit.payday_coupon"}
    assert (claimed[1][4], claimed[1][5]) == ({"balance": 100}, {"balance": 90})
    assert (claimed[2][4], claimed[2][5]) == ({"on_hand": 5, "reserved": 0}, {"on_hand": 5, "reserved": 1})
    assert (claimed[3][4], claimed[3][5]) == ({"amount_fen": 10_000, "spent_fen": 0},
                                              {"amount_fen": 10_000, "spent_fen": 100})

    with calling_as("mobile", "r-cancel"):
        svc.cancel(claim.claim_id, "changed my mind", request_id="x-1")
        svc.cancel(claim.claim_id, "changed my mind", request_id="x-1")  # a repeat gives nothing back twice
    cancelled = records(svc)[9:]
    assert [(r.actor, r.request_id, r.action, json.loads(r.before_json), json.loads(r.after_json))
            for r in cancelled][1:] == [
        ("mobile", "r-cancel", "points.refund", {"balance": 90}, {"balance": 100}),
        ("mobile", "r-cancel", "inventory.release", {"on_hand": 5, "reserved": 1}, {"on_hand": 5, "reserved": 0}),
        ("mobile", "r-cancel", "budget.refund", {"amount_fen": 10_000, "spent_fen": 100},
         {"amount_fen": 10_000, "spent_fen": 0}),
    ]
    assert cancelled[0].action == "claim.cancel" and cancelled[0].reason == "changed my mind"
    assert json.loads(cancelled[0].before_json) == {"status": "CLAIMED"}
    assert json.loads(cancelled[0].after_json)["status"] == "CANCELLED"
    assert all(r.reason == "changed my mind" for r in cancelled)

    with calling_as("mobile", "r-claim-2"):
        second = svc.claim(CUSTOMER, GIFT, "MOBILE", "c-2")
    with calling_as("lobby", "r-fulfil"):
        svc.fulfill(second.claim_id)
    with calling_as("core", "r-debit"):
        svc.debit_points(CUSTOMER, 50, "mall", "p-2")
    tail = summary(records(svc)[17:])
    assert tail == [
        ("lobby", "r-fulfil", "claim.fulfill", f"claim/{second.claim_id}", {"status": "CLAIMED"}, tail[0][5]),
        ("lobby", "r-fulfil", "inventory.hand_out", f"inventory/{GIFT}", {"on_hand": 5, "reserved": 1},
         {"on_hand": 4, "reserved": 0}),
        ("core", "r-debit", "points.debit", f"points/{CUSTOMER}", {"balance": 90}, {"balance": 40}),
    ]
    assert tail[0][5]["status"] == "FULFILLED"
    assert chain(svc) == (True, None)


def test_refused_requests_write_nothing(svc):
    with calling_as("ops", "r-setup"):
        svc.upsert_benefit(GIFT, GIFT_ENTRY, request_id="u-1")
        svc.set_budget("PAYROLL", "2025-03", 10_000, request_id="b-1")
        svc.credit_points(CUSTOMER, 5, "a little", "p-1")
    before = len(records(svc))
    with calling_as("mobile", "r-refused"):
        with pytest.raises(FailedPrecondition):
            svc.claim(CUSTOMER, GIFT, "MOBILE", "c-1")       # 5 points, the gift costs 10
        with pytest.raises(FailedPrecondition):
            svc.debit_points(CUSTOMER, 6, "too much", "p-2")
        svc.credit_points(CUSTOMER, 100, "more", "p-3")
        with pytest.raises(ResourceExhausted):
            svc.claim(CUSTOMER, GIFT, "MOBILE", "c-2")       # no stock
        with pytest.raises(FailedPrecondition):
            svc.adjust_inventory(GIFT, -1, "nothing to take", request_id="s-1")
    assert [r.action for r in records(svc)[before:]] == ["points.credit"]
    assert chain(svc) == (True, None)


def test_tampering_breaks_the_chain_at_that_record(svc):
    with calling_as("ops", "r-1"):
        svc.upsert_benefit(GIFT, GIFT_ENTRY, request_id="u-1")
        svc.adjust_inventory(GIFT, 5, "opening stock", request_id="s-1")
        svc.set_budget("PAYROLL", "2025-03", 10_000, request_id="b-1")
    rows = records(svc)
    with engine_of(svc).begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.id == rows[1].id)
                     .values(after_json='{"on_hand":500,"reserved":0}'))
    assert chain(svc) == (False, rows[1].id)
