"""Rulesets that would crash or exhaust durable-rules are refused at
validation by the running service and never reach its engine; a version
that fails to load at hot reload leaves the previous one serving, visibly
in /metrics."""
from __future__ import annotations

import importlib
import time

import grpc
import pytest
import yaml
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from kequn.rules.v1 import rules_pb2, rules_pb2_grpc
from services.common.db import make_engine
from services.rules.store import RuleStore
from tests.e2e.harness import metric_value
from tests.security.conftest import require
from tests.security.rpcs import SERVICES

pytestmark = pytest.mark.e2e


def _kind(service, kind_name):
    kinds = importlib.import_module(f"services.{service}.rules_kind").KINDS
    kinds = kinds if isinstance(kinds, (list, tuple)) else [kinds]
    return next(k for k in kinds if k.name == kind_name)


def _field(kind, type_name):
    return next((name for name, t in kind.fields.items() if t == type_name), None)


def _nested(field, depth):
    """all/any alternating with two children each: nothing a compiler may flatten."""
    cond = {field: {"gte": 0}}
    for level in range(depth):
        cond = {"all" if level % 2 else "any": [cond, {field: {"lt": -level - 1}}]}
    return cond


class _PlainDumper(yaml.SafeDumper):
    """Writes shared objects out in full: only the alias bomb below uses YAML aliases on purpose."""

    def ignore_aliases(self, data):
        return True


def dump(obj) -> str:
    return yaml.dump(obj, Dumper=_PlainDumper)


def alias_bomb(doc, levels: int = 8) -> str:
    """Billion laughs: < 1 KB of YAML whose aliases expand to 9**levels strings
    (8 levels: 43 million) in anything that walks or serializes the document."""
    node = ["lol"] * 9
    for _ in range(levels - 1):
        node = [node] * 9  # the same object 9 times: safe_dump writes anchors and aliases
    text = yaml.safe_dump(dict(doc, parameters=dict(doc.get("parameters") or {}, bomb=node)))
    assert len(text) < 20_000 + len(yaml.safe_dump(doc))
    return text


def aliased_string(doc, size: int = 100_000, times: int = 3_000) -> str:
    """One string written once and aliased ``times`` times: 200 kB of YAML,
    300 MB once expanded (it used to be stored, and grew tiering by 578 MB)."""
    text = yaml.safe_dump(dict(doc, parameters=dict(doc.get("parameters") or {}, copies="COPIES")))
    aliases = "[&big " + "x" * size + ", *big" * times + "]"
    assert "copies: COPIES" in text
    return text.replace("copies: COPIES", "copies: " + aliases)


def hostile_documents(service, doc, with_bomb=True):
    """(label, document text, words the refusal must mention)."""
    kind = _kind(service, doc["kind"])
    existing = [r["then"] for r in doc.get("rules") or [] if isinstance(r, dict) and r.get("then")]
    if existing:  # an outcome the kind's own checks accept: only the attack is wrong
        then = existing[0]
    elif kind.outputs:
        key, shape = next(iter(kind.outputs.items()))
        then = {key: ["X"] if shape == "list" else "X"}
    else:
        then = {"note": "X"}
    out = []
    many = dict(doc, rules=list(doc.get("rules") or []) + [{"id": f"many.{i}", "then": then} for i in range(2500)])
    out.append(("thousands of rules", dump(many), "rules: durable-rules is limited"))
    out.append(("over 1 MB", dump(dict(doc, description="z" * 1_100_000)), "at most 1000000"))
    if with_bomb:  # heavy when it is not refused: one ruleset per service is enough
        out.append(("YAML alias bomb", alias_bomb(doc), ""))
        out.append(("a 100 kB string aliased 3,000 times", aliased_string(doc), "expands to more than"))
    string_field, int_field = _field(kind, "string"), _field(kind, "int")
    if string_field:
        for pattern in ("(a+)+$", "(x*)*y", "([a-z]+)*@"):
            regex = dict(doc, rules=list(doc.get("rules") or []) + [
                {"id": "evil.regex", "when": {string_field: {"matches": pattern}}, "then": then}])
            out.append((f"regex {pattern}", dump(regex), "nested quantifier"))
        long_regex = dict(doc, rules=[{"id": "long.regex", "when": {string_field: {"matches": "a" * 5000}},
                                       "then": then}])
        out.append(("5000-char regex", dump(long_regex), "longer than"))
    if int_field:
        deep = dict(doc, rules=list(doc.get("rules") or []) + [
            {"id": "deep", "when": _nested(int_field, 60), "then": then}])
        out.append(("60 levels deep", dump(deep), "deep"))
    return out


