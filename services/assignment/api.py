"""The gRPC servicer: proto ↔ plain values. Errors are services.common.errors,
mapped to status codes by the server's error interceptor."""
from __future__ import annotations

import json
from datetime import datetime, timezone

from google.protobuf.timestamp_pb2 import Timestamp

from kequn.assignment.v1 import assignment_pb2 as pb
from kequn.assignment.v1 import assignment_pb2_grpc
from services.common.audit import canonical_json
from services.common.auth import current_principal
from services.common.errors import InvalidArgument

from .service import AssignmentService, RunResult

SERVICE_NAME = "kequn.assignment.v1.AssignmentService"

_LEVELS = {pb.BRANCH_LEVEL_BRANCH: "BRANCH", pb.BRANCH_LEVEL_SUB_BRANCH: "SUB_BRANCH",
           pb.BRANCH_LEVEL_OUTLET: "OUTLET"}
_LEVEL_OUT = {v: k for k, v in _LEVELS.items()}
_ACTIONS = {pb.CHANGE_ACTION_ADD: "ADD", pb.CHANGE_ACTION_REMOVE: "REMOVE", pb.CHANGE_ACTION_TRANSFER: "TRANSFER"}
_ACTION_OUT = {v: k for k, v in _ACTIONS.items()}
_STATUS_OUT = {"PENDING": pb.CHANGE_REQUEST_STATUS_PENDING, "APPROVED": pb.CHANGE_REQUEST_STATUS_APPROVED,
               "REJECTED": pb.CHANGE_REQUEST_STATUS_REJECTED, "EXPIRED": pb.CHANGE_REQUEST_STATUS_EXPIRED,
               "SUPERSEDED": pb.CHANGE_REQUEST_STATUS_SUPERSEDED}
_STATUS_IN = {v: k for k, v in _STATUS_OUT.items()}
_LOCK_OUT = {"OPEN": pb.LOCK_PERIOD_STATUS_OPEN, "CLOSED": pb.LOCK_PERIOD_STATUS_CLOSED}
_KIND_OUT = {"TIER": pb.ASSIGNMENT_KIND_TIER, "GROUP": pb.ASSIGNMENT_KIND_GROUP}
# The range google.protobuf.Timestamp allows (timestamp.proto).
MIN_SECONDS, MAX_SECONDS, MAX_NANOS = -62_135_596_800, 253_402_300_799, 999_999_999


def ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    out = Timestamp()
    out.FromDatetime(value)
    return out


def instant(request, field: str) -> datetime | None:
    """An optional google.protobuf.Timestamp of the request as an aware datetime;
    outside 0001-01-01..9999-12-31 or with nanos outside 0..999,999,999 it is
    INVALID_ARGUMENT naming the field (protobuf would fail deep inside)."""
    if not request.HasField(field):
        return None
    value = getattr(request, field)
    if not 0 <= value.nanos <= MAX_NANOS:
        raise InvalidArgument(violations=[(f"{field}.nanos", f"must be between 0 and {MAX_NANOS}")])
    if not MIN_SECONDS <= value.seconds <= MAX_SECONDS:
        raise InvalidArgument(violations=[(f"{field}.seconds", "must be within 0001-01-01T00:00:00Z and "
                                                                "9999-12-31T23:59:59Z")])
    return value.ToDatetime(tzinfo=timezone.utc)


def _json_or_empty(value) -> str:
    """AuditEvent.before_json/after_json: empty when not applicable."""
    return "" if value is None else canonical_json(value)


def run_pb(r: RunResult) -> pb.AssignmentRun:
    return pb.AssignmentRun(
        run_id=r.run_id, assigned=r.assigned, moved=r.moved, unchanged=r.unchanged, removed=r.removed,
        suggestions_created=r.suggestions_created, branch_id=r.branch_id, dry_run=r.dry_run,
        started_at=ts(r.started_at), finished_at=ts(r.finished_at),
        unplaced=[unplaced_pb(u) for u in r.unplaced])


def unplaced_pb(u: dict) -> pb.Unplaced:
    tried = u.get("tried") or ()
    return pb.Unplaced(customer_id=u["customer_id"], reason=u["reason"], tier=u.get("tier", ""), role=u["role"],
                       branch_id=u["branch_id"], since=ts(u.get("since")),
                       tried_branch_ids=tried.split(",") if isinstance(tried, str) and tried else list(tried))


