"""gRPC server metrics under the go-grpc-prometheus names (CONTRACT.md), in a
registry the server owns: tests and several servers in one process never
collide, and each service adds its kequn_* metrics to the same registry."""

from __future__ import annotations

import time
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from services.common.rpc import CallContext, MethodInterceptor, iterate, rpc_type, split_method, wrap_handler

# Prometheus client_golang DefBuckets, as go-grpc-prometheus uses.
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_LABELS = ("grpc_type", "grpc_service", "grpc_method")


class ServerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.started = Counter("grpc_server_started_total", "Total number of RPCs started on the server.",
                               _LABELS, registry=registry)
        self.handled = Counter("grpc_server_handled_total",
                               "Total number of RPCs completed on the server, regardless of success or failure.",
                               (*_LABELS, "grpc_code"), registry=registry)
        self.handling = Histogram("grpc_server_handling_seconds",
                                  "Histogram of response latency (seconds) of gRPC that had been application-level "
                                  "handled by the server.", _LABELS, buckets=DEFAULT_BUCKETS, registry=registry)
        self.received = Counter("grpc_server_msg_received_total",
                                "Total number of RPC stream messages received on the server.",
                                _LABELS, registry=registry)
        self.sent = Counter("grpc_server_msg_sent_total",
                            "Total number of gRPC stream messages sent by the server.",
                            _LABELS, registry=registry)


def go_code_name(code: grpc.StatusCode) -> str:
    """The grpc_code label as go-grpc-prometheus writes it (Go's codes.Code
    names: "OK", "InvalidArgument", ...), so dashboards and alerts written for
    Go services work unchanged."""
    return "OK" if code is grpc.StatusCode.OK else "".join(w.capitalize() for w in code.name.split("_"))


class MetricsInterceptor(MethodInterceptor):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.metrics = ServerMetrics(registry)

    def wrap_method(self, full_method, handler):
        m = self.metrics
        service, method = split_method(full_method)
        labels = (rpc_type(handler), service, method)
        # Children resolved once per method: labels() hashes and locks per call.
        received, sent = m.received.labels(*labels), m.sent.labels(*labels)
        started, handling = m.started.labels(*labels), m.handling.labels(*labels)
        handled: dict[grpc.StatusCode, Any] = {}

        def finish(ctx: CallContext, start: float, raised) -> None:
            code = ctx.final_code(raised)
            child = handled.get(code)
            if child is None:
                child = handled[code] = m.handled.labels(*labels, go_code_name(code))
            child.inc()
            handling.observe(time.perf_counter() - start)

        def wrap(behavior, streaming):
            request_streaming = handler.request_streaming

            def begin(request, context):
                started.inc()
                if request_streaming:
                    request = iterate(request, lambda _: received.inc())
                else:
                    received.inc()
                return request, CallContext.of(context), time.perf_counter()

            if not streaming:
                def unary(request, context):
                    request, ctx, start = begin(request, context)
                    raised = None
                    try:
                        response = behavior(request, ctx)
                        sent.inc()
                        return response
                    except BaseException as exc:
                        raised = exc
                        raise
                    finally:
                        finish(ctx, start, raised)
                return unary

            def stream(request, context):
                request, ctx, start = begin(request, context)
                raised = None
                try:
                    for item in behavior(request, ctx):
                        sent.inc()
                        yield item
                except BaseException as exc:
                    raised = exc
                    raise
                finally:
                    finish(ctx, start, raised)
            return stream

        return wrap_handler(handler, wrap)


def start_metrics_http(port: int, registry: CollectorRegistry, host: str = "0.0.0.0"):
    """Serve /metrics for `registry`; returns the HTTP server (`.server_port`,
    `.shutdown()`)."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
