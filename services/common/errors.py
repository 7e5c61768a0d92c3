"""Errors that domain and service code raise.

Pure Python on purpose: domain code must not import grpc. The mapping to gRPC
status codes lives in grpc_errors.py.
"""

from __future__ import annotations

from collections.abc import Iterable


class KequnError(Exception):
    """Base of every error a caller may see; `message` is safe to send."""

    default_message = "error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)


class InvalidArgument(KequnError):
    """Bad input. `violations` are (field path, description) pairs."""

    default_message = "invalid argument"

    def __init__(
        self,
        message: str | None = None,
        violations: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.violations: list[tuple[str, str]] = [(str(f), str(d)) for f, d in violations]
        if not message and self.violations:
            message = "invalid argument: " + "; ".join(f"{f}: {d}" for f, d in self.violations)
        super().__init__(message)


class NotFound(KequnError):
    default_message = "not found"


class AlreadyExists(KequnError):
    default_message = "already exists"


class FailedPrecondition(KequnError):
    """A business rule refuses the request (book locked, not eligible, ...)."""

    default_message = "failed precondition"


class ResourceExhausted(KequnError):
    """Out of stock or budget."""

    default_message = "resource exhausted"


class Aborted(KequnError):
    """Lost a concurrency race; the caller may retry."""

    default_message = "aborted: concurrent modification, retry"


class PermissionDenied(KequnError):
    default_message = "permission denied"


class Unauthenticated(KequnError):
    default_message = "unauthenticated"


class Unavailable(KequnError):
    """A dependency (database, another service) is down."""

    default_message = "unavailable"


class DeadlineExceeded(KequnError):
    default_message = "deadline exceeded"
