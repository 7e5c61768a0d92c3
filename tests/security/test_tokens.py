"""Bearer tokens through a real service process: stored hashed, expiry
honoured, rotation by rewriting the file without a restart, and a broken
rewrite does not lock everybody out."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import grpc
import pytest
import yaml

from kequn.rules.v1 import rules_pb2, rules_pb2_grpc
from services.common.auth import _write_private, bearer_metadata, hash_token
from tests.security.conftest import AVAILABLE, start_suite

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def one(tmp_path_factory):
    if not AVAILABLE:
        pytest.skip("no service has a __main__ yet")
    service = "scoring" if "scoring" in AVAILABLE else AVAILABLE[0]
    suite = start_suite(tmp_path_factory.mktemp("tokens"), services=[service])
    yield suite, service
    suite.close()


def _write(path, entries):
    _write_private(path, yaml.safe_dump({"tokens": [
        {"name": name, "roles": ["operations"], "sha256": hash_token(tok), "expires_at": exp}
        for name, tok, exp in entries]}))


def _code(suite, service, token):
    stub = rules_pb2_grpc.RuleStoreServiceStub(suite.channel(service, None))
    try:
        stub.ListRulesets(rules_pb2.ListRulesetsRequest(), metadata=bearer_metadata(token), timeout=5)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_tokens_file_holds_no_plaintext(one):
    suite, _ = one
    text = suite.tokens.path.read_text()
    assert all(tok not in text for tok in suite.tokens.values())
    assert oct(suite.tokens.path.stat().st_mode & 0o777) == "0o600"


def test_expiry_and_rotation_without_restart(one):
    suite, service = one
    pid = suite.processes[service].pid
    now = datetime.now(timezone.utc)
    old, new, expired = "old-token-" + "a" * 30, "new-token-" + "b" * 30, "expired-" + "c" * 30
    _write(suite.tokens.path, [("ops-old", old, None), ("ops-expired", expired, (now - timedelta(seconds=1)).isoformat())])
    assert _code(suite, service, old) == grpc.StatusCode.OK
    assert _code(suite, service, expired) == grpc.StatusCode.UNAUTHENTICATED

    _write(suite.tokens.path, [("ops-new", new, (now + timedelta(hours=1)).isoformat())])  # rotate
    assert _code(suite, service, new) == grpc.StatusCode.OK
    assert _code(suite, service, old) == grpc.StatusCode.UNAUTHENTICATED

    suite.tokens.path.write_text("tokens: [ {name: half-writ")  # a broken rewrite keeps the previous tokens
    assert _code(suite, service, new) == grpc.StatusCode.OK
    assert suite.processes[service].pid == pid and suite.processes[service].poll() is None
