"""The foundation end to end: all four services as real processes on real
ports — health, reflection, auth, a rule publish from the CLI seen by the
running service without restart, and /metrics."""
import os
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from kequn.rules.v1 import rules_pb2, rules_pb2_grpc
from kequn.tiering.v1 import tiering_pb2, tiering_pb2_grpc
from tests.e2e.harness import ORDER, Suite, metric_value
from tests.tier_schemes import with_wealth_floor

pytestmark = pytest.mark.e2e

SERVICE_NAMES = {
    "tiering": "kequn.tiering.v1.TieringService",
    "assignment": "kequn.assignment.v1.AssignmentService",
    "scoring": "kequn.scoring.v1.ScoringService",
    "benefits": "kequn.benefits.v1.BenefitsService",
}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    suite = Suite(tmp_path_factory.mktemp("suite"))
    try:
        suite.start()
        yield suite
    finally:
        suite.close()


@pytest.mark.parametrize("service", ORDER)
def test_health_per_service_name_and_overall(suite, service):
    serving = health_pb2.HealthCheckResponse.SERVING
    assert suite.health(service) == serving
    assert suite.health(service, SERVICE_NAMES[service]) == serving
    assert suite.health(service, "kequn.rules.v1.RuleStoreService") == serving


@pytest.mark.parametrize("service", ORDER)
def test_reflection_lists_the_service_and_its_rule_store(suite, service):
    stub = reflection_pb2_grpc.ServerReflectionStub(grpc.insecure_channel(suite.target(service)))
    answer = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in answer.list_services_response.service}
    assert {SERVICE_NAMES[service], "kequn.rules.v1.RuleStoreService", "grpc.health.v1.Health"} <= names


@pytest.mark.parametrize("service", ORDER)
def test_calls_need_a_token_and_a_role(suite, service):
    request = rules_pb2.ListRulesetsRequest()
    with pytest.raises(grpc.RpcError) as anonymous:
        rules_pb2_grpc.RuleStoreServiceStub(suite.channel(service, None)).ListRulesets(request, timeout=5)
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as wrong_role:
        rules_pb2_grpc.RuleStoreServiceStub(suite.channel(service, "mobile_banking")).ListRulesets(request, timeout=5)
    assert wrong_role.value.code() == grpc.StatusCode.PERMISSION_DENIED
    listed = rules_pb2_grpc.RuleStoreServiceStub(suite.channel(service, "rule_admin")).ListRulesets(request, timeout=5)
    assert listed.rulesets and all(r.active_version >= 1 for r in listed.rulesets)
    assert all(r.name.startswith(service + ".") for r in listed.rulesets)


