"""OpenTelemetry tracing: off by default, configured by the standard OTEL_*
environment variables.

- `configure_from_env(service)` (called by each composition root) installs a
  TracerProvider only when OTEL_TRACES_EXPORTER names an exporter (`otlp`:
  OTLP/gRPC to OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT; `console`). Unset or
  `none` (or OTEL_SDK_DISABLED=true): no provider, and the interceptors below
  are not installed at all, so an RPC pays nothing.
- `ServerTracingInterceptor` (outermost on every server) continues the
  caller's W3C trace context from the gRPC metadata in a SERVER span;
  `ClientTracingInterceptor` (on the suite's own channels, services.common.
  client.dial) opens a CLIENT span and sends its context along. The span is
  current while the handler runs, so logs carry its ids
  (services.common.logging).
- The tiering feed: each stored TierChange keeps the `traceparent` of the
  evaluation that produced it; the assignment follower's span for a batch of
  changes *links* to those contexts (a batch has many origins, so links, not
  a parent — as OpenTelemetry's messaging conventions do for batches).

Our own interceptors rather than opentelemetry-instrumentation-grpc: they
share the CallContext the other layers use (final status codes of aborts and
mapped errors), and "off" means not installed rather than a no-op span per call.
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Mapping

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.common.rpc import CallContext, split_method, wrap_handler

log = logging.getLogger(__name__)
TRACER_NAME = "kequn"
_W3C = TraceContextTextMapPropagator()
_tracer: trace.Tracer | None = None
UNTRACED_PREFIXES = ("/grpc.health.", "/grpc.reflection.")
_provider = None

# OpenTelemetry's gRPC conventions: on the server these codes mean the server failed.
_SERVER_ERRORS = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED,
                            grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL,
                            grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS})


def enabled() -> bool:
    return _tracer is not None


def install(provider) -> None:
    """Trace with `provider` (tests pass one with an in-memory exporter)."""
    global _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer(TRACER_NAME)


def uninstall() -> None:
    global _tracer, _provider
    _tracer = _provider = None


def configure_from_env(service: str, env: Mapping[str, str] = os.environ) -> bool:
    """Install a provider exporting as OTEL_TRACES_EXPORTER says; False when off."""
    names = [n.strip() for n in env.get("OTEL_TRACES_EXPORTER", "none").lower().split(",") if n.strip()]
    names = [n for n in names if n != "none"]
    if not names or env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    attributes = {"service.namespace": "kequn"}
    if not env.get("OTEL_SERVICE_NAME"):  # the standard variable wins when set
        attributes["service.name"] = f"kequn-{service}"
    provider = TracerProvider(resource=Resource.create(attributes))  # sampler: OTEL_TRACES_SAMPLER
    for name in names:
        if name == "otlp":
            protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
            if protocol != "grpc":
                raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: kequn ships the OTLP/gRPC exporter only")
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()  # endpoint, headers, TLS: OTEL_EXPORTER_OTLP_*
        elif name == "console":
            exporter = ConsoleSpanExporter()
        else:
            raise ValueError(f"OTEL_TRACES_EXPORTER={name!r}: use otlp, console or none")
        provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_* tune it
    trace.set_tracer_provider(provider)
    install(provider)
    log.info("tracing on: exporters %s", ",".join(names))
    return True


def server_interceptors() -> list[grpc.ServerInterceptor]:
    return [ServerTracingInterceptor()] if enabled() else []


def client_interceptors() -> list:
    return [ClientTracingInterceptor()] if enabled() else []


def current_traceparent() -> str:
    """The W3C traceparent of the current span, "" when tracing is off or no span."""
    if _tracer is None:
        return ""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier.get("traceparent", "")


def link_to(traceparent: str) -> Link | None:
    """A span link to the context a stored `traceparent` names (None if invalid)."""
    if not traceparent:
        return None
    span_context = trace.get_current_span(_W3C.extract({"traceparent": traceparent})).get_span_context()
    return Link(span_context) if span_context.is_valid else None


def start_span(name: str, *, links=(), attributes=None, kind: SpanKind = SpanKind.INTERNAL):
    """A span (a context manager) when tracing is on, else a no-op one."""
    tracer = _tracer or trace.NoOpTracer()
    return tracer.start_as_current_span(name, kind=kind, links=[link for link in links if link],
                                        attributes=attributes)


class _CallDetails(
    collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials",
                                            "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    pass


def _rpc_attributes(method: str) -> dict[str, str]:
    service, name = split_method(method)
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


def _end(span, code: grpc.StatusCode, error_codes) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in error_codes:
        span.set_status(Status(StatusCode.ERROR, code.name))
    span.end()


class ServerTracingInterceptor(grpc.ServerInterceptor):
    """A SERVER span per RPC, child of the caller's context when it sent one."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        # Probes and reflection every few seconds per pod would drown the traces.
        if handler is None or _tracer is None or method.startswith(UNTRACED_PREFIXES):
            return handler
        name, attributes = method.lstrip("/"), _rpc_attributes(method)

        def begin(context):
            ctx = CallContext.of(context)
            carrier = {k: v for k, v in (ctx.invocation_metadata() or ()) if isinstance(v, str)}
            span = _tracer.start_span(name, context=propagate.extract(carrier), kind=SpanKind.SERVER,
                                      attributes=attributes)
            return ctx, span, trace.set_span_in_context(span)

        def wrap(behavior, streaming):
            if not streaming:
                def unary(request, context):
                    ctx, span, span_ctx = begin(context)
                    token = otel_context.attach(span_ctx)
                    raised = None
                    try:
                        return behavior(request, ctx)
                    except BaseException as exc:
                        raised = exc
                        raise
                    finally:
                        _end(span, ctx.final_code(raised), _SERVER_ERRORS)
                        otel_context.detach(token)
                return unary

            def stream(request, context):
                # Current only while the handler runs (each step), never across
                # the yield: the consumer of a stream may be another thread.
                ctx, span, span_ctx = begin(context)
                responses = iter(behavior(request, ctx))
                raised = None
                try:
                    while True:
                        token = otel_context.attach(span_ctx)
                        try:
                            item = next(responses)
                        except StopIteration:
                            return
                        finally:
                            otel_context.detach(token)
                        yield item
                except BaseException as exc:
                    raised = exc
                    raise
                finally:
                    _end(span, ctx.final_code(raised), _SERVER_ERRORS)
            return stream

        return wrap_handler(handler, wrap)


class ClientTracingInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                               grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """A CLIENT span per unary call; every call carries the current context."""

    @staticmethod
    def _with_context(details, span_ctx=None):
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=span_ctx)
        if not carrier:
            return details
        metadata = [(k, v) for k, v in (details.metadata or ()) if k not in carrier] + list(carrier.items())
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            getattr(details, "wait_for_ready", None), getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation, details, request):
        if _tracer is None:
            return continuation(details, request)
        span = _tracer.start_span(details.method.lstrip("/"), kind=SpanKind.CLIENT,
                                  attributes=_rpc_attributes(details.method))
        try:
            call = continuation(self._with_context(details, trace.set_span_in_context(span)), request)
        except BaseException:
            _end(span, grpc.StatusCode.UNKNOWN, ())
            raise
        call.add_done_callback(lambda done: _end(span, done.code() or grpc.StatusCode.UNKNOWN,
                                                 set(grpc.StatusCode) - {grpc.StatusCode.OK}))
        return call

    # Streams (the tiering feed, batches) may last hours: no span, but the
    # caller's context goes along.
    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_context(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._with_context(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._with_context(details), request_iterator)
