"""Tracing across real service processes. tiering, assignment and benefits
run with the standard OTEL_* variables pointing their OTLP/gRPC exporter at a
collector inside this test (opentelemetry-proto's TraceService on a free
port, keeping every span it receives in memory):

- one ListEntitlements is one trace: benefits' SERVER span is its root, its
  CLIENT span the parent of tiering's GetCustomerTier SERVER span;
- the JSON logs of both services carry that trace id;
- the tiering feed carries the evaluation's context to assignment, whose
  span for the stored batch links to tiering's EvaluateCustomer span."""
from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from kequn.benefits.v1 import benefits_pb2, benefits_pb2_grpc
from kequn.tiering.v1 import tiering_pb2, tiering_pb2_grpc
from services.common.auth import bearer_metadata
from services.common.testing import free_port
from tests.e2e.harness import Suite

pytestmark = pytest.mark.e2e
SERVER, CLIENT = trace_pb2.Span.SPAN_KIND_SERVER, trace_pb2.Span.SPAN_KIND_CLIENT


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that keeps (service.name, span) pairs."""

    def __init__(self):
        self.spans: list[tuple[str, trace_pb2.Span]] = []
        self.changed = threading.Condition()

    def Export(self, request, context):
        with self.changed:
            for resource_spans in request.resource_spans:
                service = next((a.value.string_value for a in resource_spans.resource.attributes
                                if a.key == "service.name"), "")
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend((service, span) for span in scope_spans.spans)
            self.changed.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()

    def wait_for(self, predicate, what: str, timeout: float = 60):
        """The first span (service, span) matching `predicate`, waiting for exports."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = [(svc, s) for svc, s in self.spans if predicate(svc, s)]
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    names = sorted({f"{svc}:{s.name}" for svc, s in self.spans})
                    raise AssertionError(f"no span {what} after {timeout}s; received: {names}")
                self.changed.wait(left)

    def trace(self, trace_id: bytes) -> list[tuple[str, trace_pb2.Span]]:
        with self.changed:
            return [(svc, s) for svc, s in self.spans if s.trace_id == trace_id]


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    collector = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    server.start()
    suite = Suite(tmp_path_factory.mktemp("tracing"), services=("tiering", "assignment", "benefits"), extra_env={
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: export promptly
    })
    try:
        suite.start()
        yield suite, collector
    finally:
        suite.close()
        server.stop(0)


def _metadata(suite, role):
    # No trace context from this process: the services start the traces.
    return (*bearer_metadata(suite.tokens[role]), ("x-request-id", uuid.uuid4().hex))


def _evaluate(suite, customer_id: str) -> tiering_pb2.TierDecision:
    snapshot = tiering_pb2.CustomerSnapshot(customer_id=customer_id, as_of="2025-03-01",
                                            annual_avg_aum_fen=10_000_000, monthly_avg_aum_fen=10_000_000,
                                            point_in_time_aum_fen=10_000_000)
    with grpc.insecure_channel(suite.target("tiering")) as channel:
        return tiering_pb2_grpc.TieringServiceStub(channel).EvaluateCustomer(
            tiering_pb2.EvaluateCustomerRequest(customer=snapshot, request_id=f"e-{customer_id}"),
            metadata=_metadata(suite, "core_banking"), timeout=30)


def _log_lines(suite, service: str) -> list[dict]:
    lines = []
    for line in suite.log(service).splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def _list_entitlements_trace(suite, collector):
    customer = f"TR-{uuid.uuid4().hex[:8]}"
    assert _evaluate(suite, customer).tier
    with grpc.insecure_channel(suite.target("benefits")) as channel:
        view = benefits_pb2_grpc.BenefitsServiceStub(channel).ListEntitlements(
            benefits_pb2.ListEntitlementsRequest(customer_id=customer), metadata=_metadata(suite, "mobile_banking"),
            timeout=30)
    assert view.tier
    _, root = collector.wait_for(
        lambda svc, s: s.name == "kequn.benefits.v1.BenefitsService/ListEntitlements" and any(
            a.key == "rpc.method" for a in s.attributes) and s.trace_id not in _seen, "ListEntitlements")
    _seen.add(root.trace_id)
    collector.wait_for(lambda svc, s: s.trace_id == root.trace_id and svc == "kequn-tiering", "tiering in trace")
    return root


_seen: set[bytes] = set()


def test_one_list_entitlements_is_one_trace_across_benefits_and_tiering(traced):
    suite, collector = traced
    root = _list_entitlements_trace(suite, collector)
    spans = collector.trace(root.trace_id)
    by_id = {s.span_id: (svc, s) for svc, s in spans}

    assert root.kind == SERVER and not root.parent_span_id  # the trace starts at benefits
    [(_, tiering)] = [(svc, s) for svc, s in spans if svc == "kequn-tiering"]
    assert tiering.name == "kequn.tiering.v1.TieringService/GetCustomerTier" and tiering.kind == SERVER
    client_service, client = by_id[tiering.parent_span_id]  # tiering's parent: benefits' outgoing call
    assert client_service == "kequn-benefits" and client.kind == CLIENT
    assert client.name == "kequn.tiering.v1.TieringService/GetCustomerTier"
    assert client.parent_span_id == root.span_id
    assert {svc for svc, _ in spans} == {"kequn-benefits", "kequn-tiering"}
    assert [s for _, s in spans if not s.parent_span_id] == [root]  # one root: one trace


def test_both_services_log_the_trace_id(traced):
    suite, collector = traced
    root = _list_entitlements_trace(suite, collector)
    trace_id = root.trace_id.hex()
    deadline = time.monotonic() + 30
    while True:
        benefits = [line for line in _log_lines(suite, "benefits")
                    if line.get("method") == "ListEntitlements" and line.get("trace_id") == trace_id]
        tiering = [line for line in _log_lines(suite, "tiering")
                   if line.get("method") == "GetCustomerTier" and line.get("trace_id") == trace_id]
        if benefits and tiering or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert benefits and tiering
    assert benefits[0]["span_id"] == root.span_id.hex()


def test_the_feed_links_assignment_to_the_evaluation(traced):
    suite, collector = traced
    customer = f"FD-{uuid.uuid4().hex[:8]}"
    decision = _evaluate(suite, customer)
    with grpc.insecure_channel(suite.target("tiering")) as channel:
        changes = tiering_pb2_grpc.TieringServiceStub(channel).ListTierChanges(
            tiering_pb2.ListTierChangesRequest(customer_id=customer), metadata=_metadata(suite, "operations"),
            timeout=30).changes
    assert [c.decision_id for c in changes] == [decision.decision_id]
    version, trace_id, span_id, _flags = changes[0].traceparent.split("-")
    assert version == "00"
    # The feed entry names tiering's span of that EvaluateCustomer call...
    _, evaluation = collector.wait_for(
        lambda svc, s: svc == "kequn-tiering" and s.span_id.hex() == span_id and s.trace_id.hex() == trace_id,
        "of the evaluation")
    assert evaluation.name == "kequn.tiering.v1.TieringService/EvaluateCustomer" and evaluation.kind == SERVER
    # ...and assignment's span for the batch that stored the change links to it.
    _, applied = collector.wait_for(
        lambda svc, s: svc == "kequn-assignment" and s.name == "assignment.feed.apply" and any(
            link.trace_id == evaluation.trace_id and link.span_id == evaluation.span_id for link in s.links),
        "assignment.feed.apply linked to the evaluation")
    assert applied.trace_id != evaluation.trace_id  # linked, not parented: a batch has many origins
