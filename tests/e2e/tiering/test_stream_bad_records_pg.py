"""A nightly stream with bad records in it, against a real server on
PostgreSQL: every good record is stored and answered, every bad one answers
its own error in place (TierDecision.error with ErrorInfo), in order, and the
stream completes. Bad records are refused at every stage: validation, the
rule engine, the read of the customers' states (a NUL byte) and the write
(values longer than their column)."""
from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2

from kequn.tiering.v1 import tiering_pb2 as pb
from tests.e2e.tiering.test_tiering_server import snapshot, stub

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]


def _bad(i: int) -> pb.EvaluateCustomerRequest:
    kind = i % 6
    if kind == 0:    # a NUL byte in the customer id: PostgreSQL refuses it (today: after validation)
        return pb.EvaluateCustomerRequest(customer=snapshot(f"BAD{i}\x00X", 30_000_000))
    if kind == 1:    # a branch id longer than its column (varchar(100)), or with a NUL byte
        branch = "B" * 150 if (i // 6) % 2 else "OUT\x00-1"
        return pb.EvaluateCustomerRequest(customer=snapshot(
            f"BAD{i}", 30_000_000, point_in_time_aum_fen=10, holdings=[pb.BranchHolding(branch_id=branch, aum_fen=10)]))
    if kind == 2:    # a request id longer than its column (varchar(200))
        return pb.EvaluateCustomerRequest(customer=snapshot(f"BAD{i}", 30_000_000), request_id="R" * 300)
    if kind == 3:    # 300 attributes: more than a fact may carry into the rule engine
        return pb.EvaluateCustomerRequest(customer=snapshot(
            f"BAD{i}", 30_000_000, attributes={f"a{k}": "x" for k in range(300)}))
    if kind == 4:    # a NUL byte in the request id (read at the replay check)
        return pb.EvaluateCustomerRequest(customer=snapshot(f"BAD{i}", 30_000_000), request_id=f"r{i}\x00")
    return pb.EvaluateCustomerRequest(customer=snapshot(f"BAD{i}", 30_000_000, age=151))


def _mixed(n: int, every: int, prefix: str):
    """(requests, indexes of the bad ones): a bad record every ``every``."""
    requests, bad = [], set()
    for i in range(n):
        if i % every == every - 1:
            requests.append(_bad(i))
            bad.add(i)
        else:
            requests.append(pb.EvaluateCustomerRequest(
                customer=snapshot(f"{prefix}{i}", 1_000_000 * (i % 700)), request_id=f"{prefix}-r{i}"))
    return requests, bad


def _error_info(status) -> error_details_pb2.ErrorInfo | None:
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    return None


def _check(answers, requests, bad) -> set[str]:
    assert len(answers) == len(requests)
    stored = set()
    for i, (request, answer) in enumerate(zip(requests, answers)):
        assert answer.customer_id == request.customer.customer_id, i  # in place, in order
        if i in bad:
            assert answer.HasField("error") and answer.error.code == INVALID, (i, answer.error)
            info = _error_info(answer.error)
            assert info is not None and info.domain == "kequn.bank" and info.reason == "INVALID_INPUT"
            assert not answer.decision_id
        else:
            assert not answer.HasField("error"), (i, answer.error)
            assert answer.tier and answer.decision_id
            stored.add(answer.customer_id)
    return stored


def _fed(s) -> set[str]:
    seen, token = set(), ""
    while True:
        page = s.ListTierChanges(pb.ListTierChangesRequest(page_size=1000, page_token=token), timeout=30)
        seen.update(c.customer_id for c in page.changes)
        token = page.next_page_token
        if not token:
            return seen


def test_evaluate_customers_answers_bad_records_in_place_and_stores_every_good_one(pg_suite):
    s = stub(pg_suite)
    requests, bad = _mixed(1_200, 7, "S")   # 171 bad records among 1,200, spread over three chunks
    answers = list(s.EvaluateCustomers(iter(requests), timeout=300))
    stored = _check(answers, requests, bad)
    assert len(stored) == 1_200 - len(bad)
    assert _fed(s) == stored   # every good record stored (each is new: one feed entry each), no bad one
    assert pg_suite.processes["tiering"].poll() is None


def test_evaluate_customer_batches_answers_bad_records_in_place(pg_suite):
    s = stub(pg_suite)
    first, bad_first = _mixed(600, 5, "M")
    second, bad_second = _mixed(40, 3, "N")
    answers = list(s.EvaluateCustomerBatches(iter([pb.EvaluateCustomerBatchesRequest(requests=first),
                                                   pb.EvaluateCustomerBatchesRequest(requests=second)]),
                                             timeout=300))
    assert len(answers) == 2
    stored = _check(answers[0].decisions, first, bad_first) | _check(answers[1].decisions, second, bad_second)
    assert _fed(s) == stored
    # A record whose write was refused left nothing behind: asked alone, it is unknown.
    with pytest.raises(grpc.RpcError) as err:
        s.GetCustomerTier(pb.GetCustomerTierRequest(customer_id="BAD9"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
