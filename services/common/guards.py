"""Refuse work nobody is waiting for, and requests nobody can decode.

- A call whose deadline has already passed when its handler starts (it waited
  in a queue, or the client sent an expired deadline) answers
  DEADLINE_EXCEEDED without running the handler.
- Long loops (batches, streams) call `check_deadline()` per item: it raises
  DeadlineExceeded once the caller has gone (deadline passed or cancelled),
  so the work stops instead of running on for nobody.
- A request whose bytes do not decode (e.g. invalid UTF-8 in a string field)
  answers INVALID_ARGUMENT; grpc itself would answer INTERNAL.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator

import grpc

from services.common import errors
from services.common.grpc_errors import abort_status, abort_with
from services.common.rpc import CallContext, MethodInterceptor, reset_quietly, scoped, wrap_handler

_call: contextvars.ContextVar[grpc.ServicerContext | None] = contextvars.ContextVar("kequn_call", default=None)


def call_active(context: grpc.ServicerContext | None = None) -> bool:
    """False once the caller of the RPC being served is gone; True outside RPCs."""
    context = context or _call.get()
    if context is None:
        return True
    if not context.is_active():
        return False
    remaining = context.time_remaining()
    return remaining is None or remaining > 0


def check_deadline(context: grpc.ServicerContext | None = None) -> None:
    """Raise DeadlineExceeded when the caller is gone; cheap enough per loop item."""
    if not call_active(context):
        raise errors.DeadlineExceeded("deadline exceeded or call cancelled: work stopped")


class _Undecodable:
    """Stands in for a request message whose bytes did not parse."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _safe(deserializer):
    if deserializer is None:
        return None

    def deserialize(data: bytes):
        try:
            return deserializer(data)
        except Exception as exc:  # noqa: BLE001 - DecodeError and friends
            return _Undecodable(f"{type(exc).__name__}: {exc}")
    return deserialize


def _refuse(reason: str) -> errors.InvalidArgument:
    return errors.InvalidArgument("request message cannot be decoded (invalid protobuf or UTF-8)",
                                  violations=[("request", reason[:200])])


def _checked_stream(requests: Iterator) -> Iterator:
    for item in requests:
        if isinstance(item, _Undecodable):
            raise _refuse(item.reason)
        yield item


class GuardInterceptor(MethodInterceptor):
    """Sits just outside ErrorInterceptor (see server.py)."""

    def wrap_method(self, method, handler):
        request_streaming = handler.request_streaming

        def admit(request, context):
            ctx = CallContext.of(context)
            remaining = ctx.time_remaining()
            if remaining is not None and remaining <= 0:
                abort_status(ctx, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the work started",
                             "DEADLINE_EXCEEDED")
            if request_streaming:
                request = _checked_stream(request)
            elif isinstance(request, _Undecodable):
                abort_with(ctx, _refuse(request.reason))
            return request, ctx, _call.set(ctx)

        return wrap_handler(handler, scoped(admit, lambda token: reset_quietly(_call, token)),
                            _safe(handler.request_deserializer))
