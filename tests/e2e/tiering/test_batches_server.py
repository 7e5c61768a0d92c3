"""EvaluateCustomerBatches (many customers per stream message) through a real server process."""
from __future__ import annotations

import itertools

import grpc
import pytest

from kequn.tiering.v1 import tiering_pb2 as pb
from services.tiering.api import MAX_BATCH_MESSAGE
from services.tiering.demo import synthetic_customers
from tests.e2e.harness import metric_value
from tests.e2e.tiering.test_tiering_server import _rss_kib, field_violations, snapshot, stub

INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]


def batch(*requests) -> pb.EvaluateCustomerBatchesRequest:
    return pb.EvaluateCustomerBatchesRequest(requests=list(requests))


def ask(customer_id, amount, request_id="", dry_run=False, **more) -> pb.EvaluateCustomerRequest:
    return pb.EvaluateCustomerRequest(customer=snapshot(customer_id, amount, **more), request_id=request_id,
                                      dry_run=dry_run)


def test_answers_each_message_in_order_with_item_errors_dry_runs_and_replays(suite):
    s = stub(suite)
    first = batch(ask("B1", 600_000_000, "r1"), ask("B2", 19_999_999, "r2"),
                  ask("", 5_000_000, "r3"),                          # refused: no customer id
                  ask("B4", 4_999_999, "r4", age=151),                 # refused: age
                  ask("B5", 20_000_000, dry_run=True),                 # evaluated, nothing stored
                  ask("B6", 999_999, "r6"))
    second = batch(ask("B2", 20_000_000, "r2b"), ask("B7", 1_000_000, "r7"))
    answers = list(s.EvaluateCustomerBatches(iter([first, second]), timeout=60))

    assert [len(a.decisions) for a in answers] == [6, 2]
    one, two = answers
    assert [d.customer_id for d in one.decisions] == ["B1", "B2", "", "B4", "B5", "B6"]
    assert [d.tier for d in one.decisions] == ["PRIVATE_BANKING", "AFFLUENT", "", "", "WEALTH", "MASS"]
    assert [d.HasField("error") for d in one.decisions] == [False, False, True, True, False, False]
    assert {one.decisions[2].error.code, one.decisions[3].error.code} == {INVALID}
    assert "age" in one.decisions[3].error.message
    assert (one.decisions[4].dry_run, one.decisions[4].cursor) == (True, 0)
    assert all(d.cursor > 0 for i, d in enumerate(one.decisions) if i in (0, 1, 5))
    assert [(d.customer_id, d.previous_tier, d.tier, d.change) for d in two.decisions] == [
        ("B2", "AFFLUENT", "WEALTH", pb.CHANGE_KIND_UPGRADE), ("B7", "", "LONG_TAIL", pb.CHANGE_KIND_NEW)]

    # Stored exactly as answered; the dry run and the refused items stored nothing.
    assert s.GetCustomerTier(pb.GetCustomerTierRequest(customer_id="B6")).decision_id == \
        one.decisions[5].decision_id
    for nobody in ("B4", "B5"):
        with pytest.raises(grpc.RpcError) as err:
            s.GetCustomerTier(pb.GetCustomerTierRequest(customer_id=nobody))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    feed = s.ListTierChanges(pb.ListTierChangesRequest(page_size=100)).changes
    assert [c.customer_id for c in feed] == ["B1", "B2", "B6", "B2", "B7"]

    # A broken stream re-sent with the same request ids (and new figures) is
    # answered from the store: same decisions, nothing stored twice.
    resent = batch(ask("B1", 1, "r1"), ask("B2", 1, "r2"), ask("B8", 1_000_000, "r8"))
    again = list(s.EvaluateCustomerBatches(iter([resent]), timeout=60))[0].decisions
    assert [d.decision_id for d in again[:2]] == [one.decisions[0].decision_id, one.decisions[1].decision_id]
    assert [d.tier for d in again] == ["PRIVATE_BANKING", "AFFLUENT", "LONG_TAIL"]
    feed = s.ListTierChanges(pb.ListTierChangesRequest(page_size=100)).changes
    assert [c.customer_id for c in feed] == ["B1", "B2", "B6", "B2", "B7", "B8"]