def branch_pb(r: dict) -> pb.Branch:
    return pb.Branch(branch_id=r["branch_id"], parent_branch_id=r["parent_branch_id"] or "", name=r["name"],
                     level=_LEVEL_OUT[r["level"]])


def staff_pb(r: dict) -> pb.Staff:
    return pb.Staff(staff_id=r["staff_id"], branch_id=r["branch_id"], role=r["role"], active=r["active"],
                    name=r["name"])


def claim_pb(claim: dict) -> pb.GroupClaim:
    return pb.GroupClaim(staff_id=claim["staff_id"], group=claim["group_code"],
                         selector=json.loads(claim["selector_json"]), request_id=claim.get("request_id") or "",
                         claim_id=claim["claim_id"], claimed_at=ts(claim["claimed_at"]),
                         scope_branch_id=claim.get("scope_branch_id") or "")


def change_request_pb(r: dict) -> pb.ChangeRequest:
    return pb.ChangeRequest(
        change_request_id=r["change_request_id"], customer_id=r["customer_id"], action=_ACTION_OUT[r["action"]],
        from_staff_id=r["from_staff_id"] or "", to_staff_id=r["to_staff_id"] or "", reason=r["reason"] or "",
        status=_STATUS_OUT[r["status"]], requested_by=r["requested_by"], decided_by=r.get("decided_by") or "",
        decision_comment=r.get("decision_comment") or "", suggested=bool(r["suggested"]),
        created_at=ts(r["created_at"]), decided_at=ts(r.get("decided_at")), expires_at=ts(r["expires_at"]),
        branch_id=r["branch_id"], period_id=r.get("period_id") or "", request_id=r.get("request_id") or "",
        cause=r.get("cause") or "", superseded_by=r.get("superseded_by") or "")


def lock_period_pb(r: dict) -> pb.LockPeriod:
    return pb.LockPeriod(period_id=r["period_id"], branch_id=r["branch_id"], starts_on=r["starts_on"],
                         ends_on=r["ends_on"], status=_LOCK_OUT[r["status"]], opened_at=ts(r.get("opened_at")),
                         closed_at=ts(r.get("closed_at")), in_force=bool(r.get("in_force")))


