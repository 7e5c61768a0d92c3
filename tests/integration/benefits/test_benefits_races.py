"""Races on PostgreSQL through a real gRPC server: concurrent ClaimBenefit
requests over the network, each on its own connection and transaction.

Profiles come from a fixed in-memory source (the tiering port); everything
else — server, auth, interceptors, durable-rules, PostgreSQL — is real."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry

from kequn.benefits.v1 import benefits_pb2 as pb
from kequn.benefits.v1 import benefits_pb2_grpc
from services.benefits.api import SERVICE_NAME, BenefitsApi
from services.benefits.domain import Profile
from services.benefits.metrics import BenefitsMetrics
from services.benefits.service import utcnow
from services.common.auth import Policy, TokenStore, bearer_metadata
from services.common.config import ServiceConfig
from services.common.server import build_server
from services.common.testing import dev_tokens, free_port

from .conftest import build_service

pytestmark = pytest.mark.postgres

CUSTOMERS = [f"C-R{i:03d}" for i in range(200)]


@pytest.fixture
def server(pg_url, tmp_path):
    service, profiles = build_service(pg_url, utcnow)
    service.metrics = BenefitsMetrics(CollectorRegistry())
    for customer_id in CUSTOMERS:
        profiles.put(Profile(customer_id, "LONG_TAIL"))
    tokens = dev_tokens(tmp_path)
    config = ServiceConfig(service="benefits", host="127.0.0.1", grpc_port=free_port(), metrics_port=0,
                           database_url=pg_url, data_dir=Path(tmp_path), tokens_file=tokens.path,
                           max_concurrent_rpcs=256)
    srv = build_server(config, registry=CollectorRegistry(),
                       servicers=[(benefits_pb2_grpc.add_BenefitsServiceServicer_to_server, BenefitsApi(service))],
                       service_names=[SERVICE_NAME], token_store=TokenStore(tokens.path), policy=Policy.load(),
                       serve_metrics=False)
    srv.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
    stub = benefits_pb2_grpc.BenefitsServiceStub(channel)
    yield stub, tokens, service
    channel.close()
    srv.stop()


def call(stub_method, request, token):
    try:
        return "OK", stub_method(request, metadata=bearer_metadata(token), timeout=60)
    except grpc.RpcError as exc:
        return exc.code().name, exc.details()


def race(fn, items, workers=64):
    start = threading.Barrier(min(workers, len(items)))

    def go(item):
        try:
            start.wait(timeout=10)
        except threading.BrokenBarrierError:
            pass
        return fn(item)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(go, items))


def upsert(stub, tokens, benefit_id, **fields):
    benefit = pb.Benefit(benefit_id=benefit_id, name=benefit_id.lower(), eligibility_rule="benefit.points_gift",
                         active=True, **fields)
    code, _ = call(stub.UpsertBenefit, pb.UpsertBenefitRequest(benefit=benefit, request_id=f"u-{benefit_id}"),
                   tokens["operations"])
    assert code == "OK"


def test_200_concurrent_claims_for_50_units_hand_out_exactly_50(server):
    stub, tokens, service = server
    upsert(stub, tokens, "HOT_GIFT", kind="GIFT", quota_per_period=1, quota_period=pb.QUOTA_PERIOD_DAY,
           physical=True)
    assert call(stub.AdjustInventory, pb.AdjustInventoryRequest(benefit_id="HOT_GIFT", delta=50, reason="in",
                                                                request_id="in-1"), tokens["operations"])[0] == "OK"
    low_water = []
    stop = threading.Event()

    def watch():  # stock is never seen below zero while the race runs
        while not stop.is_set():
            low_water.append(service.get_inventory("HOT_GIFT").available)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        results = race(lambda c: call(stub.ClaimBenefit, pb.ClaimBenefitRequest(
            customer_id=c, benefit_id="HOT_GIFT", channel="MOBILE", request_id=f"hot-{c}"),
            tokens["mobile_banking"]), CUSTOMERS)
    finally:
        stop.set()
        watcher.join()
    codes = [code for code, _ in results]
    assert codes.count("OK") == 50
    assert codes.count("RESOURCE_EXHAUSTED") == 150, sorted(set(codes))
    inv = service.get_inventory("HOT_GIFT")
    assert (inv.on_hand, inv.reserved, inv.available) == (50, 50, 0)
    assert min(low_water) >= 0
    reconciled = call(stub.Reconcile, pb.ReconcileRequest(), tokens["operations"])[1]
    assert reconciled.ok, reconciled.mismatches


def test_one_customer_with_quota_1_from_two_channels_at_once_gets_exactly_one(server):
    stub, tokens, service = server
    upsert(stub, tokens, "ONE_PER_YEAR", kind="COUPON", quota_per_period=1, quota_period=pb.QUOTA_PERIOD_YEAR,
           channels=["MOBILE", "LOBBY"])
    attempts = [("MOBILE" if i % 2 else "LOBBY", f"q-{i}") for i in range(40)]
    results = race(lambda a: call(stub.ClaimBenefit, pb.ClaimBenefitRequest(
        customer_id="C-R000", benefit_id="ONE_PER_YEAR", channel=a[0], request_id=a[1]),
        tokens["mobile_banking"]), attempts)
    codes = [code for code, _ in results]
    assert codes.count("OK") == 1
    assert codes.count("FAILED_PRECONDITION") == 39, sorted(set(codes))
    assert len(service.list_claims("C-R000")[0]) == 1


def test_the_same_request_retried_concurrently_is_one_claim(server):
    stub, tokens, service = server
    upsert(stub, tokens, "RETRIED", kind="COUPON", quota_per_period=5, quota_period=pb.QUOTA_PERIOD_YEAR)
    results = race(lambda _: call(stub.ClaimBenefit, pb.ClaimBenefitRequest(
        customer_id="C-R001", benefit_id="RETRIED", channel="MOBILE", request_id="same"),
        tokens["mobile_banking"]), range(30))
    assert {code for code, _ in results} == {"OK"}
    assert len({claim.claim_id for _, claim in results}) == 1
    assert len(service.list_claims("C-R001")[0]) == 1


def test_a_budget_is_spent_to_the_fen_and_no_further_under_a_race(server):
    stub, tokens, service = server
    upsert(stub, tokens, "BUDGETED", kind="COUPON", quota_per_period=1, quota_period=pb.QUOTA_PERIOD_DAY,
           budget_group="RACE", unit_cost_fen=333)
    month = service.policy().calendar.period_key("MONTH", utcnow())
    amount = 333 * 7
    assert call(stub.SetBudget, pb.SetBudgetRequest(group="RACE", period=month, amount_fen=amount, request_id="b"),
                tokens["operations"])[0] == "OK"
    results = race(lambda c: call(stub.ClaimBenefit, pb.ClaimBenefitRequest(
        customer_id=c, benefit_id="BUDGETED", channel="MOBILE", request_id=f"bud-{c}"),
        tokens["mobile_banking"]), CUSTOMERS[:60])
    codes = [code for code, _ in results]
    assert codes.count("OK") == 7 and codes.count("RESOURCE_EXHAUSTED") == 53
    budget = service.get_budget("RACE", month)
    assert (budget.spent_fen, budget.remaining_fen) == (amount, 0)

    # cancels race too: each claim gives its 333 fen back exactly once
    claimed = [claim.claim_id for code, claim in results if code == "OK"]
    race(lambda cid: call(stub.CancelClaim, pb.CancelClaimRequest(claim_id=cid, reason="race"),
                          tokens["mobile_banking"]), claimed * 3)
    assert service.get_budget("RACE", month).spent_fen == 0
    reconciled = call(stub.Reconcile, pb.ReconcileRequest(), tokens["operations"])[1]
    assert reconciled.ok, reconciled.mismatches
