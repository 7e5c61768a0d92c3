"""The public contract (../shared/CONTRACT.md) as the generated code sees it.

(a) gen/python is in sync with protos/ (scripts/gen_protos.py --check);
(b) every service, RPC, fixed type name and listed field of CONTRACT.md exists
    (the tables below ARE the contract this test protects: never shrink them);
(c) money is int64 `*_fen`, and there is no float/double anywhere.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor

ROOT = Path(__file__).resolve().parents[2]
GEN = ROOT / "gen" / "python"
if str(GEN) not in sys.path:
    sys.path.insert(0, str(GEN))

AREAS = ("common", "rules", "tiering", "assignment", "scoring", "benefits")


def _module(area: str) -> ModuleType:
    return importlib.import_module(f"kequn.{area}.v1.{area}_pb2")


def _files() -> list[FileDescriptor]:
    return [_module(area).DESCRIPTOR for area in AREAS]


# --- (b) the contract -------------------------------------------------------

# service full name -> RPC names CONTRACT.md lists.
CONTRACT_RPCS: dict[str, set[str]] = {
    "kequn.tiering.v1.TieringService": {
        "EvaluateCustomer",
        "EvaluateCustomers",
        "GetCustomerTier",
        "ListTierChanges",
        "WatchTierChanges",
    },
    "kequn.assignment.v1.AssignmentService": {
        "UpsertBranch",
        "UpsertStaff",
        "RunAssignment",
        "GetBook",
        "GetCustomerManagers",
        "ClaimGroup",
        "OpenLockPeriod",
        "CloseLockPeriod",
        "CreateChangeRequest",
        "ApproveChangeRequest",
        "RejectChangeRequest",
        "ListChangeRequests",
        "ListAuditEvents",
        "ListBranches",
        "ListStaff",
        "ListLockPeriods",
        "GetGroupBook",
        "ListUnplaced",
    },
    "kequn.scoring.v1.ScoringService": {
        "SubmitMetrics",
        "SubmitRatings",
        "CalculatePeriod",
        "FinalizePeriod",
        "GetScore",
        "ListScores",
        "ReviseScore",
    },
    "kequn.benefits.v1.BenefitsService": {
        "ListEntitlements",
        "ClaimBenefit",
        "CancelClaim",
        "ListClaims",
        "UpsertBenefit",
        "AdjustInventory",
        "GetInventory",
        "SetBudget",
    },
    "kequn.rules.v1.RuleStoreService": {
        "ValidateRuleset",
        "CreateRulesetVersion",
        "TestRuleset",
        "SimulateRuleset",
        "PublishRuleset",
        "RollbackRuleset",
        "GetRuleset",
        "ListRulesetVersions",
    },
}

# (service, rpc) -> (request type, response type, client streaming, server
# streaming) where CONTRACT.md fixes them; None = not fixed.
CONTRACT_SIGNATURES: dict[tuple[str, str], tuple[str | None, str | None, bool, bool]] = {
    ("kequn.tiering.v1.TieringService", "EvaluateCustomer"): (
        "EvaluateCustomerRequest", "TierDecision", False, False),
    ("kequn.tiering.v1.TieringService", "EvaluateCustomers"): (
        "EvaluateCustomerRequest", "TierDecision", True, True),
    ("kequn.tiering.v1.TieringService", "GetCustomerTier"): (
        "GetCustomerTierRequest", "TierDecision", False, False),
    ("kequn.tiering.v1.TieringService", "WatchTierChanges"): (
        "WatchTierChangesRequest", "TierChange", False, True),
    ("kequn.assignment.v1.AssignmentService", "UpsertBranch"): ("Branch", None, False, False),
    ("kequn.assignment.v1.AssignmentService", "UpsertStaff"): ("Staff", None, False, False),
    ("kequn.assignment.v1.AssignmentService", "RunAssignment"): (
        "RunAssignmentRequest", "AssignmentRun", False, False),
    ("kequn.assignment.v1.AssignmentService", "GetBook"): ("GetBookRequest", "Book", False, False),
    ("kequn.assignment.v1.AssignmentService", "GetCustomerManagers"): (
        "GetCustomerManagersRequest", "CustomerManagers", False, False),
    ("kequn.assignment.v1.AssignmentService", "ClaimGroup"): ("GroupClaim", None, False, False),
    ("kequn.assignment.v1.AssignmentService", "OpenLockPeriod"): ("LockPeriod", None, False, False),
    ("kequn.assignment.v1.AssignmentService", "CloseLockPeriod"): (
        "CloseLockPeriodRequest", None, False, False),
    ("kequn.assignment.v1.AssignmentService", "CreateChangeRequest"): (
        "CreateChangeRequestRequest", "ChangeRequest", False, False),
    ("kequn.assignment.v1.AssignmentService", "ApproveChangeRequest"): (
        "DecideChangeRequestRequest", "ChangeRequest", False, False),
    ("kequn.assignment.v1.AssignmentService", "RejectChangeRequest"): (
        "DecideChangeRequestRequest", "ChangeRequest", False, False),
    ("kequn.assignment.v1.AssignmentService", "GetGroupBook"): ("GetGroupBookRequest", None, False, False),
    ("kequn.assignment.v1.AssignmentService", "ListUnplaced"): ("ListUnplacedRequest", None, False, False),
    ("kequn.scoring.v1.ScoringService", "SubmitMetrics"): ("SubmitMetricsRequest", None, False, False),
    ("kequn.scoring.v1.ScoringService", "CalculatePeriod"): (
        "CalculatePeriodRequest", None, False, False),
    ("kequn.scoring.v1.ScoringService", "FinalizePeriod"): ("FinalizePeriodRequest", None, False, False),
    ("kequn.scoring.v1.ScoringService", "GetScore"): ("GetScoreRequest", "StaffScore", False, False),
    ("kequn.scoring.v1.ScoringService", "ListScores"): (
        "ListScoresRequest", "ListScoresResponse", False, False),
    ("kequn.benefits.v1.BenefitsService", "ListEntitlements"): (
        "ListEntitlementsRequest", "ListEntitlementsResponse", False, False),
    ("kequn.benefits.v1.BenefitsService", "ClaimBenefit"): ("ClaimBenefitRequest", "Claim", False, False),
    ("kequn.benefits.v1.BenefitsService", "CancelClaim"): ("CancelClaimRequest", "Claim", False, False),
    # second round: rule governance
    ("kequn.rules.v1.RuleStoreService", "SimulatePopulation"): (
        "SimulatePopulationRequest", "SimulationProgress", False, True),
    ("kequn.rules.v1.RuleStoreService", "RequestRelease"): ("RequestReleaseRequest", "Release", False, False),
    ("kequn.rules.v1.RuleStoreService", "ApproveRelease"): ("DecideReleaseRequest", "Release", False, False),
    ("kequn.rules.v1.RuleStoreService", "RejectRelease"): ("DecideReleaseRequest", "Release", False, False),
}

# message full name -> fields CONTRACT.md lists (name -> expected type: a
# FieldDescriptor.TYPE_* for scalars, a message/enum full name, or None for
# "exists").
_S, _I64, _I32, _B = (
    FieldDescriptor.TYPE_STRING,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_BOOL,
)
CONTRACT_FIELDS: dict[str, dict[str, object]] = {
    "kequn.tiering.v1.EvaluateCustomerRequest": {
        "customer": "kequn.tiering.v1.CustomerSnapshot", "dry_run": _B, "request_id": _S},
    "kequn.tiering.v1.CustomerSnapshot": {
        "customer_id": _S, "as_of": _S, "annual_avg_aum_fen": _I64, "monthly_avg_aum_fen": _I64,
        "point_in_time_aum_fen": _I64, "previous_annual_avg_aum_fen": _I64,
        "holdings": "kequn.tiering.v1.BranchHolding", "age": None, "has_personal_loan": _B,
        "card_level": _S, "annual_card_spend_fen": _I64, "payroll_employer_id": _S,
        "is_merchant": _B, "has_social_security_card": _B, "mobile_banking_active": _B,
        "car_owner": _B, "has_school_age_child": _B, "last_customer_txn_date": _S,
        "other_bank_vip": _B, "quality_mortgage": _B, "attributes": None},
    "kequn.tiering.v1.BranchHolding": {"branch_id": _S, "aum_fen": _I64},
    "kequn.tiering.v1.TierDecision": {
        "customer_id": _S, "tier": _S, "previous_tier": _S, "change": "kequn.tiering.v1.ChangeKind",
        "segments": _S, "flags": _S, "home_branch_id": _S, "next_tier": "kequn.tiering.v1.NextTier",
        "downgrade_pending": None, "ruleset": "kequn.common.v1.RulesetRef",
        "fired_rules": "kequn.common.v1.FiredRule", "decision_id": _S,
        "error": "google.rpc.Status"},
    "kequn.tiering.v1.NextTier": {"tier": _S, "gap_fen": _I64},
    "kequn.common.v1.RulesetRef": {"name": _S, "version": None},
    "kequn.common.v1.FiredRule": {"rule_id": _S, "ruleset": _S, "version": None},
    "kequn.tiering.v1.GetCustomerTierRequest": {"customer_id": _S},
    "kequn.tiering.v1.WatchTierChangesRequest": {"after_cursor": None},
    "kequn.assignment.v1.Branch": {"branch_id": _S, "parent_branch_id": _S, "name": _S},
    "kequn.assignment.v1.Staff": {"staff_id": _S, "branch_id": _S, "role": _S, "active": _B},
    "kequn.assignment.v1.RunAssignmentRequest": {"branch_id": _S, "dry_run": _B},
    "kequn.assignment.v1.AssignmentRun": {
        "run_id": _S, "assigned": None, "moved": None, "unchanged": None,
        "unplaced": "kequn.assignment.v1.Unplaced", "suggestions_created": None},
    "kequn.assignment.v1.Unplaced": {"customer_id": _S, "reason": _S},
    "kequn.assignment.v1.GetBookRequest": {"staff_id": _S, "page_size": _I32, "page_token": _S},
    "kequn.assignment.v1.GetGroupBookRequest": {"staff_id": _S, "group": _S, "page_size": _I32, "page_token": _S},
    "kequn.assignment.v1.ListUnplacedRequest": {"branch_id": _S, "page_size": _I32, "page_token": _S},
    "kequn.assignment.v1.Book": {
        "staff_id": _S, "role": _S, "size": None, "initial_size": None, "max_size": None,
        "customer_ids": _S, "next_page_token": _S},
    "kequn.assignment.v1.GetCustomerManagersRequest": {"customer_id": _S},
    "kequn.assignment.v1.CustomerManagers": {"assignments": "kequn.assignment.v1.Assignment"},
    "kequn.assignment.v1.Assignment": {
        "staff_id": _S, "role": _S, "kind": "kequn.assignment.v1.AssignmentKind",
        "since": "google.protobuf.Timestamp"},
    "kequn.assignment.v1.GroupClaim": {"staff_id": _S, "group": _S, "selector": None},
    "kequn.assignment.v1.LockPeriod": {
        "period_id": _S, "branch_id": _S, "starts_on": _S, "ends_on": _S},
    "kequn.assignment.v1.CloseLockPeriodRequest": {"period_id": _S},
    "kequn.assignment.v1.CreateChangeRequestRequest": {
        "customer_id": _S, "action": "kequn.assignment.v1.ChangeAction", "from_staff_id": _S,
        "to_staff_id": _S, "reason": _S, "request_id": _S},
    "kequn.assignment.v1.ChangeRequest": {
        "change_request_id": _S, "status": "kequn.assignment.v1.ChangeRequestStatus",
        "requested_by": _S, "decided_by": _S},
    "kequn.assignment.v1.DecideChangeRequestRequest": {"change_request_id": _S, "comment": _S},
    "kequn.assignment.v1.ListChangeRequestsRequest": {
        "status": None, "branch_id": _S, "page_size": _I32, "page_token": _S},
    "kequn.assignment.v1.ListAuditEventsRequest": {"page_size": _I32, "page_token": _S},
    "kequn.scoring.v1.SubmitMetricsRequest": {
        "period_id": _S, "values": "kequn.scoring.v1.MetricValue"},
    "kequn.scoring.v1.MetricValue": {
        "staff_id": _S, "role": _S, "branch_id": _S, "indicator_id": _S, "value": _S},
    "kequn.scoring.v1.CalculatePeriodRequest": {"period_id": _S, "role": _S, "branch_id": _S},
    "kequn.scoring.v1.FinalizePeriodRequest": {"period_id": _S},
    "kequn.scoring.v1.GetScoreRequest": {"staff_id": _S, "period_id": _S},
    "kequn.scoring.v1.StaffScore": {
        "staff_id": _S, "role": _S, "branch_id": _S, "period_id": _S, "total": _S,
        "status": "kequn.scoring.v1.ScoreStatus", "revision": None, "rank": None,
        "peer_group_size": None, "scorecard": "kequn.common.v1.RulesetRef",
        "indicators": "kequn.scoring.v1.IndicatorScore"},
    "kequn.scoring.v1.IndicatorScore": {
        "indicator_id": _S, "method": _S, "raw_value": _S, "score": _S, "peer_mean": _S,
        "peer_stddev": _S, "peer_count": None, "note": _S},
    "kequn.scoring.v1.ListScoresRequest": {
        "period_id": _S, "role": _S, "branch_id": _S, "finalized_only": _B,
        "page_size": _I32, "page_token": _S},
    "kequn.scoring.v1.ListScoresResponse": {
        "scores": "kequn.scoring.v1.StaffScore", "next_page_token": _S},
    "kequn.benefits.v1.ListEntitlementsRequest": {"customer_id": _S},
    "kequn.benefits.v1.ListEntitlementsResponse": {
        "customer_id": _S, "tier": _S, "entitlements": "kequn.benefits.v1.Entitlement"},
    "kequn.benefits.v1.Entitlement": {
        "benefit_id": _S, "name": _S, "kind": _S, "reason": _S, "remaining": None,
        "valid_until": _S, "points_cost": None},
    "kequn.benefits.v1.ClaimBenefitRequest": {
        "customer_id": _S, "benefit_id": _S, "channel": _S, "request_id": _S},
    "kequn.benefits.v1.Claim": {
        "claim_id": _S, "customer_id": _S, "benefit_id": _S, "status": None,
        "claimed_at": "google.protobuf.Timestamp"},
    "kequn.benefits.v1.CancelClaimRequest": {"claim_id": _S, "reason": _S},
    "kequn.benefits.v1.ListClaimsRequest": {"customer_id": _S, "page_size": _I32, "page_token": _S},
    "kequn.benefits.v1.AdjustInventoryRequest": {"benefit_id": _S, "delta": None, "reason": _S},
    "kequn.benefits.v1.SetBudgetRequest": {"group": _S, "period": _S, "amount_fen": _I64},
}

# enum full name -> the value names CONTRACT.md lists (prefixed, buf STANDARD).
CONTRACT_ENUMS: dict[str, set[str]] = {
    "kequn.tiering.v1.ChangeKind": {"NEW", "UPGRADE", "DOWNGRADE", "UNCHANGED"},
    "kequn.assignment.v1.AssignmentKind": {"TIER", "GROUP"},
    "kequn.assignment.v1.ChangeAction": {"ADD", "REMOVE", "TRANSFER"},
    "kequn.assignment.v1.ChangeRequestStatus": {
        "PENDING", "APPROVED", "REJECTED", "EXPIRED", "SUPERSEDED"},
    "kequn.scoring.v1.ScoreStatus": {"CALCULATED", "FINALIZED"},
}


# --- (a) generated code in sync ---------------------------------------------


def test_generated_code_in_sync_with_protos() -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (dev extra) not installed")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("area", AREAS)
def test_every_generated_module_imports(area: str) -> None:
    mod = _module(area)
    assert mod.DESCRIPTOR.package == f"kequn.{area}.v1"
    assert mod.DESCRIPTOR.name == f"kequn/{area}/v1/{area}.proto"
    importlib.import_module(f"kequn.{area}.v1.{area}_pb2_grpc")


# --- (b) services, RPCs, types, fields ----------------------------------------


def _services() -> dict:
    return {s.full_name: s for f in _files() for s in f.services_by_name.values()}


def _messages() -> dict[str, Descriptor]:
    out: dict[str, Descriptor] = {}

    def walk(d: Descriptor) -> None:
        out[d.full_name] = d
        for n in d.nested_types:
            walk(n)

    for f in _files():
        for m in f.message_types_by_name.values():
            walk(m)
    return out


@pytest.mark.parametrize("service", sorted(CONTRACT_RPCS))
def test_contract_rpcs_exist(service: str) -> None:
    services = _services()
    assert service in services, f"service {service} missing"
    have = set(services[service].methods_by_name)
    missing = CONTRACT_RPCS[service] - have
    assert not missing, f"{service} lacks RPCs {sorted(missing)}"


@pytest.mark.parametrize("key", sorted(CONTRACT_SIGNATURES), ids=lambda k: f"{k[0]}.{k[1]}")
def test_contract_signatures(key: tuple[str, str]) -> None:
    service, rpc = key
    req, resp, client_streaming, server_streaming = CONTRACT_SIGNATURES[key]
    m = _services()[service].methods_by_name[rpc]
    if req is not None:
        assert m.input_type.name == req
    if resp is not None:
        assert m.output_type.name == resp
    assert m.client_streaming is client_streaming
    assert m.server_streaming is server_streaming


def _field_type(f: FieldDescriptor) -> object:
    if f.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
        return f.message_type.full_name
    if f.type == FieldDescriptor.TYPE_ENUM:
        return f.enum_type.full_name
    return f.type


@pytest.mark.parametrize("message", sorted(CONTRACT_FIELDS))
def test_contract_fields_exist(message: str) -> None:
    messages = _messages()
    assert message in messages, f"message {message} missing"
    fields = messages[message].fields_by_name
    for name, want in CONTRACT_FIELDS[message].items():
        assert name in fields, f"{message}.{name} missing"
        if want is not None:
            assert _field_type(fields[name]) == want, f"{message}.{name} has the wrong type"


@pytest.mark.parametrize("enum", sorted(CONTRACT_ENUMS))
def test_contract_enum_values(enum: str) -> None:
    enums = {
        e.full_name: e
        for f in _files()
        for e in list(f.enum_types_by_name.values())
        + [e for m in _messages().values() for e in m.enum_types]
    }
    assert enum in enums, f"enum {enum} missing"
    e = enums[enum]
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", e.name).upper() + "_"
    values = set(e.values_by_name)
    assert e.values_by_number[0].name == prefix + "UNSPECIFIED"
    missing = {v for v in CONTRACT_ENUMS[enum] if prefix + v not in values}
    assert not missing, f"{enum} lacks {sorted(prefix + v for v in missing)}"


def test_tier_change_feed_carries_assignment_inputs() -> None:
    fields = _messages()["kequn.tiering.v1.TierChange"].fields_by_name
    for name in (
        "cursor", "customer_id", "from_tier", "to_tier", "change", "segments", "flags",
        "home_branch_id", "ruleset", "changed_at", "decision_id", "annual_avg_aum_fen",
        "has_personal_loan", "annual_card_spend_fen", "card_level", "group_keys",
    ):
        assert name in fields, f"TierChange.{name} missing"
    assert fields["cursor"].type == FieldDescriptor.TYPE_INT64


# --- (c) money and numbers ----------------------------------------------------

_FLOATS = (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE)
_INTS = (
    FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
)
# Words that make a numeric field an amount of money (points are not money).
_MONEY_WORDS = re.compile(
    r"(^|_)(aum|amount|cost|price|spend|spent|budget|gap|fee|income|revenue|balance_fen|fen)(_|$)"
)


def _all_fields() -> list[tuple[str, FieldDescriptor]]:
    return [
        (f"{m.full_name}.{f.name}", f)
        for m in _messages().values()
        for f in m.fields
    ]


def test_fields_exist_to_check() -> None:
    assert len(_all_fields()) > 200


def test_no_float_or_double_anywhere() -> None:
    bad = [name for name, f in _all_fields() if f.type in _FLOATS]
    assert not bad, f"float/double fields (use int64 *_fen or decimal strings): {bad}"


def test_fen_fields_are_int64() -> None:
    bad = [
        name
        for name, f in _all_fields()
        if f.name.endswith("_fen") and f.type != FieldDescriptor.TYPE_INT64
    ]
    assert not bad, f"*_fen fields must be int64: {bad}"


def test_money_fields_are_named_fen() -> None:
    bad = [
        name
        for name, f in _all_fields()
        if f.type in _INTS
        and not f.name.startswith("points")
        and _MONEY_WORDS.search(f.name)
        and not (f.name.endswith("_fen") and f.type == FieldDescriptor.TYPE_INT64)
    ]
    assert not bad, f"money fields must be int64 named *_fen: {bad}"