class AssignmentApi(assignment_pb2_grpc.AssignmentServiceServicer):
    def __init__(self, service: AssignmentService):
        self.service = service

    def UpsertBranch(self, request, context):
        level = _LEVELS.get(request.level)
        if level is None:
            raise InvalidArgument(violations=[("level", "BRANCH, SUB_BRANCH or OUTLET")])
        row, created = self.service.upsert_branch(current_principal().name, request.branch_id,
                                                  request.parent_branch_id, request.name, level)
        return pb.UpsertBranchResponse(branch=branch_pb(row), created=created)

    def UpsertStaff(self, request, context):
        row, created = self.service.upsert_staff(current_principal().name, request.staff_id, request.branch_id,
                                                 request.role, request.active, request.name)
        return pb.UpsertStaffResponse(staff=staff_pb(row), created=created)

    def RunAssignment(self, request, context):
        return run_pb(self.service.run_assignment(current_principal().name, request.branch_id, request.dry_run,
                                                  request.request_id))

    def GetBook(self, request, context):
        b = self.service.get_book(request.staff_id, request.page_size, request.page_token)
        return pb.Book(staff_id=b.staff_id, role=b.role, size=b.size, initial_size=b.initial_size,
                       max_size=b.max_size, customer_ids=b.customer_ids, next_page_token=b.next_page_token,
                       branch_id=b.branch_id, locked=b.locked)

    def GetCustomerManagers(self, request, context):
        found = self.service.customer_managers(request.customer_id)
        return pb.CustomerManagers(customer_id=request.customer_id, assignments=[
            pb.Assignment(staff_id=m.staff_id, role=m.role, kind=_KIND_OUT[m.kind], since=ts(m.since),
                          group=m.group) for m in found])

    def ClaimGroup(self, request, context):
        claim, covered = self.service.claim_group(current_principal().name, request.staff_id, request.group,
                                                  dict(request.selector), request.request_id)
        return pb.ClaimGroupResponse(claim=claim_pb(claim), customers=covered)

    def OpenLockPeriod(self, request, context):
        row = self.service.open_lock_period(current_principal().name, request.period_id, request.branch_id,
                                            request.starts_on, request.ends_on)
        return pb.OpenLockPeriodResponse(lock_period=lock_period_pb(row))

    def CloseLockPeriod(self, request, context):
        row, pending = self.service.close_lock_period(current_principal().name, request.period_id,
                                                      request.branch_id)
        return pb.CloseLockPeriodResponse(lock_period=lock_period_pb(row), suggestions_pending=pending)

    def CreateChangeRequest(self, request, context):
        action = _ACTIONS.get(request.action)
        if action is None:
            raise InvalidArgument(violations=[("action", "ADD, REMOVE or TRANSFER")])
        row = self.service.create_change_request(current_principal().name, request.customer_id, action,
                                                 request.from_staff_id, request.to_staff_id, request.reason,
                                                 request.request_id)
        return change_request_pb(row)

    def _decide(self, request, approve: bool):
        principal = current_principal()
        return change_request_pb(self.service.decide(principal.name, "admin" in principal.roles,
                                                     request.change_request_id, approve, request.comment,
                                                     request.request_id))

    def ApproveChangeRequest(self, request, context):
        return self._decide(request, True)

    def RejectChangeRequest(self, request, context):
        return self._decide(request, False)

    def ListChangeRequests(self, request, context):
        rows, token = self.service.list_change_requests(_STATUS_IN.get(request.status, ""), request.branch_id,
                                                        request.customer_id, request.page_size, request.page_token)
        return pb.ListChangeRequestsResponse(change_requests=[change_request_pb(r) for r in rows],
                                             next_page_token=token)

    def ListAuditEvents(self, request, context):
        start, end = instant(request, "start_time"), instant(request, "end_time")
        if start is not None and end is not None and end < start:
            raise InvalidArgument(violations=[("end_time", "before start_time")])
        rows, token = self.service.list_audit_events(request.page_size, request.page_token, request.subject,
                                                     request.actor, request.action, start, end)
        return pb.ListAuditEventsResponse(audit_events=[pb.AuditEvent(
            event_id=str(r["event_id"]), at=ts(r["at"]), actor=r["actor"], action=r["action"],
            subject=r["subject"], before_json=_json_or_empty(r["before"]), after_json=_json_or_empty(r["after"]),
            reason=r["reason"], request_id=r["request_id"]) for r in rows], next_page_token=token)

    def ListBranches(self, request, context):
        rows, token = self.service.list_branches(request.branch_id, request.page_size, request.page_token)
        return pb.ListBranchesResponse(branches=[branch_pb(r) for r in rows], next_page_token=token)

    def ListStaff(self, request, context):
        rows, token = self.service.list_staff(request.branch_id, request.role, request.page_size, request.page_token)
        return pb.ListStaffResponse(staff=[staff_pb(r) for r in rows], next_page_token=token)

    def ListLockPeriods(self, request, context):
        rows, token = self.service.list_lock_periods(request.branch_id, request.page_size, request.page_token)
        return pb.ListLockPeriodsResponse(lock_periods=[lock_period_pb(r) for r in rows], next_page_token=token)

    def GetGroupBook(self, request, context):
        claims, size, ids, token = self.service.get_group_book(request.staff_id, request.group, request.page_size,
                                                               request.page_token)
        return pb.GroupBook(staff_id=request.staff_id, group=request.group, claims=[claim_pb(c) for c in claims],
                            size=size, customer_ids=ids, next_page_token=token)

    def ListUnplaced(self, request, context):
        rows, token = self.service.list_unplaced(request.branch_id, request.page_size, request.page_token)
        return pb.ListUnplacedResponse(unplaced=[unplaced_pb(r) for r in rows], next_page_token=token)
    def SimulateTierChanges(self, request_iterator, context):
        """Dry run of a tier candidate's impact on the books (impact.py)."""
        from .impact import SimulatedCustomer, book_impact
        simulated = [SimulatedCustomer(o.customer_id, o.tier) for message in request_iterator
                     for o in message.outcomes if o.tier]
        impact = book_impact(self.service, simulated)
        base, cand = impact.baseline, impact.candidate

        def rows(a, b):
            return [pb.BookImpactRow(branch_id=k[0], role=k[1], reason=k[2] if len(k) > 2 else "",
                                     baseline=a.get(k, 0), candidate=b.get(k, 0))
                    for k in sorted(set(a) | set(b)) if a.get(k, 0) != b.get(k, 0) or b.get(k, 0)]
        return pb.SimulateTierChangesResponse(
            unplaced=rows(base.unplaced, cand.unplaced), new_manager=rows(base.new_manager, cand.new_manager),
            full_books=[pb.FullBook(**b) for b in impact.full_books], simulated=impact.simulated,
            unknown=impact.unknown)