def _kequn(suite, *args, principal="rule_admin"):
    env = {**os.environ, **suite.env, "KEQUN_TOKEN": suite.tokens[principal]}
    return subprocess.run([sys.executable, "-m", "services.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def _evaluate(suite, aum_fen):
    stub = tiering_pb2_grpc.TieringServiceStub(suite.channel("tiering", "core_banking"))
    return stub.EvaluateCustomer(tiering_pb2.EvaluateCustomerRequest(
        dry_run=True, customer=tiering_pb2.CustomerSnapshot(
            customer_id="E2E-1", as_of="2026-11-24", annual_avg_aum_fen=aum_fen)), timeout=10)


def test_a_rule_published_from_the_cli_is_served_without_restart(suite, tmp_path):
    before = _evaluate(suite, 25_000_000)  # ¥250,000: WEALTH under the shipped bands
    assert before.tier == "WEALTH" and before.ruleset.name == "tiering.tiers"
    assert "tier.WEALTH" in {r.rule_id for r in before.fired_rules}
    pid = suite.processes["tiering"].pid

    exported = _kequn(suite, "rules", "export", "tiering.tiers", "-o", str(tmp_path / "tiers.yaml"))
    assert exported.returncode == 0, exported.stderr
    text = (tmp_path / "tiers.yaml").read_text()
    # Raise the wealth floor to ¥300,000 (and the affluent band's top with it).
    changed = with_wealth_floor(30_000_000, text)
    (tmp_path / "tiers2.yaml").write_text(changed)
    # A tier scheme takes four eyes: one rule owner cannot publish it alone...
    alone = _kequn(suite, "rules", "publish", str(tmp_path / "tiers2.yaml"), "-m", "wealth floor ¥300k")
    assert alone.returncode != 0 and "FAILED_PRECONDITION" in alone.stderr and "four eyes" in alone.stderr
    assert _evaluate(suite, 25_000_000).ruleset.version == before.ruleset.version
    # ...one asks, the other approves.
    requested = _kequn(suite, "rules", "release", str(tmp_path / "tiers2.yaml"), "-m", "wealth floor ¥300k",
                       principal="rule_owner_1")
    assert requested.returncode == 0, requested.stderr + requested.stdout
    new_version = before.ruleset.version + 2  # the refused publish left its DRAFT behind
    assert f"created tiering.tiers v{new_version} (DRAFT)" in requested.stdout
    release_id = requested.stdout.split("kequn rules approve ", 1)[1].split()[0]
    own = _kequn(suite, "rules", "approve", release_id, "--service", "tiering", principal="rule_owner_1")
    assert own.returncode != 0 and "PERMISSION_DENIED" in own.stderr
    published = _kequn(suite, "rules", "approve", release_id, "--service", "tiering", principal="rule_owner_2")
    assert published.returncode == 0, published.stderr + published.stdout
    assert f"tiering.tiers v{new_version}  ACTIVE" in published.stdout

    deadline = time.monotonic() + 15
    after = _evaluate(suite, 25_000_000)
    while after.ruleset.version != new_version and time.monotonic() < deadline:
        time.sleep(0.2)
        after = _evaluate(suite, 25_000_000)
    assert (after.tier, after.ruleset.version) == ("AFFLUENT", new_version)
    assert suite.processes["tiering"].pid == pid and suite.processes["tiering"].poll() is None
    assert metric_value(suite.metrics("tiering"), "kequn_ruleset_active_version", ruleset="tiering.tiers") == new_version

    shown = _kequn(suite, "rules", "show", "tiering.tiers", "--versions")
    assert shown.returncode == 0 and "wealth floor ¥300k" in shown.stdout
    rolled = _kequn(suite, "rules", "rollback", "tiering.tiers", "--to", str(before.ruleset.version))
    assert rolled.returncode == 0, rolled.stderr
    deadline = time.monotonic() + 15
    while _evaluate(suite, 25_000_000).tier != "WEALTH" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _evaluate(suite, 25_000_000).ruleset.version == before.ruleset.version


def test_an_invalid_rule_is_refused_by_the_cli_and_the_server(suite, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: tiering.tiers\nkind: tiering.tier_scheme\nbands:\n  - id: tier\n    field: annual_avg_aum_fen\n"
                   "    output: tier\n    bands:\n      - {value: A, below: 100}\n      - {value: B, from: 200}\n")
    validated = _kequn(suite, "rules", "validate", str(bad))
    assert validated.returncode == 1 and "gap: nothing covers 100 to 200" in validated.stdout
    published = _kequn(suite, "rules", "publish", str(bad))
    assert published.returncode != 0 and "INVALID_ARGUMENT" in published.stderr


@pytest.mark.parametrize("service", ORDER)
def test_metrics_endpoint_counts_handled_calls(suite, service):
    stub = rules_pb2_grpc.RuleStoreServiceStub(suite.channel(service, "rule_admin"))
    labels = dict(grpc_service="kequn.rules.v1.RuleStoreService", grpc_method="ListRulesets", grpc_code="OK")
    before = metric_value(suite.metrics(service), "grpc_server_handled_total", **labels) or 0
    stub.ListRulesets(rules_pb2.ListRulesetsRequest(), timeout=5)
    text = suite.metrics(service)
    assert metric_value(text, "grpc_server_handled_total", **labels) == before + 1
    assert "grpc_server_handling_seconds_bucket" in text and "kequn_ruleset_active_version" in text
