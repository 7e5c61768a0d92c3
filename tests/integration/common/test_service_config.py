"""The gRPC service config (deploy/grpc/service_config.json) on the suite's
own channels (services.common.client.dial) against a real server that
refuses with UNAVAILABLE for a while: reads and request_id RPCs are retried,
other mutations never, deadlines apply."""

from __future__ import annotations

import dataclasses
import json
import threading

import grpc
import pytest
from prometheus_client import CollectorRegistry

from kequn.assignment.v1 import assignment_pb2, assignment_pb2_grpc
from kequn.benefits.v1 import benefits_pb2, benefits_pb2_grpc
from kequn.tiering.v1 import tiering_pb2, tiering_pb2_grpc
from services.common import errors, service_config
from services.common.auth import Policy, TokenStore
from services.common.client import dial
from services.common.config import ServiceConfig
from services.common.server import build_server
from services.common.testing import dev_tokens


class Flaky:
    """Counts calls per method; the first `refusals[method]` answer UNAVAILABLE."""

    def __init__(self, refusals: dict[str, int]):
        self.refusals = dict(refusals)
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()
        self.release = threading.Event()

    def hit(self, method: str) -> None:
        with self.lock:
            n = self.calls[method] = self.calls.get(method, 0) + 1
        if n <= self.refusals.get(method, 0):
            raise errors.Unavailable("database unavailable")


class Tiering(tiering_pb2_grpc.TieringServiceServicer):
    def __init__(self, flaky):
        self.flaky = flaky

    def GetCustomerTier(self, request, context):
        self.flaky.hit("GetCustomerTier")
        return tiering_pb2.TierDecision(customer_id=request.customer_id, tier="GOLD")

    def ListTierChanges(self, request, context):
        self.flaky.hit("ListTierChanges")
        self.flaky.release.wait(30)  # held: the read's deadline must end it
        return tiering_pb2.ListTierChangesResponse()


class Assignment(assignment_pb2_grpc.AssignmentServiceServicer):
    def __init__(self, flaky):
        self.flaky = flaky

    def CloseLockPeriod(self, request, context):
        self.flaky.hit("CloseLockPeriod")
        return assignment_pb2.LockPeriod(period_id=request.period_id)


class Benefits(benefits_pb2_grpc.BenefitsServiceServicer):
    def __init__(self, flaky):
        self.flaky = flaky

    def ClaimBenefit(self, request, context):
        self.flaky.hit("ClaimBenefit")
        return benefits_pb2.Claim(claim_id="c-1", customer_id=request.customer_id, benefit_id=request.benefit_id)


@pytest.fixture
def server(tmp_path):
    flaky = Flaky({"GetCustomerTier": 2, "CloseLockPeriod": 1, "ClaimBenefit": 1, "ListTierChanges": 0})
    tokens = dev_tokens(tmp_path)
    cfg = dataclasses.replace(ServiceConfig.from_env("tiering", {"KEQUN_DATA_DIR": str(tmp_path)}),
                              grpc_port=0, metrics_port=0, shutdown_grace_seconds=0)
    names = ["kequn.tiering.v1.TieringService", "kequn.assignment.v1.AssignmentService",
             "kequn.benefits.v1.BenefitsService"]
    srv = build_server(
        cfg, registry=CollectorRegistry(), token_store=TokenStore(tokens.path), serve_metrics=False,
        policy=Policy({f"/{name}/*": frozenset({"operations"}) for name in names}), service_names=names,
        servicers=[(tiering_pb2_grpc.add_TieringServiceServicer_to_server, Tiering(flaky)),
                   (assignment_pb2_grpc.add_AssignmentServiceServicer_to_server, Assignment(flaky)),
                   (benefits_pb2_grpc.add_BenefitsServiceServicer_to_server, Benefits(flaky))])
    srv.start()
    yield srv, flaky, tokens["operations"]
    flaky.release.set()
    srv.stop(0)


def test_an_idempotent_read_is_retried_until_the_server_answers(server):
    srv, flaky, token = server
    with dial(f"127.0.0.1:{srv.port}", token, tls=False) as channel:
        answer = tiering_pb2_grpc.TieringServiceStub(channel).GetCustomerTier(
            tiering_pb2.GetCustomerTierRequest(customer_id="C1"), timeout=30)
    assert answer.tier == "GOLD"
    assert flaky.calls["GetCustomerTier"] == 3  # two refusals, then the answer


def test_a_request_id_mutation_is_retried(server):
    srv, flaky, token = server
    with dial(f"127.0.0.1:{srv.port}", token, tls=False) as channel:
        claim = benefits_pb2_grpc.BenefitsServiceStub(channel).ClaimBenefit(
            benefits_pb2.ClaimBenefitRequest(customer_id="C1", benefit_id="B1", request_id="r-1"), timeout=30)
    assert claim.claim_id == "c-1"
    assert flaky.calls["ClaimBenefit"] == 2


def test_a_mutation_without_request_id_is_not_retried(server):
    srv, flaky, token = server
    with dial(f"127.0.0.1:{srv.port}", token, tls=False) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            assignment_pb2_grpc.AssignmentServiceStub(channel).CloseLockPeriod(
                assignment_pb2.CloseLockPeriodRequest(period_id="P1"), timeout=30)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert flaky.calls["CloseLockPeriod"] == 1


def test_retries_give_up_after_max_attempts(server):
    srv, flaky, token = server
    flaky.refusals["GetCustomerTier"] = 100
    with dial(f"127.0.0.1:{srv.port}", token, tls=False) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            tiering_pb2_grpc.TieringServiceStub(channel).GetCustomerTier(
                tiering_pb2.GetCustomerTierRequest(customer_id="C1"), timeout=30)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert flaky.calls["GetCustomerTier"] == service_config.RETRY_POLICY["maxAttempts"]


def test_without_the_config_nothing_is_retried(server):
    srv, flaky, token = server
    with dial(f"127.0.0.1:{srv.port}", token, tls=False,
              options=[("grpc.service_config", json.dumps({"methodConfig": []}))]) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            tiering_pb2_grpc.TieringServiceStub(channel).GetCustomerTier(
                tiering_pb2.GetCustomerTierRequest(customer_id="C1"), timeout=30)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert flaky.calls["GetCustomerTier"] == 1


def test_the_config_deadline_ends_a_call_without_its_own(server, tmp_path, monkeypatch):
    srv, flaky, token = server
    # An operator's file (KEQUN_GRPC_SERVICE_CONFIG) with a short read deadline.
    published = json.loads(service_config.render(service_config.build(service_config._contract_files())))
    for entry in published["methodConfig"]:
        if {"service": "kequn.tiering.v1.TieringService", "method": "ListTierChanges"} in entry["name"]:
            entry["timeout"] = "0.5s"
    path = tmp_path / "service_config.json"
    path.write_text(json.dumps(published))
    monkeypatch.setenv(service_config.PATH_ENV, str(path))
    with dial(f"127.0.0.1:{srv.port}", token, tls=False) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            tiering_pb2_grpc.TieringServiceStub(channel).ListTierChanges(tiering_pb2.ListTierChangesRequest())
    assert refused.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
