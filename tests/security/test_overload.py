"""Overload: past KEQUN_MAX_CONCURRENT_RPCS in-flight calls a service answers
RESOURCE_EXHAUSTED at once instead of queueing without bound, and serves
normally again as soon as the load goes away."""
from __future__ import annotations

import time

import grpc
import pytest

from kequn.rules.v1 import rules_pb2, rules_pb2_grpc
from kequn.tiering.v1 import tiering_pb2
from tests.e2e.harness import metric_value
from tests.security.conftest import require, start_suite

pytestmark = pytest.mark.e2e
LIMIT = 3


@pytest.fixture(scope="module")
def tiering(tmp_path_factory):
    require("tiering")
    suite = start_suite(tmp_path_factory.mktemp("overload"), services=["tiering"],
                        extra_env={"KEQUN_TIERING_MAX_CONCURRENT_RPCS": str(LIMIT)})
    yield suite
    suite.close()


def _watch(channel):
    """A WatchTierChanges stream held open (it waits for changes)."""
    stub = channel.unary_stream("/kequn.tiering.v1.TieringService/WatchTierChanges",
                                request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=tiering_pb2.TierChange.FromString)
    return stub(tiering_pb2.WatchTierChangesRequest(after_cursor=0), timeout=60)


def _watches_started(suite) -> float:
    return metric_value(suite.metrics("tiering"), "grpc_server_started_total", grpc_method="WatchTierChanges") or 0


def _list(channel):
    return rules_pb2_grpc.RuleStoreServiceStub(channel).ListRulesets(rules_pb2.ListRulesetsRequest(), timeout=10)


def test_calls_past_the_limit_are_refused_with_resource_exhausted_then_recover(tiering):
    channel = tiering.channel("tiering", "operations")
    assert _list(channel).rulesets  # fine when idle
    watches = [_watch(tiering.channel("tiering", "operations")) for _ in range(LIMIT)]
    try:
        # Each watch holds a worker once the server has started it.
        deadline = time.monotonic() + 30
        while _watches_started(tiering) < LIMIT and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(grpc.RpcError) as refused:
            _list(channel)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert tiering.processes["tiering"].poll() is None
    finally:
        for w in watches:
            w.cancel()
    deadline = time.monotonic() + 30  # cancelled streams free their slots once the server sees it
    while True:
        try:
            assert _list(channel).rulesets
            break
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            if time.monotonic() > deadline:
                pytest.fail("the service did not recover after the load went away")
            time.sleep(0.1)
