"""Page tokens are signed and bound to their list: only positions this deployment
wrote come back, whatever a caller forges."""
from __future__ import annotations

import base64
import json

import pytest

from services.common import errors, paging


@pytest.fixture(autouse=True)
def key(monkeypatch, tmp_path):
    monkeypatch.setenv("KEQUN_DATA_DIR", str(tmp_path))
    monkeypatch.delenv(paging.KEY_ENV, raising=False)
    return tmp_path


def refused(token, scope="tiering.ListTierChanges", **kw):
    with pytest.raises(errors.InvalidArgument) as caught:
        paging.decode_token(token, scope, **kw)
    assert caught.value.reason == "INVALID_INPUT"
    assert caught.value.violations[0][0] == "page_token"
    return caught.value


def test_round_trip_of_positions():
    for position in (0, 12_345, "C000123", ["2025-03-01T00:00:00+00:00", "c1"]):
        token = paging.encode_token(position, "s")
        assert paging.decode_token(token, "s") == position
    assert paging.decode_token("", "s") is None


def test_a_token_of_another_list_or_other_filters_is_refused():
    token = paging.encode_token(100, paging.scope("assignment.ListChangeRequests", "PENDING", "", ""))
    refused(token, paging.scope("assignment.ListAuditEvents", "", "", "", None, None))
    refused(token, paging.scope("assignment.ListChangeRequests", "APPROVED", "", ""))
    assert paging.decode_token(token, paging.scope("assignment.ListChangeRequests", "PENDING", "", "")) == 100


def test_forged_tampered_and_truncated_tokens_are_refused():
    scope = "tiering.ListTierChanges"
    good = paging.encode_token(7, scope)
    body, mac = good.split(".")
    unsigned = [
        "9" * 21,                                                   # reached SQL as a 21-digit integer
        base64.urlsafe_b64encode(json.dumps(10**21).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps("x").encode()).decode(),  # JSON string / list: INTERNAL before
        base64.urlsafe_b64encode(json.dumps([1, 2]).encode()).decode(),
        "abc", "garbage!", ".", "..", "a.b.c", "\x00", "é.é", "=" * 40,
    ]
    forged_body = base64.urlsafe_b64encode(json.dumps(10**21).encode()).decode().rstrip("=")
    tampered = [f"{forged_body}.{mac}", good[:-1], good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1],
                body + ".", "." + mac, good + "A", good + "." + mac, good[: len(good) // 2], "x" * 600]
    for token in unsigned + tampered:
        exc = refused(token, scope)
        assert token[:20] not in exc.message or len(token[:20]) < 3


def test_positions_of_an_unexpected_type_are_refused_even_when_signed():
    refused(paging.encode_token("7", "s"), "s", expect=int)
    refused(paging.encode_token(True, "s"), "s", expect=int)
    assert paging.decode_token(paging.encode_token(7, "s"), "s", expect=int) == 7


def test_the_key_comes_from_the_environment_and_tokens_of_another_key_are_refused(monkeypatch, key):
    token = paging.encode_token(5, "s")  # the generated development key
    assert (key / paging.KEY_FILE).stat().st_mode & 0o077 == 0
    assert paging.decode_token(token, "s") == 5
    monkeypatch.setenv(paging.KEY_ENV, "a deployment key of enough length")
    refused(token, "s")
    other = paging.encode_token(5, "s")
    assert paging.decode_token(other, "s") == 5
    monkeypatch.setenv(paging.KEY_ENV, "another deployment key, rotated")
    refused(other, "s")


def test_a_short_configured_key_is_a_configuration_error(monkeypatch):
    monkeypatch.setenv(paging.KEY_ENV, "short")
    with pytest.raises(RuntimeError):
        paging.encode_token(1, "s")
