"""kequn.common.v1.AuditService end to end: the four services as real
processes on PostgreSQL (their real migrations), over gRPC. Each serves its
own audit trail and verifies its own chains; a record changed in SQL and a
chain's tail cut off are reported with the chain and the record; a client
system's token is refused."""
from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import MetaData, delete, select, update

from kequn.assignment.v1 import assignment_pb2 as apb
from kequn.assignment.v1 import assignment_pb2_grpc
from kequn.common.v1 import audit_pb2 as pb
from kequn.common.v1 import audit_pb2_grpc
from kequn.tiering.v1 import tiering_pb2 as tpb
from kequn.tiering.v1 import tiering_pb2_grpc
from services.common.audit import audit_table, bucket_of, default_table_name
from services.common.db import make_engine
from tests.e2e.harness import suite_on_postgres

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
T = 30
SERVICES = ("tiering", "assignment", "scoring", "benefits")


@pytest.fixture(scope="module")
def suite(tmp_path_factory, _pg_database):
    with suite_on_postgres(tmp_path_factory.mktemp("audit-service"), _pg_database) as s:
        tiering = tiering_pb2_grpc.TieringServiceStub(s.channel("tiering", "core_banking"))
        for i in range(6):
            fen = 30_000_000 + i
            tiering.EvaluateCustomer(tpb.EvaluateCustomerRequest(customer=tpb.CustomerSnapshot(
                customer_id=f"AU-{i}", as_of="2026-01-31", annual_avg_aum_fen=fen, monthly_avg_aum_fen=fen,
                point_in_time_aum_fen=fen), request_id=f"audit-eval-{i}"), timeout=T)
        assignment = assignment_pb2_grpc.AssignmentServiceStub(s.channel("assignment", "operations"))
        for branch_id in ("AU-BR-1", "AU-BR-2", "AU-BR-3"):
            assignment.UpsertBranch(apb.Branch(branch_id=branch_id, level=apb.BRANCH_LEVEL_BRANCH), timeout=T)
        yield s


def audit(suite, service, role="operations"):
    return audit_pb2_grpc.AuditServiceStub(suite.channel(service, role))


def log_of(suite, service):
    engine = make_engine(suite.env[f"KEQUN_{service.upper()}_DATABASE_URL"])
    return engine, audit_table(MetaData(), default_table_name(service))


def test_every_service_serves_and_verifies_its_own_trail(suite):
    for service in SERVICES:
        assert suite.health(service, "kequn.common.v1.AuditService") == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(grpc.insecure_channel(suite.target(service)))
        listed = next(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        assert "kequn.common.v1.AuditService" in {s.name for s in listed.list_services_response.service}
        answer = audit(suite, service).VerifyAuditChain(pb.VerifyAuditChainRequest(), timeout=T)
        assert answer.ok and answer.complete, (service, answer)
        assert answer.records_checked == answer.record_count and len(answer.heads_digest) == 64
        assert all(c.state == pb.CHAIN_STATE_OK for c in answer.chains)
    trail = audit(suite, "assignment").ListAuditEvents(pb.ListAuditEventsRequest(actor="operations"), timeout=T)
    upserts = [e for e in trail.audit_events if e.subject.endswith(("AU-BR-1", "AU-BR-2", "AU-BR-3"))]
    assert len(upserts) == 3 and [int(e.event_id) for e in upserts] == sorted(
        (int(e.event_id) for e in upserts), reverse=True)  # newest first
    tiering = audit(suite, "tiering").ListAuditEvents(pb.ListAuditEventsRequest(page_size=2), timeout=T)
    assert len(tiering.audit_events) == 2 and tiering.next_page_token  # the other service's own log, paged
    assert all(e.action.startswith("customer_tier.") and "AU-" in e.subject for e in tiering.audit_events)


def test_a_client_systems_token_is_refused(suite):
    for service in SERVICES:
        stub = audit(suite, service, "mobile_banking")
        for call, request in ((stub.ListAuditEvents, pb.ListAuditEventsRequest()),
                              (stub.VerifyAuditChain, pb.VerifyAuditChainRequest())):
            with pytest.raises(grpc.RpcError) as info:
                call(request, timeout=T)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED, service


def test_a_record_changed_in_sql_is_named_with_its_chain(suite):
    engine, log = log_of(suite, "assignment")
    try:
        with engine.begin() as conn:
            victim = conn.execute(select(log).where(log.c.subject.like("%AU-BR-2")).order_by(log.c.id)).first()
            conn.execute(update(log).where(log.c.id == victim.id).values(reason="nothing to see"))
    finally:
        engine.dispose()
    answer = audit(suite, "assignment").VerifyAuditChain(pb.VerifyAuditChainRequest(), timeout=T)
    assert not answer.ok
    broken = [c for c in answer.chains if c.state == pb.CHAIN_STATE_BROKEN]
    assert [(c.bucket, c.first_bad_event_id) for c in broken] == [(victim.bucket, str(victim.id))]
    assert victim.bucket == bucket_of(victim.subject) and f"record {victim.id}" in broken[0].problem


def test_a_cut_tail_is_an_anchor_mismatch_naming_chain_and_last_record(suite):
    engine, log = log_of(suite, "tiering")
    try:
        with engine.begin() as conn:
            last = conn.execute(select(log).order_by(log.c.id.desc())).first()
            before = conn.execute(select(log.c.id).where(log.c.bucket == last.bucket, log.c.seq == last.seq - 1)
                                  ).scalar()
            conn.execute(delete(log).where(log.c.id == last.id))
    finally:
        engine.dispose()
    answer = audit(suite, "tiering").VerifyAuditChain(pb.VerifyAuditChainRequest(), timeout=T)
    assert not answer.ok and answer.complete
    broken = [c for c in answer.chains if c.state == pb.CHAIN_STATE_BROKEN]
    assert [c.bucket for c in broken] == [last.bucket]
    assert broken[0].first_bad_event_id == ("" if before is None else str(before))
    assert broken[0].head_seq == last.seq and "removed from its end" in broken[0].problem
