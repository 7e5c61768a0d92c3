"""Every gRPC call the console makes, in one place.

The console never has a token of its own: each call carries the signed-in
person's bearer token, so the services authorize and record that person
(requested_by, decided_by, published_by, the audit actor). Channels carry no
credentials; only health checks (open to anyone, like a probe) go without a
token. Failures become BackendError with the google.rpc.ErrorInfo reason, so
the pages can say in words why something was refused.
"""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import grpc
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from kequn.assignment.v1 import assignment_pb2 as apb
from kequn.assignment.v1 import assignment_pb2_grpc as agrpc
from kequn.benefits.v1 import benefits_pb2 as bpb
from kequn.benefits.v1 import benefits_pb2_grpc as bgrpc
from kequn.common.v1 import audit_pb2 as cpb
from kequn.common.v1 import audit_pb2_grpc as cgrpc
from kequn.common.v1 import common_pb2
from kequn.rules.v1 import rules_pb2 as rpb
from kequn.rules.v1 import rules_pb2_grpc as rgrpc
from kequn.scoring.v1 import scoring_pb2 as spb
from kequn.scoring.v1 import scoring_pb2_grpc as sgrpc
from kequn.tiering.v1 import tiering_pb2 as tpb
from kequn.tiering.v1 import tiering_pb2_grpc as tgrpc
from services.common.client import dial
from services.common.logging import REQUEST_ID_HEADER

SERVICES = ("tiering", "assignment", "scoring", "benefits")
PAGE = 50


@dataclass
class BackendError(Exception):
    """A refused or failed call: the gRPC code, the ErrorInfo reason (the code
    name when the service sent none), the service's message, its metadata
    and any field violations."""
    code: str
    reason: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)
    violations: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"

    @classmethod
    def of(cls, exc: grpc.RpcError) -> "BackendError":
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        name = code.name if code else "UNKNOWN"
        message = (exc.details() if hasattr(exc, "details") else "") or ""
        reason, metadata, violations = name, {}, []
        try:
            status = rpc_status.from_call(exc)
        except Exception:  # noqa: BLE001 - a malformed status is still an error to show
            status = None
        for detail in (status.details if status else ()):
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, metadata = info.reason or name, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations = [(v.field, v.description) for v in bad.field_violations]
        return cls(name, reason, message[:500], metadata, violations)