def _stub(suite, service, role="rule_admin"):
    return rules_pb2_grpc.RuleStoreServiceStub(suite.channel(service, role))


def _active_versions(suite, service):
    text = suite.metrics(service)
    return {line.split('ruleset="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith("kequn_ruleset_active_version{")}


@pytest.mark.parametrize("service", SERVICES)
def test_hostile_rulesets_are_refused_and_the_service_keeps_its_version(suite, service):
    require(service)
    stub = _stub(suite, service)
    before = _active_versions(suite, service)
    rulesets = stub.ListRulesets(rules_pb2.ListRulesetsRequest(), timeout=10).rulesets
    assert rulesets and before
    checked = 0
    for summary in rulesets:
        active = stub.GetRuleset(rules_pb2.GetRulesetRequest(name=summary.name), timeout=10).ruleset_version
        versions_before = len(stub.ListRulesetVersions(
            rules_pb2.ListRulesetVersionsRequest(name=summary.name, page_size=100), timeout=10).versions)
        for label, text, words in hostile_documents(service, yaml.safe_load(active.document),
                                                   with_bomb=summary is rulesets[0]):
            try:
                stored = stub.CreateRulesetVersion(rules_pb2.CreateRulesetVersionRequest(
                    name=summary.name, document=text), timeout=60).ruleset_version
                pytest.fail(f"{label}: stored as {summary.name} v{stored.version} instead of refused")
            except grpc.RpcError as exc:
                refused = exc
            assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{label}: {refused.code()}"
            status = rpc_status.from_call(refused)
            why = refused.details() + " ".join(
                v.description for d in (status.details if status else ())
                for v in (_unpack_bad_request(d).field_violations))
            assert words in why, f"{label}: refusal does not say why ({words!r}): {why[:500]}"
            try:
                problems = stub.ValidateRuleset(rules_pb2.ValidateRulesetRequest(document=text), timeout=60)
                assert not problems.valid, label
            except grpc.RpcError as exc:  # past the request bounds: refused at the edge
                assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{label}: {exc.code()}"
            checked += 1
        versions_after = len(stub.ListRulesetVersions(
            rules_pb2.ListRulesetVersionsRequest(name=summary.name, page_size=100), timeout=10).versions)
        assert versions_after == versions_before, "a refused document was stored"
    assert checked
    assert _active_versions(suite, service) == before
    assert suite.processes[service].poll() is None


def _unpack_bad_request(detail):
    message = error_details_pb2.BadRequest()
    detail.Unpack(message)
    return message


@pytest.mark.parametrize("service", SERVICES)
def test_a_version_that_fails_to_load_keeps_the_previous_one_serving(suite, service):
    """Stored behind validation's back (as a version written by an older
    release would be), published, then polled by the running service."""
    require(service)
    stub = _stub(suite, service)
    name = stub.ListRulesets(rules_pb2.ListRulesetsRequest(), timeout=10).rulesets[0].name
    active = stub.GetRuleset(rules_pb2.GetRulesetRequest(name=name), timeout=10).ruleset_version
    broken = yaml.safe_load(active.document)
    broken["rules"] = list(broken.get("rules") or []) + [
        {"id": "broken.field", "when": {"no_such_field_anywhere": 1}, "then": {"x": "y"}}]
    store = RuleStore(make_engine(suite.env[f"KEQUN_{service.upper()}_DATABASE_URL"]))
    failures = lambda: metric_value(suite.metrics(service), "kequn_ruleset_load_failures_total", ruleset=name) or 0
    failures_before = failures()
    record = store.create_version(name, active.kind, dump(broken), "test-bypass")
    store.publish(name, record.version, "test-bypass")
    try:
        deadline = time.monotonic() + 30  # the runtime polls every 0.5 s in this suite
        while failures() <= failures_before and time.monotonic() < deadline:
            time.sleep(0.2)
        text = suite.metrics(service)
        assert failures() == failures_before + 1
        assert metric_value(text, "kequn_ruleset_load_ok", ruleset=name) == 0
        assert metric_value(text, "kequn_ruleset_active_version", ruleset=name) == active.version
        assert suite.processes[service].poll() is None
    finally:
        stub.RollbackRuleset(rules_pb2.RollbackRulesetRequest(name=name, to_version=active.version), timeout=30)
        store.engine.dispose()
