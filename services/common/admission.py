"""Admission control: a bounded queue in front of the workers, shed by deadline.

At most `limit` calls run at once. Past that, a call waits in a FIFO queue of
at most `queue_limit` calls for a worker to finish. A call that cannot meet
its deadline is refused *before* it waits, not after: given its place in the
queue and the recent service time of a call, if it would start too late to
finish before its deadline it gets RESOURCE_EXHAUSTED with reason OVERLOADED
and a RetryInfo saying when the queue should have drained. A full queue is
refused the same way. Every refusal costs microseconds, so a burst of short
calls beyond `limit` is queued and served instead of being turned away.

grpc's own maximum_concurrent_rpcs stays as a backstop just above
limit + queue_limit (see server.py); it answers without details.
"""

from __future__ import annotations

import collections
import threading
import time

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge

from services.common.grpc_errors import abort_status
from services.common.rpc import CallContext, MethodInterceptor, scoped, split_method, wrap_handler

# Weight of the newest call in the moving average of the service time.
EWMA_ALPHA = 0.2
MIN_RETRY_AFTER = 0.05
# A refused call gives up this long before its deadline, so the refusal
# reaches the caller before the caller's own deadline fires.
SHED_MARGIN = 0.1
# Probes must answer under overload too, or the orchestrator restarts a
# pod that is merely busy.
EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)


class Admission:
    """The slots and the queue (thread-safe); the interceptor below uses it."""

    def __init__(self, limit: int, queue_limit: int) -> None:
        self.limit = max(1, limit)
        self.queue_limit = max(0, queue_limit)
        self._lock = threading.Lock()
        self._active = 0
        self._waiting: collections.deque[threading.Event] = collections.deque()
        # Seconds one unary call holds a slot, recently (None: no call yet):
        # over all methods (how fast the queue drains) and per method (how
        # long this call will need once it runs).
        self.service_time: float | None = None
        self._method_time: dict[str, float] = {}

    @property
    def active(self) -> int:
        return self._active

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def _wait_estimate(self, ahead: int) -> float:
        """Seconds until a call with `ahead` calls queued before it gets a slot."""
        return (ahead + 1) / self.limit * (self.service_time or 0.0)

    def enter(self, remaining: float | None, method: str = "") -> float | None:
        """Take a slot, waiting in the queue if needed. Returns None when
        admitted, else the seconds after which a retry should succeed
        (the call is refused)."""
        with self._lock:
            if self._active < self.limit and not self._waiting:
                self._active += 1
                return None
            ahead = len(self._waiting)
            wait = self._wait_estimate(ahead)
            if ahead >= self.queue_limit:
                return max(MIN_RETRY_AFTER, wait)
            service = self._method_time.get(method, self.service_time or 0.0)
            if remaining is not None and remaining < wait + service:
                return max(MIN_RETRY_AFTER, wait)  # it would start too late to finish
            ticket = threading.Event()
            self._waiting.append(ticket)
        # Wait no longer than leaves time to do the work before the deadline.
        timeout = None if remaining is None else max(0.0, remaining - service - SHED_MARGIN)
        if ticket.wait(timeout):
            return None
        with self._lock:
            if ticket.is_set():  # a slot was handed over just as we gave up
                return None
            self._waiting.remove(ticket)
            return max(MIN_RETRY_AFTER, self._wait_estimate(len(self._waiting)))

    def leave(self, held: float | None, method: str = "") -> None:
        """Give the slot back (to the first queued call, if any). `held`:
        seconds a unary call took, to learn the service time; None for
        streams, whose length says nothing about the next call."""
        with self._lock:
            if held is not None:
                st = self.service_time
                self.service_time = held if st is None else st + EWMA_ALPHA * (held - st)
                mt = self._method_time.get(method)
                self._method_time[method] = held if mt is None else mt + EWMA_ALPHA * (held - mt)
            if self._waiting:
                self._waiting.popleft().set()  # the slot passes on: _active unchanged
            else:
                self._active -= 1


class AdmissionInterceptor(MethodInterceptor):
    """Sits inside logging and metrics (they see refusals) and outside auth
    (a refusal under overload costs no token check)."""

    def __init__(self, admission: Admission, registry: CollectorRegistry | None = None) -> None:
        self.admission = admission
        self._shed = None
        if registry is not None:
            self._shed = Counter("kequn_rpc_shed", "Calls refused with OVERLOADED before running, by method",
                                 ["grpc_method"], registry=registry)
            Gauge("kequn_rpc_queued", "Calls waiting for a worker", registry=registry).set_function(
                lambda: admission.queued)
            Gauge("kequn_rpc_active", "Calls holding a worker slot", registry=registry).set_function(
                lambda: admission.active)

    def wrap_method(self, method, handler):
        if method.startswith(EXEMPT_PREFIXES):
            return handler
        admission, shed = self.admission, self._shed
        unary = not handler.response_streaming
        method_name = split_method(method)[1]

        def admit(request, context):
            ctx = CallContext.of(context)
            retry_after = admission.enter(ctx.time_remaining(), method)
            if retry_after is not None:
                if shed is not None:
                    shed.labels(method_name).inc()
                abort_status(ctx, grpc.StatusCode.RESOURCE_EXHAUSTED,
                             "overloaded: the call cannot be served before its deadline, retry later",
                             "OVERLOADED", {"queued": str(admission.queued), "limit": str(admission.limit)},
                             round(retry_after, 3))
            return request, ctx, time.perf_counter()

        def release(started: float) -> None:
            admission.leave(time.perf_counter() - started if unary else None, method)

        return wrap_handler(handler, scoped(admit, release))
