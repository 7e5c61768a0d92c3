"""Errors that domain and service code raise.

Pure Python on purpose: domain code must not import grpc. The mapping to gRPC
status codes lives in grpc_errors.py.
"""

from __future__ import annotations

from collections.abc import Iterable


# google.rpc.ErrorInfo.domain of every kequn error (CONTRACT.md, second round).
ERROR_DOMAIN = "kequn.bank"


class KequnError(Exception):
    """Base of every error a caller may see; `message` is safe to send.

    `reason` is the stable UPPER_SNAKE google.rpc.ErrorInfo reason a program
    acts on (CONTRACT.md lists them; docs/errors.md says which to retry);
    `metadata` its string key/values (benefit_id, staff_id, limit, ...).
    `retry_after` (seconds) adds google.rpc.RetryInfo.
    """

    default_message = "error"
    default_reason = "ERROR"
    default_retry_after: float | None = None

    def __init__(self, message: str | None = None, *, reason: str | None = None,
                 metadata: dict[str, object] | None = None,
                 retry_after: float | None = None) -> None:
        self.message = message or self.default_message
        self.reason = reason or self.default_reason
        self.metadata = {str(k): str(v) for k, v in (metadata or {}).items()}
        self.retry_after = self.default_retry_after if retry_after is None else retry_after
        super().__init__(self.message)


class InvalidArgument(KequnError):
    """Bad input. `violations` are (field path, description) pairs."""

    default_message = "invalid argument"
    default_reason = "INVALID_INPUT"

    def __init__(
        self,
        message: str | None = None,
        violations: Iterable[tuple[str, str]] = (),
        **kwargs,
    ) -> None:
        self.violations: list[tuple[str, str]] = [(str(f), str(d)) for f, d in violations]
        if not message and self.violations:
            message = "invalid argument: " + "; ".join(f"{f}: {d}" for f, d in self.violations)
        super().__init__(message, **kwargs)


class NotFound(KequnError):
    default_message = "not found"
    default_reason = "NOT_FOUND"


class AlreadyExists(KequnError):
    default_message = "already exists"
    default_reason = "CONFLICT"


class FailedPrecondition(KequnError):
    """A business rule refuses the request (book locked, not eligible, ...)."""

    default_message = "failed precondition"
    default_reason = "FAILED_PRECONDITION"


class ResourceExhausted(KequnError):
    """Out of stock or budget."""

    default_message = "resource exhausted"
    default_reason = "RESOURCE_EXHAUSTED"


class Aborted(KequnError):
    """Lost a concurrency race; the caller may retry."""

    default_message = "aborted: concurrent modification, retry"
    default_reason = "CONFLICT"
    default_retry_after = 0.05


class PermissionDenied(KequnError):
    default_message = "permission denied"
    default_reason = "PERMISSION_DENIED"


class Unauthenticated(KequnError):
    default_message = "unauthenticated"
    default_reason = "UNAUTHENTICATED"


class Unavailable(KequnError):
    """A dependency (database, another service) is down."""

    default_message = "unavailable"
    default_reason = "DEPENDENCY_UNAVAILABLE"
    default_retry_after = 1.0


class DeadlineExceeded(KequnError):
    default_message = "deadline exceeded"
    default_reason = "DEADLINE_EXCEEDED"


class Overloaded(KequnError):
    """The server cannot take the call now (queue full, deadline cannot be met)."""

    default_message = "server overloaded, retry later"
    default_reason = "OVERLOADED"
    default_retry_after = 0.2
