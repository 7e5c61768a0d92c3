"""PostgreSQL goes away under load and comes back: the service answers
UNAVAILABLE (never INTERNAL), reports NOT_SERVING, recovers on its own
without a restart, and every write it acknowledged before the outage is
still there — once, even when the client retries with the same request_id."""
from __future__ import annotations

import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2

from kequn.tiering.v1 import tiering_pb2, tiering_pb2_grpc
from tests.security.conftest import record, require, start_suite

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def evaluate_request(i: int) -> tiering_pb2.EvaluateCustomerRequest:
    aum = 2_000_000 + i * 1_000
    return tiering_pb2.EvaluateCustomerRequest(
        request_id=f"pg-fault-{i}",
        customer=tiering_pb2.CustomerSnapshot(customer_id=f"PGF{i:06d}", as_of="2025-03-01", annual_avg_aum_fen=aum,
                                              monthly_avg_aum_fen=aum, point_in_time_aum_fen=aum))


class Load:
    """One writer thread: EvaluateCustomer for new customers, one after the other."""

    def __init__(self, stub, metadata):
        self.stub, self.metadata = stub, metadata
        self.acked: dict[int, str] = {}      # i -> decision_id
        self.codes: dict[int, grpc.StatusCode] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        i = 0
        while not self.stop.is_set():
            try:
                decision = self.stub.EvaluateCustomer(evaluate_request(i), metadata=self.metadata, timeout=15)
                self.acked[i] = decision.decision_id
                self.codes[i] = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                self.codes[i] = exc.code()
                time.sleep(0.05)
            i += 1

    def failures(self):
        return [c for c in self.codes.values() if c != grpc.StatusCode.OK]


def test_database_outage_mid_load(pg, tmp_path):
    require("tiering")
    suite = start_suite(tmp_path, services=["tiering"], database_urls={"tiering": pg.create_database("tiering_outage")})
    try:
        pid = suite.processes["tiering"].pid
        channel = suite.channel("tiering", None)
        from services.common.auth import bearer_metadata
        load = Load(tiering_pb2_grpc.TieringServiceStub(channel), bearer_metadata(suite.tokens["core_banking"]))
        load.thread.start()
        wait_for(lambda: len(load.acked) >= 50, 60, "50 acknowledged writes")

        pg.stop("immediate")  # crash the database mid-load
        t_stop = time.monotonic()
        acked_before = dict(load.acked)
        seen = len(load.codes)
        wait_for(lambda: len(load.codes) >= seen + 5, 60, "calls during the outage")
        wait_for(lambda: suite.health("tiering") == NOT_SERVING, 30, "health NOT_SERVING")
        t_not_serving = time.monotonic() - t_stop
        during = [load.codes[i] for i in sorted(load.codes)[seen + 1:]]  # +1: a call in flight may have won
        assert during and set(during) == {grpc.StatusCode.UNAVAILABLE}, set(during)

        pg.start()
        t_start = time.monotonic()
        wait_for(lambda: suite.health("tiering") == SERVING, 60, "health SERVING again")
        t_serving = time.monotonic() - t_start
        outage_end = len(load.codes)
        wait_for(lambda: any(load.codes.get(i) == grpc.StatusCode.OK for i in range(outage_end, len(load.codes))),
                 60, "writes succeeding again")
        load.stop.set()
        load.thread.join(30)
        assert suite.processes["tiering"].pid == pid and suite.processes["tiering"].poll() is None  # no restart
        assert grpc.StatusCode.INTERNAL not in load.codes.values()
        record("pg-outage", f"tiering on its own PostgreSQL: {len(acked_before)} writes acknowledged before the "
                            f"crash, {len(load.failures())} calls UNAVAILABLE during it, NOT_SERVING "
                            f"{t_not_serving:.1f}s after the crash, SERVING {t_serving:.1f}s after the restart, "
                            f"same process; {len(load.codes)} calls in all")

        stub = tiering_pb2_grpc.TieringServiceStub(channel)
        meta = bearer_metadata(suite.tokens["core_banking"])
        for i, decision_id in acked_before.items():  # every acknowledged write survived the crash
            stored = stub.GetCustomerTier(tiering_pb2.GetCustomerTierRequest(customer_id=f"PGF{i:06d}"),
                                          metadata=meta, timeout=10)
            assert stored.decision_id == decision_id
        # Clients retry what failed with the same request_id: each write lands once.
        for i, code in sorted(load.codes.items()):
            if code != grpc.StatusCode.OK:
                stub.EvaluateCustomer(evaluate_request(i), metadata=meta, timeout=15)
        for i in range(len(load.codes)):
            changes = stub.ListTierChanges(tiering_pb2.ListTierChangesRequest(customer_id=f"PGF{i:06d}"),
                                           metadata=meta, timeout=10).changes
            assert len(changes) == 1, f"customer {i}: {len(changes)} NEW changes"
    finally:
        suite.close()
