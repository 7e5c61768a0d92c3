"""kequn.rules.v1.RuleStoreService: the rule store of one service's kinds."""
from __future__ import annotations

from datetime import datetime

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from kequn.rules.v1 import rules_pb2, rules_pb2_grpc
from services.common.auth import current_principal
from services.common.errors import InvalidArgument, NotFound
from services.common.paging import decode_token, encode_token, page_size, scope

from .admin import RuleAdmin, problems_error
from .document import DocumentSyntaxError, parse_yaml
from .kinds import Problem
from .store import VersionRecord

SERVICE_NAME = "kequn.rules.v1.RuleStoreService"
_STATUS = {
    "DRAFT": rules_pb2.RULESET_STATUS_DRAFT,
    "PUBLISHED": rules_pb2.RULESET_STATUS_PUBLISHED,
    "RETIRED": rules_pb2.RULESET_STATUS_RETIRED,
}


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def version_message(record: VersionRecord) -> rules_pb2.RulesetVersion:
    return rules_pb2.RulesetVersion(
        name=record.name, version=record.version, status=_STATUS[record.status], kind=record.kind,
        checksum=record.checksum, document=record.document, created_by=record.created_by,
        created_at=_timestamp(record.created_at), published_by=record.published_by or "",
        published_at=_timestamp(record.published_at), comment=record.comment, active=record.active,
    )


def _require(**fields) -> None:
    missing = [(name, "required") for name, value in fields.items() if not value]
    if missing:
        raise InvalidArgument(violations=missing)


def _sample_item(index: int, struct) -> dict | Problem:
    """One Struct of a simulation's sample as plain values (integral numbers
    as ints), or the Problem that leaves it out of the counts."""
    try:
        values = json_format.MessageToDict(struct)
    except (json_format.Error, ValueError, RecursionError):  # e.g. Infinity or NaN in a number_value
        return Problem(f"sample[{index}]", "not plain JSON values (a number is infinite or NaN?)")
    return {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in values.items()}