def test_answers_are_the_same_as_evaluate_customers(suite):
    s = stub(suite)
    customers = [snapshot(f"S{i}", amount) for i, amount in
                 enumerate([0, 999_999, 1_000_000, 4_999_999, 5_000_000, 19_999_999, 20_000_000, 600_000_000])]
    dry = [pb.EvaluateCustomerRequest(customer=c, dry_run=True) for c in customers]
    one_by_one = list(s.EvaluateCustomers(iter(dry), timeout=60))
    batched = list(s.EvaluateCustomerBatches(iter([batch(*dry[:3]), batch(*dry[3:])]), timeout=60))
    flat = [d for message in batched for d in message.decisions]
    key = lambda d: (d.customer_id, d.tier, list(d.segments), list(d.flags), d.next_tier.gap_fen,  # noqa: E731
                     [r.rule_id for r in d.fired_rules])
    assert [key(d) for d in flat] == [key(d) for d in one_by_one]


def test_a_message_above_the_maximum_is_refused_and_stores_nothing(suite):
    s = stub(suite)
    too_many = batch(*(ask(f"M{i}", 1_000_000) for i in range(MAX_BATCH_MESSAGE + 1)))
    answers = []
    with pytest.raises(grpc.RpcError) as err:
        for answer in s.EvaluateCustomerBatches(iter([batch(ask("OK", 1_000_000)), too_many]), timeout=60):
            answers.append(answer)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "requests" in field_violations(err.value)
    assert [d.customer_id for a in answers for d in a.decisions] == ["OK"]
    assert [c.customer_id for c in s.ListTierChanges(pb.ListTierChangesRequest()).changes] == ["OK"]
    # The maximum itself is accepted (dry run: nothing stored).
    at_max = batch(*(ask(f"M{i}", 1_000_000, dry_run=True) for i in range(MAX_BATCH_MESSAGE)))
    answers = list(s.EvaluateCustomerBatches(iter([at_max]), timeout=120))
    assert [d.customer_id for d in answers[0].decisions] == [f"M{i}" for i in range(MAX_BATCH_MESSAGE)]


def test_only_the_batch_roles_may_call_it(suite):
    with pytest.raises(grpc.RpcError) as err:
        list(stub(suite, "mobile_banking").EvaluateCustomerBatches(iter([batch(ask("X", 1))]), timeout=30))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    answers = list(stub(suite, "operations").EvaluateCustomerBatches(iter([batch(ask("X", 1))]), timeout=30))
    assert answers[0].decisions[0].tier == "MASS"


def test_a_stream_of_100_000_customers_in_batches_in_order_with_flat_memory(suite):
    total, size, bad_every = 100_000, 500, 9_973
    numbers = itertools.count()

    def requests():
        customers = iter(synthetic_customers(total, seed=11))
        while True:
            chunk = list(itertools.islice(customers, size))
            if not chunk:
                return
            message = pb.EvaluateCustomerBatchesRequest()
            for snap in chunk:
                n = next(numbers)
                message.requests.add(customer=pb.CustomerSnapshot(
                    customer_id=snap.customer_id, as_of=snap.as_of, annual_avg_aum_fen=snap.annual_avg_aum_fen,
                    monthly_avg_aum_fen=snap.monthly_avg_aum_fen, age=200 if n % bad_every == 0 else snap.age,
                    card_level=snap.card_level, is_merchant=snap.is_merchant))
            yield message

    pid = suite.processes["tiering"].pid
    rss = []
    answered = errors = messages = 0
    expected_ids = (s.customer_id for s in synthetic_customers(total, seed=11))
    for message in stub(suite).EvaluateCustomerBatches(requests(), timeout=900):
        messages += 1
        assert len(message.decisions) == size
        for answer in message.decisions:
            assert answer.customer_id == next(expected_ids)
            if answer.HasField("error"):
                assert answer.error.code == INVALID
                errors += 1
            else:
                assert answer.tier and answer.decision_id and answer.cursor > 0
            answered += 1
        if answered % 20_000 == 0:
            rss.append(_rss_kib(pid))
    assert (messages, answered, errors) == (total // size, total, len(range(0, total, bad_every)))
    # memory is flat: the server grows by far less than the 100k decisions it stored
    assert rss[-1] - rss[0] < 150 * 1024, rss
    text = suite.metrics("tiering")
    assert metric_value(text, "kequn_tiering_batch_customers_total") == total
    assert metric_value(text, "kequn_tiering_feed_cursor") == total - errors
