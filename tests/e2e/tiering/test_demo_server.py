"""`kequn up` (KEQUN_DEMO=1): the server tiers the demo population once."""
from __future__ import annotations

import time

import grpc

from kequn.tiering.v1 import tiering_pb2 as pb
from kequn.tiering.v1 import tiering_pb2_grpc as rpc
from services.tiering.demo import DEMO_CUSTOMERS, customer_id
from tests.e2e.harness import Suite, metric_value


def test_the_demo_tiers_10000_customers(tmp_path):
    suite = Suite(tmp_path, services=("tiering",), extra_env={"KEQUN_DEMO": "1"})
    try:
        suite.start("tiering")
        stub = rpc.TieringServiceStub(suite.channel("tiering", "operations"))
        last = pb.GetCustomerTierRequest(customer_id=customer_id(DEMO_CUSTOMERS))
        deadline = time.monotonic() + 300
        while True:
            try:
                answer = stub.GetCustomerTier(last)
                break
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.NOT_FOUND and time.monotonic() < deadline
                time.sleep(0.5)
        assert answer.tier and answer.home_branch_id.startswith("OUT-")
        # The gauge is set just after the last chunk commits: a fast read can land in between.
        deadline = time.monotonic() + 30
        while metric_value(text := suite.metrics("tiering"), "kequn_tiering_feed_cursor") != DEMO_CUSTOMERS:
            assert time.monotonic() < deadline, metric_value(text, "kequn_tiering_feed_cursor")
            time.sleep(0.2)
        for tier in ("MASS", "LONG_TAIL", "AFFLUENT", "WEALTH", "PRIVATE_BANKING"):
            assert metric_value(text, "kequn_tiering_decisions_total", tier=tier, change="NEW") > 0
        assert metric_value(text, "kequn_tiering_feed_cursor") == DEMO_CUSTOMERS
        suite.stop("tiering")
        suite.start("tiering")                      # loaded once: a restart adds nothing
        deadline = time.monotonic() + 60
        while "tiering demo already loaded" not in suite.log("tiering"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        changes = stub.ListTierChanges(pb.ListTierChangesRequest(after_cursor=DEMO_CUSTOMERS))
        assert list(changes.changes) == []
    finally:
        suite.close()
