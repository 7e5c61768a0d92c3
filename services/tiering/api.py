"""The gRPC servicer: proto <-> domain values. Errors are raised as
services.common.errors and mapped to status codes by the server."""
from __future__ import annotations

import threading

from google.protobuf.timestamp_pb2 import Timestamp

from kequn.common.v1 import common_pb2
from kequn.tiering.v1 import tiering_pb2, tiering_pb2_grpc
from services.common.bounds import item_error
from services.common.errors import InvalidArgument
from services.common.grpc_errors import sent_strings, to_status_proto

from .batching import read_ahead_chunks
from .domain import Holding, Snapshot
from .service import EvaluateRequest, TieringService
from .store import Change, StoredDecision

SERVICE_NAME = "kequn.tiering.v1.TieringService"
BATCH_CHUNK = 500           # customers evaluated and written per transaction
MAX_BATCH_MESSAGE = 5_000   # requests per EvaluateCustomerBatches message (documented in the proto)
WATCH_PAGE = 500
WATCH_POLL_SECONDS = 0.2    # other processes' appends are seen within this

CHANGE_KINDS = {
    "NEW": tiering_pb2.CHANGE_KIND_NEW,
    "UPGRADE": tiering_pb2.CHANGE_KIND_UPGRADE,
    "DOWNGRADE": tiering_pb2.CHANGE_KIND_DOWNGRADE,
    "UNCHANGED": tiering_pb2.CHANGE_KIND_UNCHANGED,
}


def snapshot_from_proto(c: tiering_pb2.CustomerSnapshot) -> Snapshot:
    return Snapshot(
        customer_id=c.customer_id, as_of=c.as_of, annual_avg_aum_fen=c.annual_avg_aum_fen,
        monthly_avg_aum_fen=c.monthly_avg_aum_fen, point_in_time_aum_fen=c.point_in_time_aum_fen,
        previous_annual_avg_aum_fen=c.previous_annual_avg_aum_fen if c.HasField("previous_annual_avg_aum_fen")
        else None,
        holdings=tuple(Holding(h.branch_id, h.aum_fen) for h in c.holdings), age=c.age,
        has_personal_loan=c.has_personal_loan, card_level=c.card_level,
        annual_card_spend_fen=c.annual_card_spend_fen, payroll_employer_id=c.payroll_employer_id,
        is_merchant=c.is_merchant, has_social_security_card=c.has_social_security_card,
        mobile_banking_active=c.mobile_banking_active, car_owner=c.car_owner,
        has_school_age_child=c.has_school_age_child, last_customer_txn_date=c.last_customer_txn_date,
        other_bank_vip=c.other_bank_vip, quality_mortgage=c.quality_mortgage, attributes=dict(c.attributes),
    )


def request_from_proto(r: tiering_pb2.EvaluateCustomerRequest) -> EvaluateRequest:
    return EvaluateRequest(snapshot_from_proto(r.customer), r.dry_run, r.request_id)


def _timestamp(value) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def decision_to_proto(stored: StoredDecision, dry_run: bool = False,
                      shared: dict | None = None) -> tiering_pb2.TierDecision:
    """``shared`` (one dict per chunk) keeps the parts customers have in
    common (ruleset, decision time, each fired rule) built once."""
    d = stored.decision
    shared = {} if shared is None else shared
    ruleset = shared.get((d.ruleset, d.ruleset_version))
    if ruleset is None:
        ruleset = shared[(d.ruleset, d.ruleset_version)] = common_pb2.RulesetRef(name=d.ruleset,
                                                                                 version=d.ruleset_version)
    decided_at = shared.get(stored.decided_at)
    if decided_at is None:
        decided_at = shared[stored.decided_at] = _timestamp(stored.decided_at)
    fired = []
    for rule in d.fired:
        message = shared.get(rule)
        if message is None:
            message = shared[rule] = common_pb2.FiredRule(rule_id=rule[0], ruleset=rule[1], version=rule[2])
        fired.append(message)
    return tiering_pb2.TierDecision(
        customer_id=d.customer_id, tier=d.tier, previous_tier=d.previous_tier, change=CHANGE_KINDS[d.change],
        segments=d.segments, flags=d.flags, home_branch_id=d.home_branch_id,
        next_tier=tiering_pb2.NextTier(tier=d.next_tier, gap_fen=d.gap_fen),
        downgrade_pending=d.downgrade_pending, ruleset=ruleset, fired_rules=fired,
        decision_id=stored.decision_id, decided_at=decided_at, cursor=stored.cursor, dry_run=dry_run, as_of=d.as_of,
        group_keys=dict(stored.group_keys),
    )


