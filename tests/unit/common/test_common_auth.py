import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from services.common import auth
from services.common.auth import Policy, Principal, TokenStore, hash_token
from services.common.errors import Unauthenticated


def write_tokens(path: Path, entries):
    path.write_text(yaml.safe_dump({"tokens": entries}))


def entry(name, token, roles, expires_at=None):
    return {"name": name, "roles": roles, "sha256": hash_token(token), "expires_at": expires_at}


def test_hash_token_is_sha256_hex():
    assert hash_token("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_authenticate_valid_unknown_and_empty(tmp_path):
    path = tmp_path / "tokens.yaml"
    write_tokens(path, [entry("ops", "t-ops", ["operations"])])
    store = TokenStore(path)
    assert store.authenticate("t-ops") == Principal("ops", frozenset({"operations"}))
    assert store.authenticate("t-other") is None
    assert store.authenticate("") is None
    assert store.authenticate(None) is None


def test_expired_token_is_refused(tmp_path):
    now = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)
    path = tmp_path / "tokens.yaml"
    write_tokens(path, [
        entry("old", "t-old", ["hr"], "2025-06-01T11:59:59Z"),
        entry("new", "t-new", ["hr"], (now + timedelta(seconds=1)).isoformat()),
        entry("naive", "t-naive", ["hr"], "2025-06-01T12:00:01"),  # naive = UTC
    ])
    store = TokenStore(path, clock=lambda: now)
    assert store.authenticate("t-old") is None
    assert store.authenticate("t-new").name == "new"
    assert store.authenticate("t-naive").name == "naive"


def test_rotation_is_picked_up_without_restart(tmp_path):
    path = tmp_path / "tokens.yaml"
    write_tokens(path, [entry("ops", "t-1", ["operations"])])
    store = TokenStore(path)
    assert store.authenticate("t-1")
    # Rotate atomically, as an operator (or a k8s secret update) would.
    tmp = tmp_path / "tokens.yaml.new"
    write_tokens(tmp, [entry("ops", "t-2", ["operations"])])
    os.replace(tmp, path)
    assert store.authenticate("t-1") is None
    assert store.authenticate("t-2").name == "ops"


def test_broken_rotation_keeps_previous_tokens(tmp_path):
    path = tmp_path / "tokens.yaml"
    write_tokens(path, [entry("ops", "t-1", ["operations"])])
    store = TokenStore(path)
    assert store.authenticate("t-1")
    path.write_text("tokens: [ {name: ops, sha256: nothex")  # half-written
    assert store.authenticate("t-1").name == "ops"


def test_missing_file_authenticates_nobody(tmp_path):
    assert TokenStore(tmp_path / "absent.yaml").authenticate("anything") is None


def test_generate_dev_tokens_stores_hashes_only(tmp_path):
    path = tmp_path / "d" / "tokens.yaml"
    tokens = auth.generate_dev_tokens(path)
    assert set(tokens) == {*auth.ROLES, "service", "rule_owner_1", "rule_owner_2"}
    text = path.read_text()
    assert not any(t in text for t in tokens.values())
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    store = TokenStore(path)
    for name, token in tokens.items():
        p = store.authenticate(token)
        assert p.name == name and p.roles == frozenset(auth.DEV_EXTRA_PRINCIPALS.get(name, (name,)))


POLICY = Policy({
    "/kequn.tiering.v1.TieringService/EvaluateCustomer": frozenset({"core_banking"}),
    "/kequn.benefits.v1.BenefitsService/*": frozenset({"mobile_banking"}),
    "/kequn.benefits.v1.BenefitsService/SetBudget": frozenset({"operations"}),
})


def p(*roles):
    return Principal("x", frozenset(roles))


def test_policy_allows_listed_roles_only():
    assert POLICY.allows(p("core_banking"), "/kequn.tiering.v1.TieringService/EvaluateCustomer")
    assert not POLICY.allows(p("hr"), "/kequn.tiering.v1.TieringService/EvaluateCustomer")


def test_policy_denies_unlisted_methods_to_all_but_admin():
    m = "/kequn.tiering.v1.TieringService/SomethingNew"
    assert not POLICY.allows(p("core_banking", "operations", "service"), m)
    assert POLICY.allows(p("admin"), m)


def test_policy_service_wildcard_and_exact_override():
    assert POLICY.allows(p("mobile_banking"), "/kequn.benefits.v1.BenefitsService/ClaimBenefit")
    assert not POLICY.allows(p("mobile_banking"), "/kequn.benefits.v1.BenefitsService/SetBudget")
    assert POLICY.allows(p("operations"), "/kequn.benefits.v1.BenefitsService/SetBudget")


def test_policy_load_rejects_malformed_names(tmp_path):
    path = tmp_path / "rbac.yaml"
    path.write_text("methods:\n  EvaluateCustomer: [hr]\n")
    with pytest.raises(ValueError):
        Policy.load(path)


CONTRACT_RPCS = {
    "kequn.tiering.v1.TieringService": "EvaluateCustomer EvaluateCustomers GetCustomerTier ListTierChanges "
                                       "WatchTierChanges",
    "kequn.assignment.v1.AssignmentService": "UpsertBranch UpsertStaff RunAssignment GetBook GetCustomerManagers "
                                             "ClaimGroup OpenLockPeriod CloseLockPeriod CreateChangeRequest "
                                             "ApproveChangeRequest RejectChangeRequest ListChangeRequests "
                                             "ListAuditEvents",
    "kequn.scoring.v1.ScoringService": "SubmitMetrics SubmitRatings CalculatePeriod FinalizePeriod GetScore "
                                       "ListScores ReviseScore",
    "kequn.benefits.v1.BenefitsService": "ListEntitlements ClaimBenefit CancelClaim ListClaims UpsertBenefit "
                                         "AdjustInventory GetInventory SetBudget",
    "kequn.rules.v1.RuleStoreService": "ValidateRuleset CreateRulesetVersion TestRuleset SimulateRuleset "
                                       "PublishRuleset RollbackRuleset GetRuleset ListRulesetVersions",
}


def test_shipped_rbac_covers_every_contract_rpc():
    policy = Policy.load()
    known_roles = set(auth.ROLES) | {"service"}
    for name, allowed in policy.methods.items():
        assert allowed, f"{name} allows nobody"
        assert allowed <= known_roles, f"{name}: unknown roles {allowed - known_roles}"
    for service, rpcs in CONTRACT_RPCS.items():
        for rpc in rpcs.split():
            assert policy.roles_for(f"/{service}/{rpc}"), f"/{service}/{rpc} missing from rbac.yaml"
    # Approving is not something a requester's role can do (four eyes).
    approve = policy.roles_for("/kequn.assignment.v1.AssignmentService/ApproveChangeRequest")
    assert "branch_staff" not in approve


def test_current_principal_outside_rpc_is_unauthenticated():
    with pytest.raises(Unauthenticated):
        auth.current_principal()


def test_bearer_metadata():
    assert auth.bearer_metadata("abc") == (("authorization", "Bearer abc"),)
