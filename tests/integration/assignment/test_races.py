"""Concurrency on PostgreSQL: approvals, runs and the books never disagree."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import update

from services.assignment import store as t
from services.common.errors import FailedPrecondition

from .conftest import customers, org

pytestmark = pytest.mark.postgres


@pytest.fixture
def db_url(pg_url):  # these races are about PostgreSQL's locking
    return pg_url


def _attempt(fn):
    try:
        fn()
        return "ok"
    except FailedPrecondition:
        return "refused"


def _setup(svc, advisors=("WA-1",)):
    org(svc)
    for sid in advisors:
        svc.upsert_staff("hr", sid, "BR-1", "WEALTH_ADVISOR", True)
    svc.upsert_staff("hr", "APPROVER-1", "BR-1", "BRANCH_APPROVER", True)
    svc.upsert_staff("hr", "APPROVER-2", "BR-1", "BRANCH_APPROVER", True)


def test_fifty_approvals_for_the_last_five_places_apply_exactly_five(svc):
    _setup(svc)
    customers(svc, [(f"OLD{i:03}", "PRIVATE_BANKING", "OUT-111") for i in range(195)])
    svc.run_assignment("ops")
    assert svc.get_book("WA-1", 0, "").size == 195
    customers(svc, [(f"NEW{i:02}", "PRIVATE_BANKING", "OUT-112") for i in range(50)])
    requests = [svc.create_change_request(f"maker-{i}", f"NEW{i:02}", "ADD", "", "WA-1", "new client")
                for i in range(50)]
    with ThreadPoolExecutor(max_workers=25) as pool:
        outcomes = list(pool.map(lambda r: _attempt(
            lambda: svc.decide("APPROVER-1", False, r["change_request_id"], True, "")), requests))
    assert outcomes.count("ok") == 5 and outcomes.count("refused") == 45
    assert svc.get_book("WA-1", 0, "").size == 200
    approved, _ = svc.list_change_requests("APPROVED", "", "", 1000, "")
    assert len(approved) == 5


def test_two_approvals_moving_one_customer_to_different_books_apply_once(svc):
    _setup(svc, advisors=("WA-1", "WA-2", "WA-3"))
    customers(svc, [("A", "PRIVATE_BANKING", "OUT-111")])
    svc.run_assignment("ops")
    assert {(m.role, m.staff_id) for m in svc.customer_managers("A")} == {("WEALTH_ADVISOR", "WA-1")}
    first = svc.create_change_request("maker-1", "A", "TRANSFER", "WA-1", "WA-2", "")
    second = svc.create_change_request("maker-2", "A", "TRANSFER", "WA-1", "WA-3", "")
    # Two makers racing CreateChangeRequest can both leave a pending request;
    # put the superseded one back to PENDING to stand for that.
    with svc.engine.begin() as conn:
        conn.execute(update(t.change_requests).where(
            t.change_requests.c.change_request_id == first["change_request_id"]).values(status="PENDING"))
    jobs = [("APPROVER-1", first), ("APPROVER-2", second)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(lambda j: _attempt(
            lambda: svc.decide(j[0], False, j[1]["change_request_id"], True, "")), jobs))
    assert sorted(outcomes) == ["ok", "refused"]
    holders = [m.staff_id for m in svc.customer_managers("A") if m.role == "WEALTH_ADVISOR"]
    winner = first if outcomes[0] == "ok" else second
    assert holders == [winner["to_staff_id"]]


def test_the_same_request_approved_twice_at_once_applies_once(svc):
    _setup(svc)
    customers(svc, [("A", "PRIVATE_BANKING", "OUT-111")])
    cr = svc.create_change_request("maker", "A", "ADD", "", "WA-1", "")
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(lambda who: _attempt(
            lambda: svc.decide(who, False, cr["change_request_id"], True, "")), ["APPROVER-1", "APPROVER-2"]))
    assert sorted(outcomes) == ["ok", "refused"]
    assert svc.get_book("WA-1", 0, "").size == 1


def test_assignment_run_racing_approvals_keeps_books_consistent(svc):
    _setup(svc, advisors=("WA-1", "WA-2"))
    customers(svc, [(f"OLD{i:03}", "PRIVATE_BANKING", "OUT-111") for i in range(380)])
    svc.run_assignment("ops")
    assert svc.get_book("WA-1", 0, "").size == svc.get_book("WA-2", 0, "").size == 190
    new = [f"NEW{i:02}" for i in range(40)]
    customers(svc, [(c, "PRIVATE_BANKING", "OUT-112") for c in new])
    requests = [svc.create_change_request(f"maker-{c}", c, "ADD", "", "WA-1", "") for c in new[:20]]
    runs = []
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(_attempt, lambda r=r: svc.decide("APPROVER-1", False, r["change_request_id"], True,
                                                                "")) for r in requests[:10]]
        futures.append(pool.submit(lambda: runs.append(svc.run_assignment("ops"))))
        futures += [pool.submit(_attempt, lambda r=r: svc.decide("APPROVER-2", False, r["change_request_id"], True,
                                                                 "")) for r in requests[10:]]
        outcomes = [f.result() for f in futures]
    approvals = sum(o == "ok" for o in outcomes[:10] + outcomes[11:])  # outcomes[10] is the run
    assert svc.get_book("WA-1", 0, "").size == 200 and svc.get_book("WA-2", 0, "").size == 200
    [run] = runs
    assert approvals + run.assigned == 20  # every free place filled exactly once
    holders = {}
    for c in new:
        advisors = [m.staff_id for m in svc.customer_managers(c) if m.role == "WEALTH_ADVISOR"]
        assert len(advisors) <= 1
        holders[c] = advisors
    assert sum(len(h) for h in holders.values()) == 20
