"""mTLS through a real service process with real certificates: a client
without a (trusted) certificate never reaches an RPC; with one, the caller
is the principal its certificate names, mapped to roles by the tokens file."""
from __future__ import annotations

import subprocess
import time

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kequn.rules.v1 import rules_pb2, rules_pb2_grpc
from services.common.auth import bearer_metadata
from services.common.client import dial
from services.common.testing import dev_tokens, free_port, start_service_process
from services.common.tls import TlsFiles, client_credentials
from tests.security.certs import CertificateAuthority
from tests.security.conftest import AVAILABLE

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tls_service(tmp_path_factory):
    if not AVAILABLE:
        pytest.skip("no service has a __main__ yet")
    service = "scoring" if "scoring" in AVAILABLE else AVAILABLE[0]
    tmp = tmp_path_factory.mktemp("mtls")
    ca, rogue = CertificateAuthority(tmp / "ca"), CertificateAuthority(tmp / "rogue", "rogue CA")
    server = ca.issue("server", "kequn-server", dns=("localhost",), ips=("127.0.0.1",), server=True)
    certs = {
        "rules_bot": ca.issue("rules-bot", "rules-bot.bank.test"),           # principals: rule_admin
        "mobile": ca.issue("mobile", "mobile-gw", dns=("mobile-gw.bank.test",)),  # SAN -> mobile_banking
        "stranger": ca.issue("stranger", "nobody.bank.test"),                 # trusted CA, unknown name
        "rogue": rogue.issue("rogue", "rules-bot.bank.test"),                 # right name, wrong CA
    }
    tokens = dev_tokens(tmp)
    doc = yaml.safe_load(tokens.path.read_text())
    doc["principals"] = [
        {"name": "rules-bot", "subject": "rules-bot.bank.test", "roles": ["rule_admin"]},
        {"name": "mobile-gateway", "subject": "mobile-gw.bank.test", "roles": ["mobile_banking"]},
    ]
    tokens.path.write_text(yaml.safe_dump(doc))
    port = free_port()
    prefix = f"KEQUN_{service.upper()}_"
    env = {"KEQUN_DATA_DIR": str(tmp), "KEQUN_TOKENS_FILE": str(tokens.path),
           prefix + "GRPC_PORT": str(port), prefix + "METRICS_PORT": str(free_port()),
           prefix + "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite'}",
           "KEQUN_TLS_CERT": str(server.cert), "KEQUN_TLS_KEY": str(server.key),
           "KEQUN_TLS_CLIENT_CA": str(ca.path)}
    log = open(tmp / "service.log", "ab")
    proc = start_service_process(f"services.{service}", env, stdout=log, stderr=log)
    target = f"127.0.0.1:{port}"
    ctx = {"proc": proc, "target": target, "ca": ca, "certs": certs, "tokens": tokens, "service": service}
    try:
        _wait_serving(ctx, tmp / "service.log")
        yield ctx
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _channel(ctx, who: str | None, token: str | None = None) -> grpc.Channel:
    if who is None:  # TLS, trusts the server, shows no certificate
        return dial(ctx["target"], token, tls=client_credentials(ctx["ca"].path))
    c = ctx["certs"][who]
    return dial(ctx["target"], token, tls=TlsFiles(c.cert, c.key, ctx["ca"].path))


def _wait_serving(ctx, log_path, timeout=90.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with _channel(ctx, "rules_bot") as ch:
                if health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2).status == \
                        health_pb2.HealthCheckResponse.SERVING:
                    return
        except grpc.RpcError:
            pass
        if ctx["proc"].poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("TLS service did not start:\n" + log_path.read_text(errors="replace")[-3000:])
        time.sleep(0.3)


def _list(channel, **kw):
    return rules_pb2_grpc.RuleStoreServiceStub(channel).ListRulesets(rules_pb2.ListRulesetsRequest(), timeout=5, **kw)


def _code(fn):
    try:
        fn()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_client_without_certificate_is_refused_even_with_a_valid_token(tls_service):
    token = tls_service["tokens"]["admin"]
    with _channel(tls_service, None, token) as ch:
        assert _code(lambda: _list(ch)) == grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(tls_service["target"]) as plain:  # plaintext on a TLS port
        assert _code(lambda: _list(plain, metadata=bearer_metadata(token))) == grpc.StatusCode.UNAVAILABLE


def test_certificate_from_another_ca_is_refused(tls_service):
    with _channel(tls_service, "rogue") as ch:
        assert _code(lambda: _list(ch)) == grpc.StatusCode.UNAVAILABLE


def test_trusted_certificate_naming_no_principal_is_unauthenticated(tls_service):
    with _channel(tls_service, "stranger") as ch:
        assert _code(lambda: _list(ch)) == grpc.StatusCode.UNAUTHENTICATED


def test_principal_and_roles_come_from_the_certificate(tls_service):
    with _channel(tls_service, "rules_bot") as ch:
        stub = rules_pb2_grpc.RuleStoreServiceStub(ch)
        name = _list(ch).rulesets[0].name
        active = stub.GetRuleset(rules_pb2.GetRulesetRequest(name=name), timeout=5).ruleset_version
        created = stub.CreateRulesetVersion(rules_pb2.CreateRulesetVersionRequest(
            name=name, document=active.document, comment="mtls"), timeout=30).ruleset_version
        assert created.created_by == "rules-bot"  # the CN, mapped through `principals:`
    with _channel(tls_service, "mobile") as ch:  # matched by its SAN; mobile_banking may not list rulesets
        assert _code(lambda: _list(ch)) == grpc.StatusCode.PERMISSION_DENIED


def test_a_bearer_token_on_top_of_the_certificate_decides_the_principal(tls_service):
    tokens = tls_service["tokens"]
    with _channel(tls_service, "mobile", tokens["operations"]) as ch:
        assert _code(lambda: _list(ch)) == grpc.StatusCode.OK
    with _channel(tls_service, "rules_bot", "forged-token") as ch:  # a bad token never falls back to the cert
        assert _code(lambda: _list(ch)) == grpc.StatusCode.UNAUTHENTICATED
