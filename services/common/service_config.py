"""The gRPC service config of the kequn contract: per-method timeouts and
which RPCs a client may retry by itself.

Published as deploy/grpc/service_config.json (written by `make protos` from
the same function, so it follows the protos; `make protos-check` fails on
drift) and used by the suite's own channels (services.common.client.dial).

Policy, per RPC, from its descriptor:
- streaming RPCs (WatchTierChanges, the batches): no deadline, no retry —
  their callers resume by cursor or per item themselves;
- reads (Get*, List*, Explain*; Validate*, Test*, Simulate*, Verify* with a longer
  deadline): retried on UNAVAILABLE;
- mutations whose request has `request_id`: retried on UNAVAILABLE — the same
  request_id returns the first result, so a retry never applies twice
  (callers must set request_id; without one a retry may apply twice);
- any other mutation (UpsertBranch, CloseLockPeriod, Reconcile, ...): a
  deadline, never an automatic retry.
Only UNAVAILABLE is retried: RESOURCE_EXHAUSTED also means "out of stock" and
FAILED_PRECONDITION/ABORTED need the caller's judgement. Retry throttling
stops retries when most calls fail, so a down service is not hammered.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from functools import lru_cache

from google.protobuf import descriptor_pb2

PATH_ENV = "KEQUN_GRPC_SERVICE_CONFIG"  # a JSON file replacing the built-in config
READ_PREFIXES = ("Get", "List", "Explain")
SLOW_READ_PREFIXES = ("Validate", "Test", "Simulate", "Verify")
READ_TIMEOUT, SLOW_READ_TIMEOUT, MUTATION_TIMEOUT = "10s", "60s", "30s"
# Mutations that do a whole branch or period at once.
LONG_MUTATIONS = {"RunAssignment": "600s", "CalculatePeriod": "600s", "FinalizePeriod": "120s",
                  "Reconcile": "300s"}
RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.2s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
RETRY_THROTTLING = {"maxTokens": 10, "tokenRatio": 0.1}


def _kind(method: descriptor_pb2.MethodDescriptorProto, request: descriptor_pb2.DescriptorProto) -> str:
    if method.client_streaming or method.server_streaming:
        return "stream"
    if method.name.startswith(READ_PREFIXES):
        return "read"
    if method.name.startswith(SLOW_READ_PREFIXES):
        return "slow_read"
    if any(f.name == "request_id" for f in request.field):
        return "idempotent_mutation"
    return "mutation"


def build(files: Iterable[descriptor_pb2.FileDescriptorProto]) -> dict:
    """The service config for every kequn service in `files`."""
    files = list(files)
    messages = {f".{f.package}.{m.name}": m for f in files for m in f.message_type}
    groups: dict[tuple, list[dict]] = {}
    for f in sorted(files, key=lambda f: f.name):
        if not f.package.startswith("kequn."):
            continue
        for service in f.service:
            for method in service.method:
                kind = _kind(method, messages[method.input_type])
                if kind == "stream":
                    key = (None, False)
                elif kind in ("read", "slow_read"):
                    key = (READ_TIMEOUT if kind == "read" else SLOW_READ_TIMEOUT, True)
                else:
                    key = (LONG_MUTATIONS.get(method.name, MUTATION_TIMEOUT), kind == "idempotent_mutation")
                groups.setdefault(key, []).append({"service": f"{f.package}.{service.name}", "method": method.name})
    configs = []
    for (timeout, retry), names in sorted(groups.items(), key=lambda kv: (kv[0][1], int((kv[0][0] or "0s")[:-1]))):
        entry: dict = {"name": names}
        if timeout:
            entry["timeout"] = timeout
        if retry:
            entry["retryPolicy"] = RETRY_POLICY
        configs.append(entry)
    return {"methodConfig": configs, "retryThrottling": RETRY_THROTTLING}


def render(config: dict) -> str:
    """Indented JSON with one line per method name."""
    text = json.dumps(config, indent=2, ensure_ascii=False)
    return re.sub(r'\{\s+("service": "[^"]+"),\s+("method": "[^"]+")\s+\}', r"{\1, \2}", text) + "\n"


def _contract_files() -> list[descriptor_pb2.FileDescriptorProto]:
    from kequn.assignment.v1 import assignment_pb2
    from kequn.benefits.v1 import benefits_pb2
    from kequn.common.v1 import audit_pb2, common_pb2
    from kequn.rules.v1 import rules_pb2
    from kequn.scoring.v1 import scoring_pb2
    from kequn.tiering.v1 import tiering_pb2

    out = []
    for module in (assignment_pb2, audit_pb2, benefits_pb2, common_pb2, rules_pb2, scoring_pb2, tiering_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        out.append(proto)
    return out


@lru_cache(maxsize=4)
def _channel_json(path: str | None) -> str:
    if path:
        with open(path, encoding="utf-8") as f:
            return json.dumps(json.load(f))  # fails early on a malformed file
    return json.dumps(build(_contract_files()))


def channel_options() -> list[tuple[str, object]]:
    """Channel options that apply the service config (and enable retries)."""
    return [("grpc.service_config", _channel_json(os.environ.get(PATH_ENV) or None)), ("grpc.enable_retries", 1)]
