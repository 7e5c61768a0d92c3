"""kequn.common.v1.AuditService: a service's own audit trail and the
verification of its hash chains over gRPC, served by every service from this
one implementation (each composition root registers it with its audit table).

Verification walks the whole log, so it is bounded twice: by the call's
deadline (less a margin to answer in, and never more than VERIFY_SECONDS) and
by a record budget (VERIFY_MAX_RECORDS, or less if the caller asks). Chains it
did not reach are reported NOT_CHECKED; `kequn audit verify` on the service's
host has no such bound.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import Engine, Table

from kequn.common.v1 import audit_pb2 as pb
from kequn.common.v1 import audit_pb2_grpc

from .audit import BROKEN, NOT_CHECKED, OK, events_query, heads_digest, snapshot, verify_chains
from .paging import decode_token, encode_token, page_size, scope

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AuditService"].full_name
VERIFY_SECONDS = 20.0  # at most this long per call, whatever the deadline
VERIFY_MARGIN_SECONDS = 0.5  # kept back from the deadline to send the answer
VERIFY_MAX_RECORDS = 2_000_000
_STATES = {OK: pb.CHAIN_STATE_OK, BROKEN: pb.CHAIN_STATE_BROKEN, NOT_CHECKED: pb.CHAIN_STATE_NOT_CHECKED}


def _ts(value: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(value.astimezone(timezone.utc))
    return out


def _json_or_empty(text: str) -> str:
    """before_json/after_json as stored (canonical JSON); empty for null.
    Text that is no longer JSON (a tampered row) is shown as it is."""
    try:
        return "" if json.loads(text) is None else text
    except ValueError:
        return text


def _at(text: str) -> Timestamp | None:
    """The stored instant; unset if a tampered row's is not one (the
    listing still shows the row, VerifyAuditChain names it)."""
    try:
        return _ts(datetime.fromisoformat(text))
    except (ValueError, OverflowError):
        return None


class AuditApi(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, engine: Engine, table: Table, service: str) -> None:
        self.engine, self.table, self.service = engine, table, service

    def ListAuditEvents(self, request, context):
        limit = page_size(request.page_size)
        token_scope = scope(f"{self.service}.AuditService.ListAuditEvents", request.subject, request.actor,
                            request.action)
        before_id = decode_token(request.page_token, token_scope, expect=int)
        q = events_query(self.table, before_id, request.subject, request.actor, request.action)
        with self.engine.connect() as conn:
            rows = conn.execute(q.limit(limit + 1)).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        return pb.ListAuditEventsResponse(audit_events=[pb.AuditEvent(
            event_id=str(r.id), at=_at(r.at), actor=r.actor, action=r.action,
            subject=r.subject, before_json=_json_or_empty(r.before_json), after_json=_json_or_empty(r.after_json),
            reason=r.reason, request_id=r.request_id, bucket=r.bucket, seq=r.seq, hash=r.hash,
            prev_hash=r.prev_hash) for r in rows],
            next_page_token=encode_token(rows[-1].id, token_scope) if more else "")

    def VerifyAuditChain(self, request, context):
        remaining = context.time_remaining() if context is not None else None
        budget = VERIFY_SECONDS if remaining is None else max(0.0, min(VERIFY_SECONDS,
                                                                       remaining - VERIFY_MARGIN_SECONDS))
        stop_at = time.monotonic() + budget
        max_records = min(request.max_records or VERIFY_MAX_RECORDS, VERIFY_MAX_RECORDS)
        with snapshot(self.engine) as conn:  # heads and records as of one instant, while appends go on
            report = verify_chains(conn, self.table, out_of_time=lambda: time.monotonic() >= stop_at,
                                   max_records=max_records)
            count, digest = heads_digest(conn, self.table)
        return pb.VerifyAuditChainResponse(
            chains=[pb.ChainVerdict(bucket=c.bucket, state=_STATES[c.state], records_checked=c.checked,
                                    head_seq=c.head_seq,
                                    first_bad_event_id="" if c.bad_id is None else str(c.bad_id),
                                    problem=c.problem) for c in report.chains],
            ok=report.ok, complete=report.complete, records_checked=report.checked,
            verified_at=_ts(datetime.now(timezone.utc)), record_count=count, heads_digest=digest)


def audit_servicer(engine: Engine, table: Table, service: str):
    """(add_to_server, servicer, full service name) for a composition root."""
    return audit_pb2_grpc.add_AuditServiceServicer_to_server, AuditApi(engine, table, service), SERVICE_NAME
