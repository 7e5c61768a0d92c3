"""Exception -> gRPC status mapping (without a server; see the integration
server test for the same over a real channel)."""

import logging
import sqlite3

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import exc as sa_exc

from services.common import errors
from services.common.grpc_errors import to_grpc_status, to_status_proto


@pytest.mark.parametrize("exc, code", [
    (errors.InvalidArgument("bad"), code_pb2.INVALID_ARGUMENT),
    (errors.NotFound("no customer C1"), code_pb2.NOT_FOUND),
    (errors.AlreadyExists(), code_pb2.ALREADY_EXISTS),
    (errors.FailedPrecondition("book locked"), code_pb2.FAILED_PRECONDITION),
    (errors.ResourceExhausted("out of stock"), code_pb2.RESOURCE_EXHAUSTED),
    (errors.Aborted(), code_pb2.ABORTED),
    (errors.PermissionDenied("own request"), code_pb2.PERMISSION_DENIED),
    (errors.Unauthenticated(), code_pb2.UNAUTHENTICATED),
    (errors.Unavailable("tiering down"), code_pb2.UNAVAILABLE),
    (errors.DeadlineExceeded(), code_pb2.DEADLINE_EXCEEDED),
])
def test_kequn_errors_keep_code_and_message(exc, code):
    st = to_status_proto(exc)
    assert st.code == code
    assert st.message == exc.message


def test_subclass_of_a_kequn_error_maps_like_its_parent():
    class BookLocked(errors.FailedPrecondition):
        pass

    assert to_status_proto(BookLocked("locked until 2025-01-31")).code == code_pb2.FAILED_PRECONDITION


def test_invalid_argument_carries_bad_request_field_violations():
    exc = errors.InvalidArgument(violations=[("customer.customer_id", "required"),
                                             ("page_size", "must be 1..1000")])
    status = to_grpc_status(exc)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "customer.customer_id: required" in status.details

    # Decode as a client would: from the trailing metadata.
    class _Call:
        def code(self):
            return status.code

        def details(self):
            return status.details

        def trailing_metadata(self):
            return status.trailing_metadata

    decoded = rpc_status.from_call(_Call())
    bad = error_details_pb2.BadRequest()
    assert decoded.details[0].Unpack(bad)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("customer.customer_id", "required"), ("page_size", "must be 1..1000")]


def test_errors_have_a_default_message():
    assert errors.NotFound().message == "not found"
    assert str(errors.InvalidArgument("x", [("a", "b")])) == "x"
    assert errors.InvalidArgument("x", [("a", "b")]).violations == [("a", "b")]


def _dbapi_error(orig, cls=sa_exc.OperationalError):
    return cls("SELECT 1", {}, orig)


class _PgError(Exception):
    def __init__(self, sqlstate):
        super().__init__("could not serialize access")
        self.sqlstate = sqlstate


@pytest.mark.parametrize("sqlstate", ["40001", "40P01"])
def test_serialization_failure_and_deadlock_are_aborted(sqlstate):
    st = to_status_proto(_dbapi_error(_PgError(sqlstate), sa_exc.DBAPIError))
    assert st.code == code_pb2.ABORTED


def test_sqlite_busy_is_aborted():
    st = to_status_proto(_dbapi_error(sqlite3.OperationalError("database is locked")))
    assert st.code == code_pb2.ABORTED


def test_operational_error_is_unavailable_without_leaking_details():
    st = to_status_proto(_dbapi_error(Exception("connection to server at 10.0.0.5 refused")))
    assert st.code == code_pb2.UNAVAILABLE
    assert st.message == "database unavailable"


def test_unexpected_error_is_internal_with_error_id_logged_not_sent(caplog):
    caplog.set_level(logging.ERROR)
    st = to_status_proto(KeyError("secret-customer-42"))
    assert st.code == code_pb2.INTERNAL
    assert "secret" not in st.message
    error_id = st.message.rsplit(" ", 1)[-1].rstrip(")")
    assert len(error_id) == 16
    [record] = [r for r in caplog.records if error_id in r.getMessage()]
    assert record.exc_info and "secret-customer-42" in caplog.text


def test_programming_error_is_internal_not_unavailable():
    st = to_status_proto(_dbapi_error(Exception("syntax error"), sa_exc.ProgrammingError))
    assert st.code == code_pb2.INTERNAL


def _details(status, cls):
    decoded = rpc_status.from_call(type("C", (), {
        "code": lambda self: status.code, "details": lambda self: status.details,
        "trailing_metadata": lambda self: status.trailing_metadata})())
    found = []
    for any_ in decoded.details:
        msg = cls()
        if any_.Unpack(msg):
            found.append(msg)
    return found


def test_every_status_carries_error_info_with_reason_domain_and_metadata():
    exc = errors.ResourceExhausted("gift is out of stock", reason="OUT_OF_STOCK",
                                   metadata={"benefit_id": "GIFT", "on_hand": 0})
    status = to_grpc_status(exc)
    [info] = _details(status, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("OUT_OF_STOCK", "kequn.bank")
    assert dict(info.metadata) == {"benefit_id": "GIFT", "on_hand": "0"}
    assert _details(status, error_details_pb2.RetryInfo) == []  # sold out: do not retry


def test_overload_and_unavailability_carry_retry_info():
    for exc, code, reason in ((errors.Overloaded(), grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED"),
                              (errors.Unavailable(), grpc.StatusCode.UNAVAILABLE, "DEPENDENCY_UNAVAILABLE")):
        status = to_grpc_status(exc)
        assert status.code == code
        [info] = _details(status, error_details_pb2.ErrorInfo)
        assert info.reason == reason
        [retry] = _details(status, error_details_pb2.RetryInfo)
        assert retry.retry_delay.ToNanoseconds() > 0


def test_unexpected_errors_are_internal_with_an_error_id_reason():
    status = to_grpc_status(RuntimeError("boom"))
    [info] = _details(status, error_details_pb2.ErrorInfo)
    assert status.code == grpc.StatusCode.INTERNAL and info.reason == "INTERNAL"
    assert info.metadata["error_id"] in status.details and "boom" not in status.details
