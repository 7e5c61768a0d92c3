"""retry_on_conflict policy, log formatting, masking, testing helpers."""

import json
import logging
import sqlite3

import pytest
from sqlalchemy import exc as sa_exc

from services.common.db import is_conflict, normalize_url, retry_on_conflict
from services.common.logging import JsonFormatter, mask_customer_id
from services.common.testing import free_port, wait_for_port


class _Conflict(Exception):
    sqlstate = "40001"


def test_retry_reruns_until_success():
    calls, sleeps = [], []

    def fn():
        calls.append(1)
        if len(calls) < 3:
            raise sa_exc.OperationalError("UPDATE", {}, _Conflict())
        return "done"

    assert retry_on_conflict(fn, attempts=5, sleep=sleeps.append) == "done"
    assert len(calls) == 3 and len(sleeps) == 2
    assert all(0 <= s <= 1.0 for s in sleeps)


def test_retry_gives_up_after_attempts():
    calls = []

    def fn():
        calls.append(1)
        raise sa_exc.OperationalError("UPDATE", {}, sqlite3.OperationalError("database is locked"))

    with pytest.raises(sa_exc.OperationalError):
        retry_on_conflict(fn, attempts=4, sleep=lambda s: None)
    assert len(calls) == 4


def test_retry_does_not_rerun_other_errors():
    calls = []

    def fn():
        calls.append(1)
        raise ValueError("business")

    with pytest.raises(ValueError):
        retry_on_conflict(fn, sleep=lambda s: None)
    assert len(calls) == 1
    assert not is_conflict(sa_exc.OperationalError("x", {}, Exception("connection refused")))


def test_normalize_url():
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"


@pytest.mark.parametrize("raw, masked", [
    ("6222020200112233", "****2233"), ("12345", "****2345"), ("1234", "****"), ("", ""), (None, ""),
])
def test_mask_customer_id(raw, masked):
    assert mask_customer_id(raw) == masked


def test_json_formatter_emits_one_json_object_per_line():
    rec = logging.LogRecord("kequn.rpc", logging.INFO, __file__, 1, "rpc %s", ("X",), None)
    rec.fields = {"code": "OK", "duration_ms": 1.5}
    line = JsonFormatter("tiering").format(rec)
    out = json.loads(line)
    assert "\n" not in line
    assert out["msg"] == "rpc X" and out["service"] == "tiering" and out["code"] == "OK"


def test_free_port_and_wait_for_port():
    import socket

    port = free_port()
    with pytest.raises(TimeoutError):
        wait_for_port("127.0.0.1", port, timeout=0.2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        wait_for_port("127.0.0.1", port, timeout=2)
