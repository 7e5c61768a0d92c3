"""Structured logs: JSON lines on stderr, one line per RPC.

(Named after what it does; inside this package `import logging` still means
the standard library because imports are absolute.)
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
import uuid
from datetime import datetime, timezone

import grpc
from opentelemetry import trace

from services.common.rpc import CallContext, MethodInterceptor, metadata_value, rpc_type, split_method, wrap_handler

REQUEST_ID_HEADER = "x-request-id"
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("kequn_request_id", default=None)
rpc_log = logging.getLogger("kequn.rpc")


def current_request_id() -> str | None:
    """The x-request-id of the RPC being served (propagated on outgoing calls)."""
    return _request_id.get()


def new_request_id() -> str:
    return uuid.uuid4().hex


def mask_customer_id(customer_id: str | None) -> str:
    """Customer ids are personal data: logs keep only the last 4 characters."""
    if not customer_id:
        return ""
    s = str(customer_id)
    return "****" + s[-4:] if len(s) > 4 else "****"


# Structured log fields that hold customer ids: masked whoever logs them.
CUSTOMER_ID_FIELDS = frozenset({"customer_id", "customer_ids"})


def mask_customer_fields(fields: dict) -> dict:
    """`fields` with every customer id field masked (lists masked item by item)."""
    if not CUSTOMER_ID_FIELDS.intersection(fields):
        return fields
    out = dict(fields)
    for key in CUSTOMER_ID_FIELDS.intersection(fields):
        value = out[key]
        out[key] = [mask_customer_id(v) for v in value] if isinstance(value, (list, tuple, set)) \
            else mask_customer_id(value)
    return out


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str | None = None) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self.service:
            out["service"] = self.service
        rid = current_request_id()
        if rid:
            out["request_id"] = rid
        span = trace.get_current_span().get_span_context()
        if span.is_valid:  # only while tracing is on (services.common.tracing)
            out["trace_id"], out["span_id"] = f"{span.trace_id:032x}", f"{span.span_id:016x}"
        out.update(mask_customer_fields(getattr(record, "fields", None) or {}))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO", service: str | None = None) -> None:
    """Root logger -> JSON on stderr. Call once, from a composition root."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class LoggingInterceptor(MethodInterceptor):
    """Outermost layer: sets the request id, logs one line when the RPC ends."""

    def __init__(self, service: str) -> None:
        self.service = service

    def wrap_method(self, method, handler):
        kind = rpc_type(handler)

        def wrap(behavior, streaming):
            def begin(context):
                ctx = CallContext.of(context)
                rid = metadata_value(ctx, REQUEST_ID_HEADER) or new_request_id()
                ctx.fields["request_id"] = rid
                return ctx, _request_id.set(rid), time.perf_counter()

            def end(ctx, token, start, raised):
                self._log(method, kind, ctx, start, raised)
                try:
                    _request_id.reset(token)
                except ValueError:  # a cancelled stream is closed from another context
                    pass

            if not streaming:
                def unary(request, context):
                    ctx, token, start = begin(context)
                    raised = None
                    try:
                        return behavior(request, ctx)
                    except BaseException as exc:
                        raised = exc
                        raise
                    finally:
                        end(ctx, token, start, raised)
                return unary

            def stream(request, context):
                ctx, token, start = begin(context)
                raised = None
                try:
                    yield from behavior(request, ctx)
                except BaseException as exc:
                    raised = exc
                    raise
                finally:
                    end(ctx, token, start, raised)
            return stream

        return wrap_handler(handler, wrap)

    def _log(self, method, kind, ctx: CallContext, start, raised) -> None:
        code = ctx.final_code(raised)
        service, name = split_method(method)
        fields = {
            "service": self.service,
            "grpc_service": service,
            "method": name,
            "grpc_type": kind,
            "code": code.name,
            "duration_ms": round((time.perf_counter() - start) * 1000, 3),
            "principal": ctx.fields.get("principal"),
            "request_id": ctx.fields.get("request_id"),
        }
        if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
            level = logging.ERROR
        elif service == "grpc.health.v1.Health":
            level = logging.DEBUG  # probes every few seconds would drown the log
        else:
            level = logging.INFO
        rpc_log.log(level, "rpc %s %s", method, code.name, extra={"fields": fields})