class CallStats:
    """Counts of backend calls by (service, method, code), for /metrics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[tuple[str, str, str], int] = {}
        self.seconds: dict[tuple[str, str], float] = {}

    def add(self, service: str, method: str, code: str, seconds: float) -> None:
        with self._lock:
            key = (service, method, code)
            self.counts[key] = self.counts.get(key, 0) + 1
            self.seconds[(service, method)] = self.seconds.get((service, method), 0.0) + seconds

    def snapshot(self):
        with self._lock:
            return dict(self.counts), dict(self.seconds)


class Backend:
    """The four services, called as the person whose token is passed."""

    def __init__(self, targets: Mapping[str, str], timeout: float = 10.0, tls=None) -> None:
        self.targets = dict(targets)
        self.timeout = timeout
        self.stats = CallStats()
        self._channels = {s: dial(self.targets[s], None, tls=tls) for s in SERVICES}
        self.assignment = agrpc.AssignmentServiceStub(self._channels["assignment"])
        self.tiering = tgrpc.TieringServiceStub(self._channels["tiering"])
        self.scoring = sgrpc.ScoringServiceStub(self._channels["scoring"])
        self.benefits = bgrpc.BenefitsServiceStub(self._channels["benefits"])
        self.rules = {s: rgrpc.RuleStoreServiceStub(self._channels[s]) for s in SERVICES}

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()

    def _call(self, service: str, method, request, token: str, request_id: str | None = None,
              timeout: float | None = None):
        if not token:
            raise BackendError("UNAUTHENTICATED", "UNAUTHENTICATED", "not signed in")
        metadata = (("authorization", f"Bearer {token}"),
                    (REQUEST_ID_HEADER, request_id or uuid.uuid4().hex))
        name = getattr(method, "_method", b"")
        name = (name.decode() if isinstance(name, bytes) else str(name)).rsplit("/", 1)[-1] or "?"
        start = time.perf_counter()
        try:
            reply = method(request, metadata=metadata, timeout=max(timeout or 0, self.timeout))
        except grpc.RpcError as exc:
            error = BackendError.of(exc)
            self.stats.add(service, name, error.code, time.perf_counter() - start)
            raise error from None
        self.stats.add(service, name, "OK", time.perf_counter() - start)
        return reply

    # --- health (open to anyone, like a probe: no token) ---------------------------------
    def health(self, service: str) -> str:
        """SERVING, NOT_SERVING or UNREACHABLE."""
        try:
            reply = health_pb2_grpc.HealthStub(self._channels[service]).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=2)
        except grpc.RpcError:
            return "UNREACHABLE"
        return "SERVING" if reply.status == health_pb2.HealthCheckResponse.SERVING else "NOT_SERVING"

    # --- assignment -----------------------------------------------------------------------
    def get_book(self, token: str, staff_id: str, page_size: int = PAGE, page_token: str = "") -> apb.Book:
        return self._call("assignment", self.assignment.GetBook, apb.GetBookRequest(
            staff_id=staff_id, page_size=page_size, page_token=page_token), token)

    def list_change_requests(self, token: str, status: int = apb.CHANGE_REQUEST_STATUS_PENDING,
                             branch_id: str = "", customer_id: str = "", page_size: int = 20,
                             page_token: str = "") -> apb.ListChangeRequestsResponse:
        return self._call("assignment", self.assignment.ListChangeRequests, apb.ListChangeRequestsRequest(
            status=status, branch_id=branch_id, customer_id=customer_id, page_size=page_size,
            page_token=page_token), token)

    def decide_change_request(self, token: str, change_request_id: str, approve: bool, comment: str,
                              request_id: str) -> apb.ChangeRequest:
        method = self.assignment.ApproveChangeRequest if approve else self.assignment.RejectChangeRequest
        return self._call("assignment", method, apb.DecideChangeRequestRequest(
            change_request_id=change_request_id, comment=comment, request_id=request_id), token, request_id)

    def create_change_request(self, token: str, customer_id: str, action: str, from_staff_id: str,
                              to_staff_id: str, reason: str, request_id: str) -> apb.ChangeRequest:
        return self._call("assignment", self.assignment.CreateChangeRequest, apb.CreateChangeRequestRequest(
            customer_id=customer_id, action=apb.ChangeAction.Value("CHANGE_ACTION_" + action),
            from_staff_id=from_staff_id, to_staff_id=to_staff_id, reason=reason, request_id=request_id),
            token, request_id)

    def get_customer_managers(self, token: str, customer_id: str) -> apb.CustomerManagers:
        return self._call("assignment", self.assignment.GetCustomerManagers,
                          apb.GetCustomerManagersRequest(customer_id=customer_id), token)

    def list_staff(self, token: str, branch_id: str = "", role: str = "", page_size: int = PAGE,
                   page_token: str = "") -> apb.ListStaffResponse:
        return self._call("assignment", self.assignment.ListStaff, apb.ListStaffRequest(
            branch_id=branch_id, role=role, page_size=page_size, page_token=page_token), token)

    def list_lock_periods(self, token: str, branch_id: str, page_size: int = PAGE,
                          page_token: str = "") -> apb.ListLockPeriodsResponse:
        return self._call("assignment", self.assignment.ListLockPeriods, apb.ListLockPeriodsRequest(
            branch_id=branch_id, page_size=page_size, page_token=page_token), token)

    def get_group_book(self, token: str, staff_id: str, group: str, page_size: int = PAGE,
                       page_token: str = "") -> apb.GroupBook:
        return self._call("assignment", self.assignment.GetGroupBook, apb.GetGroupBookRequest(
            staff_id=staff_id, group=group, page_size=page_size, page_token=page_token), token)

    def list_unplaced(self, token: str, branch_id: str, page_size: int = PAGE,
                      page_token: str = "") -> apb.ListUnplacedResponse:
        return self._call("assignment", self.assignment.ListUnplaced, apb.ListUnplacedRequest(
            branch_id=branch_id, page_size=page_size, page_token=page_token), token)

    # --- tiering --------------------------------------------------------------------------
    def get_customer_tier(self, token: str, customer_id: str) -> tpb.TierDecision:
        return self._call("tiering", self.tiering.GetCustomerTier,
                          tpb.GetCustomerTierRequest(customer_id=customer_id), token)

    def list_tier_changes(self, token: str, customer_id: str, page_size: int = PAGE,
                          page_token: str = "") -> tpb.ListTierChangesResponse:
        return self._call("tiering", self.tiering.ListTierChanges, tpb.ListTierChangesRequest(
            customer_id=customer_id, page_size=page_size, page_token=page_token), token)

    def latest_tiers(self, token: str, max_changes: int = 200_000) -> tuple[dict[str, str], bool]:
        """Each customer's tier after the last change in the feed, read oldest first; and whether
        the whole feed was read (False: stopped at max_changes, the figures are partial)."""
        tiers: dict[str, str] = {}
        page_token, read = "", 0
        while read < max_changes:
            page = self.list_tier_changes(token, "", page_size=1000, page_token=page_token)
            for change in page.changes:
                tiers[change.customer_id] = change.to_tier
            read += len(page.changes)
            page_token = page.next_page_token
            if not page_token:
                return tiers, True
        return tiers, False

    # --- benefits -------------------------------------------------------------------------
    def list_entitlements(self, token: str, customer_id: str) -> bpb.ListEntitlementsResponse:
        return self._call("benefits", self.benefits.ListEntitlements,
                          bpb.ListEntitlementsRequest(customer_id=customer_id), token)

    def list_benefits(self, token: str, include_inactive: bool = False, page_size: int = PAGE,
                      page_token: str = "") -> bpb.ListBenefitsResponse:
        return self._call("benefits", self.benefits.ListBenefits, bpb.ListBenefitsRequest(
            include_inactive=include_inactive, page_size=page_size, page_token=page_token), token)

    def all_benefits(self, token: str, limit: int = 1000) -> list[bpb.Benefit]:
        out, page_token = [], ""
        while len(out) < limit:
            page = self.list_benefits(token, page_size=200, page_token=page_token)
            out.extend(page.benefits)
            page_token = page.next_page_token
            if not page_token:
                break
        return out[:limit]

    def get_benefit(self, token: str, benefit_id: str) -> bpb.Benefit:
        return self._call("benefits", self.benefits.GetBenefit,
                          bpb.GetBenefitRequest(benefit_id=benefit_id), token).benefit

    def get_inventory(self, token: str, benefit_id: str) -> bpb.Inventory:
        return self._call("benefits", self.benefits.GetInventory,
                          bpb.GetInventoryRequest(benefit_id=benefit_id), token).inventory

    def get_budget(self, token: str, group: str, period: str) -> bpb.Budget:
        return self._call("benefits", self.benefits.GetBudget,
                          bpb.GetBudgetRequest(group=group, period=period), token).budget

    # --- scoring --------------------------------------------------------------------------
    def list_scores(self, token: str, period_id: str, role: str = "", branch_id: str = "",
                    finalized_only: bool = False, page_size: int = PAGE,
                    page_token: str = "") -> spb.ListScoresResponse:
        return self._call("scoring", self.scoring.ListScores, spb.ListScoresRequest(
            period_id=period_id, role=role, branch_id=branch_id, finalized_only=finalized_only,
            page_size=page_size, page_token=page_token), token)

    def all_scores(self, token: str, period_id: str, finalized_only: bool, role: str = "",
                   branch_id: str = "") -> Iterator[spb.StaffScore]:
        page_token = ""
        while True:
            page = self.list_scores(token, period_id, role, branch_id, finalized_only, 500, page_token)
            yield from page.scores
            page_token = page.next_page_token
            if not page_token:
                return

    def get_score(self, token: str, staff_id: str, period_id: str) -> spb.StaffScore:
        return self._call("scoring", self.scoring.GetScore,
                          spb.GetScoreRequest(staff_id=staff_id, period_id=period_id), token)

    # --- rule store (on every service's port, for its kinds) -----------------------------
    def list_rulesets(self, token: str, service: str) -> list[rpb.RulesetSummary]:
        out, page_token = [], ""
        while True:
            page = self._call(service, self.rules[service].ListRulesets,
                              rpb.ListRulesetsRequest(page_size=100, page_token=page_token), token)
            out.extend(page.rulesets)
            page_token = page.next_page_token
            if not page_token:
                return out

    def list_ruleset_versions(self, token: str, service: str, name: str, page_size: int = PAGE,
                              page_token: str = "") -> rpb.ListRulesetVersionsResponse:
        return self._call(service, self.rules[service].ListRulesetVersions, rpb.ListRulesetVersionsRequest(
            name=name, page_size=page_size, page_token=page_token), token)

    def get_ruleset(self, token: str, service: str, name: str, version: int = 0) -> rpb.RulesetVersion:
        return self._call(service, self.rules[service].GetRuleset,
                          rpb.GetRulesetRequest(name=name, version=version), token).ruleset_version

    def create_ruleset_version(self, token: str, service: str, name: str, document: str, comment: str,
                               request_id: str) -> rpb.RulesetVersion:
        return self._call(service, self.rules[service].CreateRulesetVersion, rpb.CreateRulesetVersionRequest(
            name=name, document=document, comment=comment, request_id=request_id), token,
            request_id).ruleset_version

    def test_ruleset(self, token: str, service: str, name: str, version: int) -> rpb.TestRulesetResponse:
        return self._call(service, self.rules[service].TestRuleset,
                          rpb.TestRulesetRequest(name=name, version=version), token)

    def simulate_ruleset(self, token: str, service: str, name: str, version: int,
                         sample: list[dict]) -> rpb.SimulateRulesetResponse:
        items = []
        for item in sample:
            s = struct_pb2.Struct()
            s.update(item)
            items.append(s)
        return self._call(service, self.rules[service].SimulateRuleset, rpb.SimulateRulesetRequest(
            name=name, version=version, sample=items), token)

    def publish_ruleset(self, token: str, service: str, name: str, version: int, comment: str,
                        request_id: str) -> rpb.PublishRulesetResponse:
        return self._call(service, self.rules[service].PublishRuleset, rpb.PublishRulesetRequest(
            name=name, version=version, comment=comment, request_id=request_id), token, request_id)

    # --- rule governance: releases, population impact, explanations -----------------------
    def ruleset_summary(self, token: str, service: str, name: str) -> rpb.RulesetSummary | None:
        """The ruleset's line in ListRulesets (its release policy: four eyes or not)."""
        return next((r for r in self.list_rulesets(token, service) if r.name == name), None)

    def list_releases(self, token: str, service: str, name: str = "", page_size: int = 20,
                      page_token: str = "") -> rpb.ListReleasesResponse:
        return self._call(service, self.rules[service].ListReleases, rpb.ListReleasesRequest(
            name=name, page_size=page_size, page_token=page_token), token)

    def request_release(self, token: str, service: str, name: str, version: int, effective_from, comment: str,
                        request_id: str) -> rpb.Release:
        """effective_from: an aware datetime, or None for "on approval"."""
        request = rpb.RequestReleaseRequest(name=name, version=version, comment=comment, request_id=request_id)
        if effective_from is not None:
            request.effective_from.FromDatetime(effective_from)
        return self._call(service, self.rules[service].RequestRelease, request, token, request_id)

    def decide_release(self, token: str, service: str, release_id: str, approve: bool,
                       comment: str) -> rpb.Release:
        """Approve, or reject (a PENDING release) / cancel (an APPROVED one not yet in force)."""
        stub = self.rules[service]
        return self._call(service, stub.ApproveRelease if approve else stub.RejectRelease,
                          rpb.DecideReleaseRequest(release_id=release_id, comment=comment), token)

    def simulate_population(self, token: str, service: str, name: str, version: int, branch_id: str = "",
                            include_changes: bool = False, timeout: float = 120.0, max_changes: int = 200_000
                            ) -> tuple[rpb.PopulationSimulation, list[rpb.SimulatedItem], bool]:
        """Waits for the stream's last message (progress before it is dropped): the result, the
        changed items (with include_changes, at most max_changes kept) and whether all were kept."""
        if not token:
            raise BackendError("UNAUTHENTICATED", "UNAUTHENTICATED", "not signed in")
        metadata = (("authorization", f"Bearer {token}"), (REQUEST_ID_HEADER, uuid.uuid4().hex))
        start, changes, complete, result = time.perf_counter(), [], True, None
        try:
            for message in self.rules[service].SimulatePopulation(rpb.SimulatePopulationRequest(
                    name=name, version=version, branch_id=branch_id, include_changes=include_changes),
                    metadata=metadata, timeout=max(timeout, self.timeout)):
                if message.done:
                    result = message.result
                for item in message.changes:
                    if len(changes) < max_changes:
                        changes.append(item)
                    else:
                        complete = False
        except grpc.RpcError as exc:
            error = BackendError.of(exc)
            self.stats.add(service, "SimulatePopulation", error.code, time.perf_counter() - start)
            raise error from None
        self.stats.add(service, "SimulatePopulation", "OK", time.perf_counter() - start)
        if result is None:
            raise BackendError("UNAVAILABLE", "UNAVAILABLE", "the simulation ended without a result")
        return result, changes, complete

    def simulate_downstream(self, token: str, service: str, outcomes: list[dict], timeout: float = 120.0):
        """The changed customers' simulated outcomes to assignment (books) or benefits (entitlements,
        budgets) in a dry run, in batches of 1,000 like `kequn rules simulate --impact`."""
        stub, request_type = ((self.assignment, apb.SimulateTierChangesRequest) if service == "assignment"
                              else (self.benefits, bpb.SimulateTierChangesRequest))

        def batches():
            for begin in range(0, len(outcomes), 1000):
                yield request_type(outcomes=[common_pb2.SimulatedOutcome(**o) for o in outcomes[begin:begin + 1000]])
        return self._call(service, stub.SimulateTierChanges, batches(), token, timeout=timeout)

    def explain_decision(self, token: str, decision_id: str) -> tpb.DecisionExplanation:
        return self._call("tiering", self.tiering.ExplainDecision,
                          tpb.ExplainDecisionRequest(decision_id=decision_id), token)

    # --- audit trail (kequn.common.v1.AuditService, on every service's port) ---------------
    def list_service_audit(self, token: str, service: str, page_size: int = PAGE, page_token: str = "",
                           actor: str = "", action: str = "", subject: str = "") -> cpb.ListAuditEventsResponse:
        return self._call(service, cgrpc.AuditServiceStub(self._channels[service]).ListAuditEvents,
                          cpb.ListAuditEventsRequest(page_size=page_size, page_token=page_token, actor=actor,
                                                     action=action, subject=subject), token)

    def verify_audit_chain(self, token: str, service: str) -> cpb.VerifyAuditChainResponse:
        """Bounded by the service (our timeout is its deadline): chains it had no time for come back
        NOT_CHECKED."""
        return self._call(service, cgrpc.AuditServiceStub(self._channels[service]).VerifyAuditChain,
                          cpb.VerifyAuditChainRequest(), token)
