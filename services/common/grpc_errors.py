"""Exceptions -> gRPC status, as one server interceptor.

Callers get a code they can act on and a message that is safe to show:
KequnError keeps its message (with google.rpc.BadRequest details for
InvalidArgument); database trouble becomes UNAVAILABLE or ABORTED; anything
else becomes INTERNAL with an error id that points at the logged traceback.
Every status carries google.rpc.ErrorInfo (domain kequn.bank, a stable
reason, metadata) so programs never parse the message; retryable ones also
carry google.rpc.RetryInfo.
"""

from __future__ import annotations

import logging
import uuid

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.common import errors
from services.common.db import is_conflict, is_unavailable
from services.common.rpc import CallContext, MethodInterceptor, wrap_handler

log = logging.getLogger(__name__)

# The last line of defence against echoing what a caller sent: the edge already refuses
# oversized fields (services/common/bounds.py); whatever a message still quotes is cut here.
MAX_MESSAGE = 300
MAX_DETAIL = 200
MAX_VIOLATIONS = 50
MAX_METADATA_VALUE = 128


MAX_ECHO = 64  # characters of one value the caller sent that an answer may quote


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def sent_strings(message, limit: int = 50) -> list[str]:
    """The strings longer than MAX_ECHO in a request message (nested ones too),
    longest first: what `unquote` keeps out of its error."""
    out: list[str] = []

    def walk(msg, depth):
        for field, value in msg.ListFields():
            if len(out) >= limit or depth > 8:
                return
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                items = [v for kv in value.items() for v in kv]
            elif field.is_repeated:
                items = list(value)
            else:
                items = [value]
            for item in items:
                if isinstance(item, str):
                    if len(item) > MAX_ECHO:
                        out.append(item)
                elif hasattr(item, "ListFields"):
                    walk(item, depth + 1)

    if hasattr(message, "ListFields"):
        walk(message, 0)
    return sorted(out, key=len, reverse=True)


def unquote(text: str, sent: list[str]) -> str:
    """`text` with every quote of more than MAX_ECHO characters of a `sent` value cut to that prefix."""
    for value in sent:
        head = value[:MAX_ECHO + 1]
        at = text.find(head)
        while at != -1:
            end, k = at + len(head), len(head)
            while end < len(text) and k < len(value) and text[end] == value[k]:
                end, k = end + 1, k + 1
            text = text[:at] + value[:MAX_ECHO] + "…" + text[end:]
            at = text.find(head, at + MAX_ECHO + 1)
    return text

_CODES: dict[type[errors.KequnError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def _status(code: grpc.StatusCode, message: str, details=()) -> status_pb2.Status:
    st = status_pb2.Status(code=code.value[0], message=clip(message, MAX_MESSAGE))
    for d in details:
        st.details.add().Pack(d)
    return st


def error_details(reason: str, metadata: dict[str, str] | None = None,
                  retry_after: float | None = None) -> list:
    """ErrorInfo (and RetryInfo when the caller should retry after a pause)."""
    metadata = {clip(k, MAX_METADATA_VALUE): clip(v, MAX_METADATA_VALUE) for k, v in (metadata or {}).items()}
    details: list = [error_details_pb2.ErrorInfo(reason=reason, domain=errors.ERROR_DOMAIN, metadata=metadata)]
    if retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(retry_after * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    return details


def status_proto(code: grpc.StatusCode, message: str, reason: str,
                 metadata: dict[str, str] | None = None, retry_after: float | None = None,
                 extra=()) -> status_pb2.Status:
    # Extra details (BadRequest) first: clients written before ErrorInfo read details[0].
    return _status(code, message, (*extra, *error_details(reason, metadata, retry_after)))


def abort_status(context: grpc.ServicerContext, code: grpc.StatusCode, message: str, reason: str,
                 metadata: dict[str, str] | None = None, retry_after: float | None = None) -> None:
    """context.abort with ErrorInfo: for layers that refuse without an exception."""
    context.abort_with_status(rpc_status.to_status(status_proto(code, message, reason, metadata, retry_after)))


def to_status_proto(exc: BaseException, sent: list[str] = ()) -> status_pb2.Status:
    """The google.rpc.Status a caller should see for `exc` (also used for
    per-item errors inside streams, e.g. TierDecision.error)."""
    for cls in type(exc).__mro__:
        if cls in _CODES:
            extra = ()
            if isinstance(exc, errors.InvalidArgument) and exc.violations:
                extra = (error_details_pb2.BadRequest(field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=clip(unquote(f, sent), MAX_DETAIL),
                                                                description=clip(unquote(d, sent), MAX_DETAIL))
                    for f, d in exc.violations[:MAX_VIOLATIONS]
                ]),)
            metadata = {k: unquote(v, sent) for k, v in exc.metadata.items()} if sent else exc.metadata
            return status_proto(_CODES[cls], unquote(exc.message, sent), exc.reason, metadata, exc.retry_after,
                                extra)
    if is_conflict(exc):
        return status_proto(grpc.StatusCode.ABORTED, "aborted: concurrent modification, retry",
                            "CONFLICT", retry_after=errors.Aborted.default_retry_after)
    if is_unavailable(exc):
        log.warning("database unavailable: %s", exc)
        return status_proto(grpc.StatusCode.UNAVAILABLE, "database unavailable", "DEPENDENCY_UNAVAILABLE",
                            {"dependency": "database"}, errors.Unavailable.default_retry_after)
    if isinstance(exc, grpc.RpcError) and exc.code() in (  # a call to another service failed
            grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        log.warning("dependency unavailable: %s %s", exc.code(), exc.details())
        return status_proto(grpc.StatusCode.UNAVAILABLE, "dependency unavailable", "DEPENDENCY_UNAVAILABLE",
                            retry_after=errors.Unavailable.default_retry_after)
    error_id = uuid.uuid4().hex[:16]
    log.error("unhandled error %s", error_id, exc_info=exc)
    return status_proto(grpc.StatusCode.INTERNAL, f"internal error (error id {error_id})", "INTERNAL",
                        {"error_id": error_id})


def to_grpc_status(exc: BaseException) -> grpc.Status:
    return rpc_status.to_status(to_status_proto(exc))


def abort_with(context: grpc.ServicerContext, exc: BaseException, request=None) -> None:
    """Abort the RPC with the status for `exc`, quoting at most MAX_ECHO
    characters of any string of `request`. Always raises."""
    sent = sent_strings(request) if request is not None else ()
    context.abort_with_status(rpc_status.to_status(to_status_proto(exc, sent)))


def code_name(status: status_pb2.Status) -> str:
    return code_pb2.Code.Name(status.code)


class ErrorInterceptor(MethodInterceptor):
    """Innermost layer: no exception leaves a handler unmapped."""

    def wrap_method(self, method, handler):
        return wrap_handler(handler, _guard)


def _guard(behavior, streaming: bool):
    if not streaming:
        def unary(request, context):
            ctx = CallContext.of(context)
            try:
                return behavior(request, ctx)
            except Exception as exc:
                if ctx.aborted:  # context.abort() already chose the status
                    raise
                abort_with(ctx, exc, request)
        return unary

    def stream(request, context):
        ctx = CallContext.of(context)
        try:
            yield from behavior(request, ctx)
        except Exception as exc:
            if ctx.aborted:
                raise
            abort_with(ctx, exc, request)
    return stream