class RuleStoreServicer(rules_pb2_grpc.RuleStoreServiceServicer):
    """Serves only the kinds of the service it runs in: another service's
    rulesets are NOT_FOUND here."""

    def __init__(self, admin: RuleAdmin, served_kinds: set[str], runtime=None):
        self.admin = admin
        self.kinds = served_kinds
        self.runtime = runtime  # RuleRuntime of this process: Publish/Rollback answer once it serves them

    def _own(self, name: str) -> None:
        if name not in set(self.admin.store.names(self.kinds)):
            raise NotFound(f"ruleset {name} is not served here", metadata={"ruleset": name})

    def _serve_now(self, name: str) -> None:
        """Load what was just activated in this process before answering: a
        caller's next request here is served by it (other replicas pick it up
        on their next poll and answer RULESET_LOADING until then)."""
        if self.runtime is not None:
            self.runtime.refresh()

    def _previous(self, name: str) -> int:
        try:
            return self.admin.store.get(name, 0).version
        except NotFound:
            return 0

    def ValidateRuleset(self, request, context):
        _require(document=request.document)
        result = self.admin.validate(request.document)
        problems = [rules_pb2.Problem(path=p.path, message=p.message) for p in result.problems]
        if result.ok and result.document.kind not in self.kinds:
            problems.append(rules_pb2.Problem(path="kind", message=f"kind {result.document.kind} is not served here"))
        elif result.ok and request.kind and result.document.kind != request.kind:
            problems.append(rules_pb2.Problem(path="kind", message=f"the document is of kind {result.document.kind}"))
        return rules_pb2.ValidateRulesetResponse(valid=not problems, problems=problems)

    def CreateRulesetVersion(self, request, context):
        _require(document=request.document)
        if request.name:
            try:
                named = parse_yaml(request.document).get("name")
            except DocumentSyntaxError as exc:
                raise InvalidArgument(violations=[("document", str(exc))]) from None
            if named != request.name:
                raise InvalidArgument(violations=[("name", f"the document is named '{named}'")])
        record = self.admin.create(request.document, current_principal().name, request.comment,
                                   request.request_id or None, allowed_kinds=self.kinds)
        return rules_pb2.CreateRulesetVersionResponse(ruleset_version=version_message(record))

    def TestRuleset(self, request, context):
        _require(name=request.name)
        self._own(request.name)
        results = self.admin.test(request.name, request.version)
        return rules_pb2.TestRulesetResponse(
            passed=all(r.passed for r in results),
            results=[rules_pb2.ExampleResult(name=r.name, passed=r.passed, message=r.message) for r in results])

    def SimulateRuleset(self, request, context):
        _require(name=request.name, version=request.version)
        self._own(request.name)
        sample = [_sample_item(i, s) for i, s in enumerate(request.sample)]
        simulation = self.admin.simulate(request.name, request.version, sample)
        return rules_pb2.SimulateRulesetResponse(
            total=simulation.total, changed=simulation.changed, active_version=self._previous(request.name),
            transitions=[rules_pb2.Transition(outcome_key=t.key, from_outcome=t.before, to_outcome=t.after,
                                              count=t.count) for t in simulation.transitions],
            problems=[rules_pb2.Problem(path=p.path, message=p.message) for p in simulation.problems])

    def PublishRuleset(self, request, context):
        _require(name=request.name, version=request.version)
        self._own(request.name)
        previous = self._previous(request.name)
        record = self.admin.publish(request.name, request.version, current_principal().name, request.comment,
                                    request.request_id or None)
        self._serve_now(record.name)
        return rules_pb2.PublishRulesetResponse(ruleset_version=version_message(record), previous_version=previous)

    def RollbackRuleset(self, request, context):
        _require(name=request.name, to_version=request.to_version)
        self._own(request.name)
        previous = self._previous(request.name)
        record = self.admin.rollback(request.name, request.to_version, current_principal().name, request.comment,
                                     request.request_id or None)
        self._serve_now(record.name)
        return rules_pb2.RollbackRulesetResponse(ruleset_version=version_message(record), previous_version=previous)

    def GetRuleset(self, request, context):
        _require(name=request.name)
        if request.version < 0:
            raise InvalidArgument(violations=[("version", "must not be negative")])
        self._own(request.name)
        return rules_pb2.GetRulesetResponse(ruleset_version=version_message(
            self.admin.store.get(request.name, request.version)))

    def ListRulesetVersions(self, request, context):
        _require(name=request.name)
        size = page_size(request.page_size)
        self._own(request.name)
        token_scope = scope("rules.ListRulesetVersions", request.name)
        start = decode_token(request.page_token, token_scope, expect=int) or 0
        records = self.admin.store.list_versions(request.name)
        page = records[start:start + size]
        more = start + size < len(records)
        return rules_pb2.ListRulesetVersionsResponse(
            versions=[version_message(r) for r in page], next_page_token=encode_token(start + size, token_scope) if more else "")

    def ListRulesets(self, request, context):
        size = page_size(request.page_size)
        kinds = self.kinds & {request.kind} if request.kind else self.kinds
        token_scope = scope("rules.ListRulesets", sorted(kinds))
        start = decode_token(request.page_token, token_scope, expect=int) or 0
        active = {ref.name: ref for ref in self.admin.store.list_active(kinds)}
        names = self.admin.store.names(kinds)
        summaries = []
        for name in names[start:start + size]:
            latest = self.admin.store.list_versions(name)[0]
            summaries.append(rules_pb2.RulesetSummary(
                name=name, kind=latest.kind, latest_version=latest.version,
                active_version=active[name].version if name in active else 0))
        more = start + size < len(names)
        return rules_pb2.ListRulesetsResponse(rulesets=summaries,
                                              next_page_token=encode_token(start + size, token_scope) if more else "")
