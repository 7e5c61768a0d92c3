"""services.common.tracing in one process: real servers from build_server,
real channels from dial(), spans caught by the SDK's in-memory exporter.

(The cross-process proof — one ListEntitlements, one trace over benefits and
tiering — is tests/e2e/test_tracing.py.)"""

from __future__ import annotations

import dataclasses
import io
import json
import logging

import grpc
import pytest
from opentelemetry import propagate
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from services.common import errors, tracing
from services.common.auth import Policy, TokenStore
from services.common.client import dial
from services.common.config import ServiceConfig
from services.common.logging import JsonFormatter
from services.common.server import build_server
from services.common.testing import dev_tokens
from services.tiering.domain import Snapshot
from services.tiering.service import EvaluateRequest

FRONT, BACK = "kequn.test.v1.Front", "kequn.test.v1.Back"


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.uninstall()


@pytest.fixture
def json_log():
    """The kequn.rpc lines as the services write them (JsonFormatter)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    logger = logging.getLogger("kequn.rpc")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def _server(tmp_path, name, handlers, tokens=None):
    tokens = tokens or dev_tokens(tmp_path)
    cfg = dataclasses.replace(ServiceConfig.from_env("tiering", {"KEQUN_DATA_DIR": str(tmp_path)}),
                              grpc_port=0, metrics_port=0, shutdown_grace_seconds=0)
    srv = build_server(cfg, registry=CollectorRegistry(), token_store=TokenStore(tokens.path), serve_metrics=False,
                       policy=Policy({f"/{name}/*": frozenset({"operations", "service"})}), service_names=[name],
                       servicers=[(lambda _s, server: server.add_generic_rpc_handlers(
                           (grpc.method_handlers_generic_handler(name, handlers),)), None)])
    return srv.start(), tokens


@pytest.fixture
def chain(tmp_path, spans):
    """Front.Ask calls Back.Answer over a dial()ed channel, as benefits calls tiering."""
    def answer(request, context):
        if request == b"fail":
            raise RuntimeError("boom")
        if request == b"refuse":
            raise errors.FailedPrecondition("quota used", reason="QUOTA_USED")
        return request.upper()

    def count(request, context):
        for i in range(int(request)):
            yield str(i).encode()

    tokens = dev_tokens(tmp_path)
    back, _ = _server(tmp_path, BACK, {
        "Answer": grpc.unary_unary_rpc_method_handler(answer),
        "Count": grpc.unary_stream_rpc_method_handler(count)}, tokens)
    back_channel = dial(f"127.0.0.1:{back.port}", tokens["service"], tls=False)

    def ask(request, context):
        return back_channel.unary_unary(f"/{BACK}/Answer")(request, timeout=10)

    front, _ = _server(tmp_path, FRONT, {"Ask": grpc.unary_unary_rpc_method_handler(ask)}, tokens)
    channel = grpc.insecure_channel(f"127.0.0.1:{front.port}")
    md = (("authorization", f"Bearer {tokens['operations']}"),)
    yield lambda request: channel.unary_unary(f"/{FRONT}/Ask")(request, metadata=md, timeout=10), \
        grpc.insecure_channel(f"127.0.0.1:{back.port}"), tokens
    channel.close()
    back_channel.close()
    front.stop(0)
    back.stop(0)


def by_name(exporter, name):
    return [s for s in exporter.get_finished_spans() if s.name == name]


def test_a_call_across_two_servers_is_one_trace(chain, spans, json_log):
    call, _, _ = chain
    assert call(b"hi") == b"HI"
    [front] = by_name(spans, f"{FRONT}/Ask")
    [client] = [s for s in by_name(spans, f"{BACK}/Answer") if s.kind == SpanKind.CLIENT]
    [back] = [s for s in by_name(spans, f"{BACK}/Answer") if s.kind == SpanKind.SERVER]
    assert front.kind == SpanKind.SERVER and front.parent is None
    assert client.parent.span_id == front.context.span_id
    assert back.parent.span_id == client.context.span_id
    assert len({front.context.trace_id, client.context.trace_id, back.context.trace_id}) == 1
    assert back.attributes["rpc.method"] == "Answer" and back.attributes["rpc.grpc.status_code"] == 0
    # Each server's log line of the RPC carries its own span.
    lines = {line["method"]: line for line in json_log()}
    assert lines["Ask"]["trace_id"] == lines["Answer"]["trace_id"] == f"{front.context.trace_id:032x}"
    assert lines["Ask"]["span_id"] == f"{front.context.span_id:016x}"
    assert lines["Answer"]["span_id"] == f"{back.context.span_id:016x}"


def test_health_probes_are_not_traced(chain, spans):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    _, back_channel, _ = chain
    health_pb2_grpc.HealthStub(back_channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert spans.get_finished_spans() == ()


def test_a_caller_trace_context_is_continued(chain, spans):
    _, back_channel, tokens = chain
    with tracing.start_span("caller"):
        carrier = {}
        propagate.inject(carrier)  # what any OpenTelemetry client sends (W3C traceparent)
        back_channel.unary_unary(f"/{BACK}/Answer")(
            b"x", metadata=(("authorization", f"Bearer {tokens['operations']}"), *carrier.items()), timeout=10)
    [caller] = by_name(spans, "caller")
    [back] = by_name(spans, f"{BACK}/Answer")
    assert back.parent.span_id == caller.context.span_id
    assert back.context.trace_id == caller.context.trace_id


def test_failures_mark_spans_as_the_conventions_say(chain, spans):
    call, _, _ = chain
    with pytest.raises(grpc.RpcError):
        call(b"fail")  # INTERNAL at the back (an uncaught exception): a server error
    with pytest.raises(grpc.RpcError):
        call(b"refuse")  # FAILED_PRECONDITION: the caller's problem, not the server's
    backs = [s for s in by_name(spans, f"{BACK}/Answer") if s.kind == SpanKind.SERVER]
    codes = {s.attributes["rpc.grpc.status_code"]: s.status.status_code for s in backs}
    assert codes == {grpc.StatusCode.INTERNAL.value[0]: StatusCode.ERROR,
                     grpc.StatusCode.FAILED_PRECONDITION.value[0]: StatusCode.UNSET}
    clients = [s for s in by_name(spans, f"{BACK}/Answer") if s.kind == SpanKind.CLIENT]
    assert {s.status.status_code for s in clients} == {StatusCode.ERROR}  # any failure, for the caller


def test_a_server_stream_is_one_span(chain, spans):
    _, back_channel, tokens = chain
    md = (("authorization", f"Bearer {tokens['operations']}"),)
    assert list(back_channel.unary_stream(f"/{BACK}/Count")(b"3", metadata=md, timeout=10)) == [b"0", b"1", b"2"]
    [span] = by_name(spans, f"{BACK}/Count")
    assert span.kind == SpanKind.SERVER and span.attributes["rpc.grpc.status_code"] == 0


def test_off_by_default_nothing_is_installed(tmp_path, json_log):
    tracing.uninstall()
    assert tracing.configure_from_env("tiering", {}) is False
    assert tracing.configure_from_env("tiering", {"OTEL_TRACES_EXPORTER": "none"}) is False
    assert tracing.configure_from_env("tiering", {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}) \
        is False
    assert tracing.server_interceptors() == [] and tracing.client_interceptors() == []
    assert tracing.current_traceparent() == ""
    srv, tokens = _server(tmp_path, BACK, {"Answer": grpc.unary_unary_rpc_method_handler(lambda r, c: r)})
    try:
        assert not any(isinstance(i, tracing.ServerTracingInterceptor) for i in srv.server._state.interceptor_pipeline.interceptors)
        with dial(f"127.0.0.1:{srv.port}", tokens["operations"], tls=False) as channel:
            assert channel.unary_unary(f"/{BACK}/Answer")(b"x", timeout=10) == b"x"
    finally:
        srv.stop(0)
    [line] = [line for line in json_log() if line["method"] == "Answer"]
    assert "trace_id" not in line


@pytest.mark.parametrize("env", [{"OTEL_TRACES_EXPORTER": "jaeger"},
                                 {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}])
def test_an_exporter_we_do_not_ship_is_a_clear_error(env):
    with pytest.raises(ValueError, match="OTEL_"):
        tracing.configure_from_env("tiering", env)
    assert not tracing.enabled()


def test_a_stored_change_keeps_the_evaluation_trace_context(spans, db_url):
    from tests.integration.tiering.conftest import make_harness

    harness = make_harness(db_url)
    try:
        with tracing.start_span("EvaluateCustomer") as span:
            harness.service.evaluate(EvaluateRequest(Snapshot("TP1", as_of="2026-01-31",
                                                              annual_avg_aum_fen=10_000_000)))
        harness.service.evaluate_batch_chunk([EvaluateRequest(Snapshot("TP2", as_of="2026-01-31",
                                                                       annual_avg_aum_fen=10_000_000))])
        changes = {c.customer_id: c for c in harness.service.changes_after(0)}
    finally:
        harness.runtime.stop()
        harness.engine.dispose()
    ctx = span.get_span_context()
    assert changes["TP1"].traceparent.split("-")[1:3] == [f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"]
    assert changes["TP2"].traceparent == ""  # evaluated outside any span
