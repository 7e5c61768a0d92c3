"""KEQUN_TIERING_WORKERS=2: two server processes answer on one gRPC port
(SO_REUSEPORT), and the one metrics endpoint reports the calls of both."""
from __future__ import annotations

import os
import signal
import time

import pytest

from kequn.tiering.v1 import tiering_pb2 as pb
from kequn.tiering.v1 import tiering_pb2_grpc as rpc
from services.common.client import dial
from tests.e2e.harness import Suite, metric_value

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
CALLS = 40


def _worker_pids(text: str) -> dict[str, str]:
    """worker index -> pid, from kequn_worker_info{pid=...,worker=...}."""
    found = {}
    for line in text.splitlines():
        if line.startswith("kequn_worker_info{"):
            labels = dict(part.split("=", 1) for part in line[line.index("{") + 1:line.index("}")].split(","))
            found[labels["worker"].strip('"')] = labels["pid"].strip('"')
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_workers_share_the_port_and_the_metrics_endpoint_counts_both(tmp_path, pg_url):
    suite = Suite(tmp_path, services=("tiering",), database_urls={"tiering": pg_url},
                  extra_env={"KEQUN_TIERING_WORKERS": "2"})
    try:
        suite.start("tiering")
        deadline = time.monotonic() + 120
        while len(pids := _worker_pids(suite.metrics("tiering"))) < 2:
            assert time.monotonic() < deadline, suite.log("tiering")[-3000:]
            time.sleep(0.3)
        supervisor = suite.processes["tiering"].pid
        assert len(set(pids.values())) == 2 and str(supervisor) not in pids.values()

        for i in range(CALLS):  # a new connection per call: the kernel picks a worker per connection
            channel = dial(suite.target("tiering"), suite.tokens["core_banking"])
            try:
                answer = rpc.TieringServiceStub(channel).EvaluateCustomer(pb.EvaluateCustomerRequest(
                    customer=pb.CustomerSnapshot(customer_id=f"W{i}", as_of="2026-01-31",
                                                 annual_avg_aum_fen=1_000_000, monthly_avg_aum_fen=1_000_000)),
                    timeout=60)
                assert answer.tier == "LONG_TAIL"
            finally:
                channel.close()

        text = suite.metrics("tiering")
        handled = {w: metric_value(text, "grpc_server_handled_total", grpc_method="EvaluateCustomer",
                                   grpc_code="OK", worker=w) or 0 for w in ("0", "1")}
        # Both processes answered on the one port, and every call is counted once.
        assert handled["0"] >= 1 and handled["1"] >= 1, handled
        assert handled["0"] + handled["1"] == CALLS

        # SIGTERM to the supervisor drains and stops both workers.
        process = suite.processes.pop("tiering")
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        deadline = time.monotonic() + 30
        while any(_alive(int(p)) for p in pids.values()):
            assert time.monotonic() < deadline, "a worker outlived its supervisor"
            time.sleep(0.1)
    finally:
        suite.close()
