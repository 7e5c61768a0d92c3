"""kequn.rules.v1.RuleStoreService: the rule store of one service's kinds."""
from __future__ import annotations

from datetime import datetime, timezone

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from kequn.rules.v1 import rules_pb2, rules_pb2_grpc
from services.common.auth import current_principal
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.paging import decode_token, encode_token, page_size, scope

from .admin import RuleAdmin, problems_error
from .document import DocumentSyntaxError, parse_yaml
from .kinds import Problem
from .releases import STATUSES, Release
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


_RELEASE_STATUS = {name: getattr(rules_pb2, f"RELEASE_STATUS_{name}") for name in STATUSES}
_RELEASE_STATUS_NAME = {number: name for name, number in _RELEASE_STATUS.items()}


def release_message(release: Release) -> rules_pb2.Release:
    return rules_pb2.Release(
        release_id=release.release_id, name=release.name, version=release.version,
        status=_RELEASE_STATUS[release.status], requested_by=release.requested_by, decided_by=release.decided_by,
        effective_from=_timestamp(release.effective_from), comment=release.comment,
        decision_comment=release.decision_comment, requested_at=_timestamp(release.requested_at),
        decided_at=_timestamp(release.decided_at), activated_at=_timestamp(release.activated_at))


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

    def __init__(self, admin: RuleAdmin, served_kinds: set[str], runtime=None, population=None):
        self.admin = admin
        self.kinds = served_kinds
        self.runtime = runtime  # RuleRuntime of this process: Publish/Rollback answer once it serves them
        self.population = population  # PopulationSimulator of this service, if it stores one

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
                active_version=active[name].version if name in active else 0,
                four_eyes=self.admin.four_eyes(name, latest.kind)))
        more = start + size < len(names)
        return rules_pb2.ListRulesetsResponse(rulesets=summaries,
                                              next_page_token=encode_token(start + size, token_scope) if more else "")

    def SimulatePopulation(self, request, context):
        _require(name=request.name, version=request.version)
        self._own(request.name)
        if self.population is None:
            raise FailedPrecondition("this service stores no population to simulate against",
                                     reason="NO_POPULATION", metadata={"ruleset": request.name})
        yield from self.population.stream(request, context)

    # -- releases (four eyes, effective dates) --------------------------------
    def _own_release(self, release_id: str) -> None:
        _require(release_id=release_id)
        self._own(self.admin.releases.get(release_id).name)

    def RequestRelease(self, request, context):
        _require(name=request.name, version=request.version)
        self._own(request.name)
        effective = request.effective_from.ToDatetime(tzinfo=timezone.utc) \
            if request.HasField("effective_from") else None
        release = self.admin.request_release(request.name, request.version, effective, current_principal().name,
                                             request.comment, request.request_id or None)
        return release_message(release)

    def ApproveRelease(self, request, context):
        self._own_release(request.release_id)
        release = self.admin.approve_release(request.release_id, current_principal().name, request.comment)
        if release.status == "ACTIVE":
            self._serve_now(release.name)
        return release_message(release)

    def RejectRelease(self, request, context):
        self._own_release(request.release_id)
        release = self.admin.reject_release(request.release_id, current_principal().name, request.comment)
        if release.status == "CANCELLED":
            self._serve_now(release.name)  # this process drops it at once; other replicas at their next poll
        return release_message(release)

    def ListReleases(self, request, context):
        size = page_size(request.page_size)
        if request.status and request.status not in _RELEASE_STATUS_NAME:
            raise InvalidArgument(violations=[("status", "unknown release status")])
        if request.name:
            self._own(request.name)
        names = [request.name] if request.name else self.admin.store.names(self.kinds)
        status = _RELEASE_STATUS_NAME.get(request.status, "")
        token_scope = scope("rules.ListReleases", request.name, status, sorted(self.kinds))
        start = decode_token(request.page_token, token_scope, expect=int) or 0
        if start < 0:
            raise InvalidArgument(violations=[("page_token", "not a page token this list returned")])
        found = self.admin.releases.list(names, status, start, size + 1)
        return rules_pb2.ListReleasesResponse(
            releases=[release_message(r) for r in found[:size]],
            next_page_token=encode_token(start + size, token_scope) if len(found) > size else "")

    def SetReleasePolicy(self, request, context):
        _require(name=request.name, comment=request.comment)
        self._own(request.name)
        self.admin.releases.set_policy(request.name, request.four_eyes, current_principal().name, request.comment)
        return rules_pb2.SetReleasePolicyResponse(name=request.name, four_eyes=self.admin.four_eyes(request.name))
