"""Rule governance through a real tiering server: `kequn rules simulate FILE
--population` streams the candidate against every stored customer (table +
CSV), and ExplainDecision explains a stored decision over gRPC."""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import grpc
import pytest

from kequn.rules.v1 import rules_pb2, rules_pb2_grpc
from kequn.tiering.v1 import tiering_pb2, tiering_pb2_grpc
from services.tiering.demo import synthetic_customers
from services.tiering.explain_api import snapshot_to_proto
from tests.tier_schemes import with_wealth_floor

N = 300


def _store(suite) -> list[tiering_pb2.TierDecision]:
    stub = tiering_pb2_grpc.TieringServiceStub(suite.channel("tiering", "core_banking"))
    batch = tiering_pb2.EvaluateCustomerBatchesRequest(requests=[
        tiering_pb2.EvaluateCustomerRequest(customer=snapshot_to_proto(s)) for s in synthetic_customers(N, seed=5)])
    decisions = [d for reply in stub.EvaluateCustomerBatches(iter([batch]), timeout=60) for d in reply.decisions]
    assert len(decisions) == N and not any(d.HasField("error") for d in decisions)
    return decisions


def _kequn(suite, *args):
    env = {**os.environ, **suite.env, "KEQUN_TOKEN": suite.tokens["rule_admin"]}
    return subprocess.run([sys.executable, "-m", "services.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=180)


def test_population_simulation_from_the_cli_and_a_decision_explained(suite, tmp_path):
    decisions = _store(suite)
    raised = with_wealth_floor(100_000_000)
    (tmp_path / "tiers2.yaml").write_text(raised, encoding="utf-8")
    out = _kequn(suite, "rules", "simulate", str(tmp_path / "tiers2.yaml"), "--population", "--by-branch",
                 "--csv", str(tmp_path / "matrix.csv"))
    assert out.returncode == 0, out.stderr + out.stdout
    assert f"{N:,} evaluated" in out.stdout and "from (active)" in out.stdout and "WEALTH" in out.stdout
    with open(tmp_path / "matrix.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    overall = [r for r in rows if r["branch_id"] == "*" and r["outcome_key"] == "tier"]
    assert sum(int(r["count"]) for r in overall) == N
    moved = {(r["from"], r["to"]): int(r["count"]) for r in overall}
    stored_wealth = {d.customer_id for d in decisions if d.tier == "WEALTH"}
    assert moved.get(("WEALTH", "AFFLUENT"), 0) > 0
    assert sum(n for (b, _), n in moved.items() if b == "WEALTH") == len(stored_wealth)
    examples = [r["example_ids"].split() for r in overall if (r["from"], r["to"]) == ("WEALTH", "AFFLUENT")][0]
    assert examples and set(examples) <= stored_wealth
    per_branch = [r for r in rows if r["branch_id"] != "*" and r["outcome_key"] == "tier"]
    assert sum(int(r["count"]) for r in per_branch) == N

    # The RPC itself: progress, then the result; refused to a role without rights.
    rules = rules_pb2_grpc.RuleStoreServiceStub(suite.channel("tiering", "rule_admin"))
    candidate = rules.ListRulesetVersions(rules_pb2.ListRulesetVersionsRequest(name="tiering.tiers")).versions[0]
    messages = list(rules.SimulatePopulation(rules_pb2.SimulatePopulationRequest(
        name="tiering.tiers", version=candidate.version), timeout=120))
    assert messages[-1].done and not any(m.done for m in messages[:-1])
    assert messages[-1].result.total == N and messages[0].total == N
    with pytest.raises(grpc.RpcError) as denied:
        list(rules_pb2_grpc.RuleStoreServiceStub(suite.channel("tiering", "mobile_banking")).SimulatePopulation(
            rules_pb2.SimulatePopulationRequest(name="tiering.tiers", version=candidate.version), timeout=30))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

    tiering = tiering_pb2_grpc.TieringServiceStub(suite.channel("tiering", "operations"))
    wealthy = next(d for d in decisions if d.tier == "WEALTH")
    e = tiering.ExplainDecision(tiering_pb2.ExplainDecisionRequest(decision_id=wealthy.decision_id), timeout=30)
    assert e.reproduced and e.decision.decision_id == wealthy.decision_id
    assert e.snapshot.customer_id == wealthy.customer_id
    assert [(r.name, r.version) for r in e.rulesets] == [("tiering.tiers", 1), ("tiering.groups", 1)]
    assert {r.rule_id for r in e.fired_rules} == {r.rule_id for r in wealthy.fired_rules}
    assert all(r.description for r in e.fired_rules)
    with pytest.raises(grpc.RpcError) as missing:
        tiering.ExplainDecision(tiering_pb2.ExplainDecisionRequest(decision_id="nope"), timeout=10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_release_policy_is_shown_and_only_an_admin_changes_it(suite):
    owner = rules_pb2_grpc.RuleStoreServiceStub(suite.channel("tiering", "rule_admin"))
    listed = {r.name: r.four_eyes for r in owner.ListRulesets(rules_pb2.ListRulesetsRequest(), timeout=10).rulesets}
    assert listed == {"tiering.tiers": True, "tiering.groups": False}
    request = rules_pb2.SetReleasePolicyRequest(name="tiering.groups", four_eyes=True, comment="groups drive budgets")
    with pytest.raises(grpc.RpcError) as denied:
        owner.SetReleasePolicy(request, timeout=10)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    admin = rules_pb2_grpc.RuleStoreServiceStub(suite.channel("tiering", "admin"))
    assert admin.SetReleasePolicy(request, timeout=10).four_eyes
    draft = owner.CreateRulesetVersion(rules_pb2.CreateRulesetVersionRequest(
        name="tiering.groups", document=owner.GetRuleset(rules_pb2.GetRulesetRequest(
            name="tiering.groups")).ruleset_version.document), timeout=30).ruleset_version
    with pytest.raises(grpc.RpcError) as refused:
        owner.PublishRuleset(rules_pb2.PublishRulesetRequest(name="tiering.groups", version=draft.version), timeout=30)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status
    reasons = []
    for detail in rpc_status.from_call(refused.value).details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            reasons.append((info.domain, info.reason))
    assert reasons == [("kequn.bank", "FOUR_EYES_REQUIRED")]
