"""Tiering as a real server process on real ports."""
from __future__ import annotations

import itertools
import threading

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from kequn.tiering.v1 import tiering_pb2 as pb
from kequn.tiering.v1 import tiering_pb2_grpc as rpc
from services.tiering.demo import synthetic_customers
from tests.e2e.harness import metric_value


def stub(suite, role="core_banking"):
    return rpc.TieringServiceStub(suite.channel("tiering", role))


def snapshot(customer_id, amount, **more):
    return pb.CustomerSnapshot(customer_id=customer_id, as_of="2026-01-31", annual_avg_aum_fen=amount,
                               monthly_avg_aum_fen=amount, **more)


def field_violations(error) -> dict[str, str]:
    details = dict(error.trailing_metadata()).get("grpc-status-details-bin")
    status = status_pb2.Status.FromString(details)
    found = {}
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found.update({v.field: v.description for v in bad.field_violations})
    return found


def test_unary_answers_to_the_fen_and_serves_history(suite):
    s = stub(suite)
    for i, (amount, tier) in enumerate([(600_000_000, "PRIVATE_BANKING"), (599_999_999, "WEALTH"),
                                        (20_000_000, "WEALTH"), (19_999_999, "AFFLUENT"), (5_000_000, "AFFLUENT"),
                                        (4_999_999, "LONG_TAIL"), (1_000_000, "LONG_TAIL"), (999_999, "MASS")]):
        answer = s.EvaluateCustomer(pb.EvaluateCustomerRequest(customer=snapshot(f"U{i}", amount)))
        assert (answer.tier, answer.change) == (tier, pb.CHANGE_KIND_NEW)
        assert s.GetCustomerTier(pb.GetCustomerTierRequest(customer_id=f"U{i}")).decision_id == answer.decision_id
    answer = s.EvaluateCustomer(pb.EvaluateCustomerRequest(customer=snapshot("U7", 19_999_999)))
    assert (answer.previous_tier, answer.tier, answer.next_tier.tier, answer.next_tier.gap_fen) == \
        ("MASS", "AFFLUENT", "WEALTH", 1)
    page = s.ListTierChanges(pb.ListTierChangesRequest(customer_id="U7"))
    assert [(c.from_tier, c.to_tier) for c in page.changes] == [("", "MASS"), ("MASS", "AFFLUENT")]


def test_bad_input_is_invalid_argument_naming_the_fields(suite):
    s = stub(suite)
    with pytest.raises(grpc.RpcError) as err:
        s.EvaluateCustomer(pb.EvaluateCustomerRequest(customer=pb.CustomerSnapshot(
            customer_id="", annual_avg_aum_fen=-5, age=151, card_level="TITANIUM", as_of="2026-02-30")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {"customer.customer_id", "customer.annual_avg_aum_fen", "customer.age", "customer.card_level",
            "customer.as_of"} <= set(field_violations(err.value))
    with pytest.raises(grpc.RpcError) as err:
        s.GetCustomerTier(pb.GetCustomerTierRequest(customer_id="nobody"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        stub(suite, "mobile_banking").EvaluateCustomer(pb.EvaluateCustomerRequest(customer=snapshot("X", 1)))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert s.ListTierChanges(pb.ListTierChangesRequest()).changes == []


def test_the_change_feed_resumes_after_a_disconnect_and_a_restart(suite):
    s = stub(suite)
    received: list[pb.TierChange] = []

    def watch(after, stop_after):
        stream = stub(suite).WatchTierChanges(pb.WatchTierChangesRequest(after_cursor=after))
        for change in stream:
            received.append(change)
            if len(received) >= stop_after:
                stream.cancel()
                return

    for i in range(30):
        s.EvaluateCustomer(pb.EvaluateCustomerRequest(customer=snapshot(f"W{i}", i * 1_000_000)))
    watch(0, 12)                                     # disconnects mid-way
    suite.stop("tiering")                            # ... and the server restarts
    suite.start("tiering")
    s = stub(suite)
    follower = threading.Thread(target=watch, args=(received[-1].cursor, 30 + 20))
    follower.start()
    for i in range(20):                              # new changes arrive while it follows
        s.EvaluateCustomer(pb.EvaluateCustomerRequest(customer=snapshot(f"W{i}", 700_000_000)))
    follower.join(timeout=60)
    assert not follower.is_alive()
    assert [c.cursor for c in received] == list(range(1, 51))
    assert [c.customer_id for c in received[30:]] == [f"W{i}" for i in range(20)]
    assert all(c.to_tier == "PRIVATE_BANKING" for c in received[30:])


def test_a_stream_of_100_000_customers_in_order_with_flat_memory(suite):
    total, bad_every = 100_000, 9_973
    sent = itertools.count()

    def requests():
        for snap in synthetic_customers(total, seed=11):
            n = next(sent)
            customer = pb.CustomerSnapshot(customer_id=snap.customer_id, as_of=snap.as_of,
                                           annual_avg_aum_fen=snap.annual_avg_aum_fen,
                                           monthly_avg_aum_fen=snap.monthly_avg_aum_fen,
                                           age=200 if n % bad_every == 0 else snap.age,
                                           card_level=snap.card_level, is_merchant=snap.is_merchant)
            yield pb.EvaluateCustomerRequest(customer=customer)

    pid = suite.processes["tiering"].pid
    rss = []
    answered = errors = 0
    expected_ids = (s.customer_id for s in synthetic_customers(total, seed=11))
    for answer in stub(suite).EvaluateCustomers(requests(), timeout=900):
        assert answer.customer_id == next(expected_ids)
        if answer.HasField("error"):
            assert answer.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            errors += 1
        else:
            assert answer.tier and answer.decision_id
        answered += 1
        if answered % 20_000 == 0:
            rss.append(_rss_kib(pid))
    assert answered == total and errors == len(range(0, total, bad_every))
    # memory is flat: the server grows by far less than the 100k decisions it stored
    assert rss[-1] - rss[0] < 150 * 1024, rss
    text = suite.metrics("tiering")
    assert metric_value(text, "kequn_tiering_batch_customers_total") == total
    assert metric_value(text, "kequn_tiering_feed_cursor") == total - errors


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
