"""Overload: past KEQUN_MAX_CONCURRENT_RPCS running calls, further calls wait
in a bounded queue (KEQUN_MAX_QUEUED_RPCS) and are served when a worker frees
up. A call that cannot be served before its deadline, or finds the queue
full, is refused with RESOURCE_EXHAUSTED, reason OVERLOADED and a RetryInfo;
the service serves normally again as soon as the load goes away."""
from __future__ import annotations

import threading
import time

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from kequn.rules.v1 import rules_pb2, rules_pb2_grpc
from kequn.tiering.v1 import tiering_pb2
from tests.e2e.harness import metric_value
from tests.security.conftest import require, start_suite

pytestmark = pytest.mark.e2e
LIMIT = 3
QUEUE = 4


@pytest.fixture(scope="module")
def tiering(tmp_path_factory):
    require("tiering")
    suite = start_suite(tmp_path_factory.mktemp("overload"), services=["tiering"],
                        extra_env={"KEQUN_TIERING_MAX_CONCURRENT_RPCS": str(LIMIT),
                                   "KEQUN_TIERING_MAX_QUEUED_RPCS": str(QUEUE)})
    yield suite
    suite.close()


def _watch(channel):
    """A WatchTierChanges stream held open (it waits for changes)."""
    stub = channel.unary_stream("/kequn.tiering.v1.TieringService/WatchTierChanges",
                                request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=tiering_pb2.TierChange.FromString)
    return stub(tiering_pb2.WatchTierChangesRequest(after_cursor=0), timeout=60)


def _gauge(suite, name: str) -> float:
    return metric_value(suite.metrics("tiering"), name) or 0


def _wait_for(predicate, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _list(channel, timeout: float = 10):
    return rules_pb2_grpc.RuleStoreServiceStub(channel).ListRulesets(rules_pb2.ListRulesetsRequest(), timeout=timeout)


def _overloaded(error: grpc.RpcError) -> tuple[error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo | None]:
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    status = status_pb2.Status.FromString(dict(error.trailing_metadata())["grpc-status-details-bin"])
    info, retry = None, None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
    assert info is not None and info.reason == "OVERLOADED" and info.domain == "kequn.bank", status
    return info, retry


def _hold_every_worker(suite):
    """LIMIT watch streams, each holding a worker slot once it has started."""
    watches = [_watch(suite.channel("tiering", "operations")) for _ in range(LIMIT)]
    _wait_for(lambda: _gauge(suite, "kequn_rpc_active") >= LIMIT, "the watches to hold every slot")
    return watches


def _recovers(suite, channel) -> None:
    _wait_for(lambda: _gauge(suite, "kequn_rpc_active") == 0, "the cancelled watches to free their slots")
    assert _list(channel).rulesets


def test_a_burst_beyond_the_limit_is_queued_and_served_and_a_full_queue_is_refused(tiering):
    channel = tiering.channel("tiering", "operations")
    assert _list(channel).rulesets  # fine when idle
    watches = _hold_every_worker(tiering)
    answers: list = []
    errors_seen: list = []

    def queued_call() -> None:
        try:
            answers.append(_list(tiering.channel("tiering", "operations"), timeout=60))
        except grpc.RpcError as exc:
            errors_seen.append(exc)

    callers = [threading.Thread(target=queued_call) for _ in range(QUEUE)]
    try:
        for c in callers:
            c.start()
        _wait_for(lambda: _gauge(tiering, "kequn_rpc_queued") >= QUEUE, "the burst to queue")
        # The queue is full: one more is refused at once, with when to retry.
        with pytest.raises(grpc.RpcError) as refused:
            _list(channel, timeout=60)
        _, retry = _overloaded(refused.value)
        assert retry is not None and retry.retry_delay.ToNanoseconds() > 0
        assert not answers and not errors_seen  # the queued calls still wait
    finally:
        for w in watches:
            w.cancel()
    for c in callers:
        c.join(60)
    # Every queued call of the burst was served once workers freed up.
    assert not errors_seen, [e.code() for e in errors_seen]
    assert len(answers) == QUEUE and all(a.rulesets for a in answers)
    assert tiering.processes["tiering"].poll() is None
    _recovers(tiering, channel)


def test_a_call_that_cannot_meet_its_deadline_is_refused_overloaded_before_it(tiering):
    channel = tiering.channel("tiering", "operations")
    watches = _hold_every_worker(tiering)
    try:
        with pytest.raises(grpc.RpcError) as refused:
            _list(channel, timeout=3)
        # The server refused it (no worker would free up in time): OVERLOADED
        # with a RetryInfo, not the caller's own DEADLINE_EXCEEDED.
        _, retry = _overloaded(refused.value)
        assert retry is not None
        assert metric_value(tiering.metrics("tiering"), "kequn_rpc_shed_total", grpc_method="ListRulesets") >= 1
        assert tiering.processes["tiering"].poll() is None
    finally:
        for w in watches:
            w.cancel()
    _recovers(tiering, channel)
