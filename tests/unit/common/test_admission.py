"""Admission queue logic (services.common.admission): slots, FIFO hand-over,
refusal by deadline estimate and by a full queue."""
from __future__ import annotations

import threading

from services.common.admission import Admission


def test_calls_within_the_limit_are_admitted_at_once():
    a = Admission(limit=2, queue_limit=0)
    assert a.enter(None) is None and a.enter(0.001) is None
    assert a.active == 2


def test_a_full_queue_is_refused_with_a_retry_delay():
    a = Admission(limit=1, queue_limit=0)
    assert a.enter(None) is None
    retry = a.enter(10.0)
    assert retry is not None and retry > 0
    a.leave(0.01)
    assert a.active == 0


def test_a_call_that_would_start_too_late_is_refused_without_waiting():
    a = Admission(limit=1, queue_limit=10)
    assert a.enter(None) is None
    a.leave(0.5)  # calls take half a second
    assert a.enter(None) is None  # one runs
    # Queued behind it, it would start in ~0.5 s and need 0.5 s more.
    assert a.enter(0.6) is not None
    assert a.queued == 0  # refused before queueing


def test_queued_calls_get_the_slot_in_arrival_order():
    a = Admission(limit=1, queue_limit=5)
    assert a.enter(None) is None
    order: list[int] = []
    started = []

    def call(i: int) -> None:
        assert a.enter(None) is None
        order.append(i)
        a.leave(0.0)

    for i in range(3):
        t = threading.Thread(target=call, args=(i,))
        t.start()
        started.append(t)
        while a.queued < i + 1:  # each is queued before the next arrives
            pass
    a.leave(0.0)
    for t in started:
        t.join(10)
    assert order == [0, 1, 2]
    assert a.active == 0 and a.queued == 0


def test_a_queued_call_gives_up_before_its_deadline():
    a = Admission(limit=1, queue_limit=5)
    assert a.enter(None) is None
    assert a.enter(0.15) is not None  # nobody leaves: refused, not left waiting
    assert a.queued == 0
    a.leave(None)
    assert a.enter(None) is None


def test_a_slow_method_does_not_make_a_fast_one_look_too_slow_for_its_deadline():
    a = Admission(limit=1, queue_limit=10)
    for _ in range(20):  # many fast calls, then one slow one
        assert a.enter(None, "fast") is None
        a.leave(0.01, "fast")
    assert a.enter(None, "slow") is None
    a.leave(2.0, "slow")
    assert a.enter(None, "fast") is None  # one runs
    # Behind it, the queue drains at the mixed rate (~0.4 s) and the call needs ~0.01 s: 0.6 s is enough (a 0.82 s estimate with one average for both would refuse it).
    refused = []
    t = threading.Thread(target=lambda: refused.append(a.enter(0.6, "fast")))
    t.start()
    while a.queued < 1 and t.is_alive():
        pass
    a.leave(0.01, "fast")
    t.join(10)
    assert refused == [None]