def change_to_proto(c: Change) -> tiering_pb2.TierChange:
    return tiering_pb2.TierChange(
        cursor=c.cursor, customer_id=c.customer_id, from_tier=c.from_tier, to_tier=c.to_tier,
        change=CHANGE_KINDS[c.change], segments=c.segments, flags=c.flags, home_branch_id=c.home_branch_id,
        ruleset=common_pb2.RulesetRef(name=c.ruleset, version=c.ruleset_version),
        changed_at=_timestamp(c.changed_at), decision_id=c.decision_id,
        annual_avg_aum_fen=c.annual_avg_aum_fen, has_personal_loan=c.has_personal_loan,
        annual_card_spend_fen=c.annual_card_spend_fen, card_level=c.card_level,
        previous_segments=c.previous_segments, previous_flags=c.previous_flags,
        previous_home_branch_id=c.previous_home_branch_id, as_of=c.as_of, traceparent=c.traceparent,
        group_keys=dict(c.group_keys),
    )


class TieringApi(tiering_pb2_grpc.TieringServiceServicer):
    def __init__(self, service: TieringService, stopping: threading.Event | None = None):
        self.service = service
        self.stopping = stopping or threading.Event()

    def EvaluateCustomer(self, request, context):
        return decision_to_proto(self.service.evaluate(request_from_proto(request)), request.dry_run)

    def ExplainDecision(self, request, context):
        from .explain import explain
        from .explain_api import explanation_to_proto
        e = explain(self.service.session_factory, self.service.rules, request.decision_id)
        return explanation_to_proto(e, decision_to_proto(e.stored))

    def EvaluateCustomers(self, request_iterator, context):
        # The read-ahead holds at most two chunks: gRPC's flow control stops
        # the client when we fall behind, so memory stays flat.
        for chunk in read_ahead_chunks(request_iterator, BATCH_CHUNK):
            if not context.is_active():
                return
            yield from self._evaluate_chunk(chunk)

    def EvaluateCustomerBatches(self, request_iterator, context):
        # One request message at a time (no read-ahead): the client's batch is
        # already a chunk, and gRPC's flow control holds back the next message
        # until this one is answered, so memory stays flat at one message.
        for message in request_iterator:
            if len(message.requests) > MAX_BATCH_MESSAGE:
                raise InvalidArgument(
                    f"at most {MAX_BATCH_MESSAGE} requests per message",
                    violations=[("requests", f"{len(message.requests)} requests, at most {MAX_BATCH_MESSAGE}")])
            if not context.is_active():
                return
            decisions = []
            for start in range(0, len(message.requests), BATCH_CHUNK):
                decisions.extend(self._evaluate_chunk(message.requests[start:start + BATCH_CHUNK]))
            yield tiering_pb2.EvaluateCustomerBatchesResponse(decisions=decisions)

    def _evaluate_chunk(self, requests) -> list[tiering_pb2.TierDecision]:
        """One transaction's worth of batch requests -> TierDecisions in order
        (a refused item carries its error)."""
        # Items out of their declared bounds (services/common/limits.py) answer their error in place.
        refused = [item_error(r) for r in requests]
        outcomes = iter(self.service.evaluate_batch_chunk(
            [request_from_proto(r) for r, e in zip(requests, refused) if e is None]))
        shared: dict = {}
        answers = []
        for r, e in zip(requests, refused):
            if e is not None:
                answers.append(tiering_pb2.TierDecision(customer_id=r.customer.customer_id[:64], dry_run=r.dry_run,
                                                        error=to_status_proto(e)))
                continue
            o = next(outcomes)
            answers.append(tiering_pb2.TierDecision(customer_id=o.customer_id, dry_run=o.dry_run,
                                                    error=to_status_proto(o.error, sent_strings(r)))
                           if o.error is not None
                           else decision_to_proto(o.stored, o.dry_run, shared))
        return answers

    def GetCustomerTier(self, request, context):
        return decision_to_proto(self.service.get_customer_tier(request.customer_id))

    def ListTierChanges(self, request, context):
        changes, token = self.service.list_changes(request.customer_id, request.after_cursor, request.page_size,
                                                   request.page_token)
        return tiering_pb2.ListTierChangesResponse(changes=[change_to_proto(c) for c in changes],
                                                   next_page_token=token)

    def WatchTierChanges(self, request, context):
        if request.after_cursor < 0:
            raise InvalidArgument(violations=[("after_cursor", "must not be negative")])
        cursor = request.after_cursor
        while context.is_active() and not self.stopping.is_set():
            page = self.service.changes_after(cursor, WATCH_PAGE)
            for change in page:
                yield change_to_proto(change)
                cursor = change.cursor
            if len(page) < WATCH_PAGE:
                self.service.wait_for_changes(WATCH_POLL_SECONDS)
