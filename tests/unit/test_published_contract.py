"""What is published for gateways and clients besides the generated code:
the descriptor set gen/descriptors/kequn.binpb and the gRPC service config
deploy/grpc/service_config.json, checked against each other and against the
code the services run. (Drift from protos/: tests/unit/test_contracts.py runs
scripts/gen_protos.py --check, which covers both files.)"""

from __future__ import annotations

import json
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool

from services.common import service_config

ROOT = Path(__file__).resolve().parents[2]
DESCRIPTORS = ROOT / "gen" / "descriptors" / "kequn.binpb"
CONFIG = ROOT / "deploy" / "grpc" / "service_config.json"
SERVICES = {"kequn.tiering.v1.TieringService", "kequn.assignment.v1.AssignmentService",
            "kequn.scoring.v1.ScoringService", "kequn.benefits.v1.BenefitsService",
            "kequn.rules.v1.RuleStoreService"}


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    return descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTORS.read_bytes())


def methods() -> dict[tuple[str, str], tuple[descriptor_pb2.MethodDescriptorProto, descriptor_pb2.DescriptorProto]]:
    files = descriptor_set().file
    messages = {f".{f.package}.{m.name}": m for f in files for m in f.message_type}
    return {(f"{f.package}.{s.name}", m.name): (m, messages[m.input_type])
            for f in files for s in f.service for m in s.method}


def config_entries() -> dict[tuple[str, str], dict]:
    out = {}
    for entry in json.loads(CONFIG.read_text())["methodConfig"]:
        for name in entry["name"]:
            key = (name["service"], name["method"])
            assert key not in out, f"{key} appears twice (grpc would reject the config)"
            out[key] = entry
    return out


def test_descriptor_set_is_self_contained_and_has_every_service():
    pool = descriptor_pool.DescriptorPool()
    for f in descriptor_set().file:  # imports come first: each file's dependencies are already added
        pool.Add(f)
    for name in SERVICES:
        assert pool.FindServiceByName(name).methods
    assert pool.FindMessageTypeByName("google.rpc.Status")


def test_every_configured_method_exists_in_the_descriptors():
    known = methods()
    unknown = [key for key in config_entries() if key not in known]
    assert not unknown


def test_every_rpc_has_a_policy_and_retries_only_where_safe():
    entries = config_entries()
    for key, (method, request) in methods().items():
        assert key in entries, f"{key} has no entry"
        entry = entries[key]
        streaming = method.client_streaming or method.server_streaming
        has_request_id = any(f.name == "request_id" for f in request.field)
        read = method.name.startswith(service_config.READ_PREFIXES + service_config.SLOW_READ_PREFIXES)
        if streaming:
            assert "retryPolicy" not in entry and "timeout" not in entry, key
            continue
        assert entry["timeout"].endswith("s"), key
        if read or has_request_id:
            assert entry["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"], key
        else:
            assert "retryPolicy" not in entry, f"{key}: a mutation without request_id must not be retried"


def test_contract_classification_of_known_rpcs():
    entries = config_entries()
    retried = lambda s, m: "retryPolicy" in entries[(s, m)]  # noqa: E731
    assert retried("kequn.benefits.v1.BenefitsService", "ListEntitlements")
    assert retried("kequn.benefits.v1.BenefitsService", "ClaimBenefit")
    assert retried("kequn.tiering.v1.TieringService", "GetCustomerTier")
    assert not retried("kequn.assignment.v1.AssignmentService", "CloseLockPeriod")
    assert not retried("kequn.benefits.v1.BenefitsService", "Reconcile")
    assert "timeout" not in entries[("kequn.tiering.v1.TieringService", "WatchTierChanges")]


def test_the_suite_uses_what_is_published():
    options = dict(service_config.channel_options())
    assert json.loads(options["grpc.service_config"]) == json.loads(CONFIG.read_text())
    assert options["grpc.enable_retries"] == 1
