"""Concurrent requests against PostgreSQL: nothing lost, nothing doubled,
and a feed reader following along never misses a row."""
from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from services.common.db import make_session_factory
from services.tiering.domain import NEW, Snapshot
from services.tiering.service import EvaluateRequest, TieringService

CUSTOMERS = [f"R{i:03d}" for i in range(120)]


def run_all(n, fn):
    barrier = threading.Barrier(n)

    def go(k):
        barrier.wait()
        return fn(k)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(go, range(n)))


def test_racing_batches_and_a_live_reader_see_one_gap_free_feed(pg_harness):
    service = pg_harness.service
    seen: list[int] = []
    done = threading.Event()

    def follow():
        cursor = 0
        while True:
            finished = done.is_set()  # read once more after the writers stop
            for change in service.changes_after(cursor, limit=50):
                seen.append(change.cursor)
                cursor = change.cursor
            if finished:
                return

    reader = threading.Thread(target=follow)
    reader.start()

    def writer(k):
        for round_ in range(6):
            # customers shared by every writer (in a different order each) and
            # customers of its own, so transactions overlap without row locks
            ids = CUSTOMERS[k * 17 % 120:] + CUSTOMERS[:k * 17 % 120]
            ids = [x for pair in zip(ids, [f"{cid}-w{k}" for cid in ids]) for x in pair]
            requests = [EvaluateRequest(Snapshot(cid, as_of=f"2026-0{round_ + 1}-01",
                                                 annual_avg_aum_fen=(k + 1) * (round_ + 1) * 3_000_000,
                                                 car_owner=(k + round_) % 2 == 0))
                        for cid in ids]
            for start in range(0, len(requests), 30):
                service.evaluate_batch_chunk(requests[start:start + 30])

    run_all(4, writer)
    done.set()
    reader.join()
    changes, cursor = [], 0
    while page := service.changes_after(cursor, limit=1000):
        changes.extend(page)
        cursor = page[-1].cursor
    assert [c.cursor for c in changes] == list(range(1, len(changes) + 1))
    assert seen == [c.cursor for c in changes]          # the live reader missed nothing, repeated nothing
    own = [f"{cid}-w{k}" for k in range(4) for cid in CUSTOMERS]
    assert Counter(c.customer_id for c in changes if c.change == NEW) == Counter(CUSTOMERS + own)
    assert pg_harness.count("tiering_decisions") == 4 * 6 * 240
    for customer_id in CUSTOMERS[:10]:
        latest = service.get_customer_tier(customer_id)
        last_change = [c for c in changes if c.customer_id == customer_id][-1]
        assert (latest.decision.tier, latest.decision.segments) == (last_change.to_tier, last_change.segments)


def replicas(harness, n=4):
    """Separate service instances on one database, like server replicas: calls
    inside one instance share a chunk, calls across instances race in PostgreSQL."""
    return [TieringService(make_session_factory(harness.engine), harness.runtime) for _ in range(n)]


def test_the_same_request_id_raced_is_one_evaluation(pg_harness):
    services = replicas(pg_harness)
    answers = run_all(8, lambda k: services[k % 4].evaluate(EvaluateRequest(
        Snapshot("RID", as_of="2026-01-31", annual_avg_aum_fen=(k + 1) * 10_000_000), request_id="same-request")))
    assert len({a.decision_id for a in answers}) == 1
    assert pg_harness.count("tiering_decisions") == pg_harness.count("tiering_changes") == 1


def test_a_new_customer_raced_is_new_once(pg_harness):
    services = replicas(pg_harness)
    answers = run_all(8, lambda k: services[k % 4].evaluate(EvaluateRequest(
        Snapshot("NEWBIE", as_of="2026-01-31", annual_avg_aum_fen=30_000_000))))
    assert Counter(a.decision.change for a in answers) == Counter({NEW: 1, "UNCHANGED": 7})
    assert pg_harness.count("tiering_decisions") == 8
    assert pg_harness.count("tiering_changes") == 1
