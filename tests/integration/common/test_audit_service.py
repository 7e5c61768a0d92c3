"""kequn.common.v1.AuditService on PostgreSQL: a real gRPC server (the
suite's interceptors and role matrix) over tiering's audit table made by its
real Alembic migrations. Verification passes on a fresh chain and names the
chain and the record when a record is changed in SQL or a chain's tail is
cut; the walk is bounded; the trail pages newest first; a client system's
token is refused."""
from __future__ import annotations

import dataclasses

import grpc
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import delete, func, insert, select, update

from kequn.common.v1 import audit_pb2 as pb
from kequn.common.v1 import audit_pb2_grpc
from services.common.audit import (BROKEN, LEGACY_BUCKET, NOT_CHECKED, OK, append_audit, bucket_of, snapshot,
                                   verify_chains)
from services.common.audit_api import audit_servicer
from services.common.auth import Policy, TokenStore, bearer_metadata
from services.common.config import ServiceConfig
from services.common.db import make_engine, run_migrations
from services.common.server import build_server
from services.common.testing import REPO_ROOT, dev_tokens
from services.tiering.store import audit_log

pytestmark = pytest.mark.postgres

MIGRATIONS = str(REPO_ROOT / "services" / "tiering" / "migrations")
SUBJECTS = ("customer/A", "customer/B", "customer/C", "customer/D")
assert len({bucket_of(s) for s in SUBJECTS}) == len(SUBJECTS)  # four distinct chains
RECORDS = 24


@pytest.fixture
def audited(pg_url, tmp_path):
    """Tiering's schema with RECORDS audit records over four chains, served
    by AuditService on a real port; yields (engine, stub, tokens)."""
    run_migrations(pg_url, MIGRATIONS, "alembic_version_tiering")
    engine = make_engine(pg_url)
    for i in range(RECORDS):
        with engine.begin() as conn:
            append_audit(conn, audit_log, actor=f"ops{i % 2}", action="customer.retier", subject=SUBJECTS[i % 4],
                         before={"tier": "GOLD"}, after={"tier": "PLATINUM", "i": i}, request_id=f"r{i}",
                         reason="annual review")
    tokens = dev_tokens(tmp_path)
    cfg = dataclasses.replace(ServiceConfig.from_env("tiering", {"KEQUN_DATA_DIR": str(tmp_path)}),
                              grpc_port=0, metrics_port=0, shutdown_grace_seconds=1)
    add, servicer, name = audit_servicer(engine, audit_log, "tiering")
    server = build_server(cfg, registry=CollectorRegistry(), servicers=[(add, servicer)], service_names=[name],
                          token_store=TokenStore(tokens.path), policy=Policy.load(None))
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield engine, audit_pb2_grpc.AuditServiceStub(channel), tokens
    channel.close()
    server.stop(0)
    engine.dispose()


def _verify(stub, tokens, **kw) -> pb.VerifyAuditChainResponse:
    return stub.VerifyAuditChain(pb.VerifyAuditChainRequest(**kw), metadata=bearer_metadata(tokens["operations"]),
                                 timeout=30)


def _chains(answer) -> dict[int, pb.ChainVerdict]:
    return {c.bucket: c for c in answer.chains}


def _chain_ids(engine, subject) -> list[int]:
    with engine.connect() as conn:
        return [r.id for r in conn.execute(select(audit_log.c.id).where(audit_log.c.subject == subject)
                                           .order_by(audit_log.c.seq))]


def test_a_fresh_chain_verifies_every_bucket_ok(audited):
    _, stub, tokens = audited
    answer = _verify(stub, tokens)
    assert answer.ok and answer.complete
    assert answer.records_checked == RECORDS == answer.record_count
    assert len(answer.heads_digest) == 64 and answer.verified_at.seconds > 0
    chains = _chains(answer)
    # The migration anchored the (empty) legacy chain, which new chains start from.
    assert set(chains) == {LEGACY_BUCKET} | {bucket_of(s) for s in SUBJECTS}
    assert chains.pop(LEGACY_BUCKET).state == pb.CHAIN_STATE_OK
    for chain in chains.values():
        assert chain.state == pb.CHAIN_STATE_OK and chain.records_checked == chain.head_seq == RECORDS // 4
        assert not chain.first_bad_event_id and not chain.problem


def test_a_record_changed_in_sql_breaks_its_chain_naming_bucket_and_record(audited):
    engine, stub, tokens = audited
    victim = _chain_ids(engine, "customer/B")[2]
    with engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.id == victim).values(after_json='{"tier":"DIAMOND"}'))
    answer = _verify(stub, tokens)
    assert not answer.ok and answer.complete
    chains = _chains(answer)
    broken = chains[bucket_of("customer/B")]
    assert broken.state == pb.CHAIN_STATE_BROKEN
    assert broken.first_bad_event_id == str(victim)
    assert f"record {victim}" in broken.problem and f"chain {bucket_of('customer/B')}" in broken.problem
    assert broken.records_checked == 3  # two good ones, then the changed one
    others = [c for b, c in chains.items() if b != bucket_of("customer/B")]
    assert others and all(c.state == pb.CHAIN_STATE_OK for c in others)  # each chain gets its own verdict


def test_a_row_mangled_beyond_json_is_still_listed_and_named(audited):
    engine, stub, tokens = audited
    victim = _chain_ids(engine, "customer/D")[0]
    with engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.id == victim).values(after_json="{not json", at="yesterday"))
    md = bearer_metadata(tokens["operations"])
    listed = stub.ListAuditEvents(pb.ListAuditEventsRequest(subject="customer/D"), metadata=md, timeout=10)
    row = next(e for e in listed.audit_events if e.event_id == str(victim))
    assert row.after_json == "{not json" and not row.HasField("at")
    broken = _chains(_verify(stub, tokens))[bucket_of("customer/D")]
    assert broken.state == pb.CHAIN_STATE_BROKEN and broken.first_bad_event_id == str(victim)


def test_a_deleted_last_record_is_an_anchor_mismatch_naming_the_chain(audited):
    engine, stub, tokens = audited
    ids = _chain_ids(engine, "customer/C")
    with engine.begin() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.id == ids[-1]))
    answer = _verify(stub, tokens)
    assert not answer.ok
    cut = _chains(answer)[bucket_of("customer/C")]
    assert cut.state == pb.CHAIN_STATE_BROKEN
    assert cut.first_bad_event_id == str(ids[-2])  # the last record left before the cut
    assert cut.head_seq == len(ids) and cut.records_checked == len(ids) - 1
    assert "removed from its end" in cut.problem and f"chain {bucket_of('customer/C')}" in cut.problem
    assert [b for b, c in _chains(answer).items() if c.state != pb.CHAIN_STATE_OK] == [bucket_of("customer/C")]


def test_the_walk_is_bounded_by_records_and_by_time(audited):
    engine, stub, tokens = audited
    answer = _verify(stub, tokens, max_records=8)
    assert not answer.complete and not answer.ok and answer.records_checked == 8
    states = [c.state for c in answer.chains]
    assert states.count(pb.CHAIN_STATE_OK) == 2 and pb.CHAIN_STATE_NOT_CHECKED in states  # legacy (empty) + one
    assert pb.CHAIN_STATE_BROKEN not in states  # not reached is not broken
    # The deadline check, driven by a clock the test controls: out of time
    # after the (empty) legacy chain and the first bucket chain.
    calls = []

    def out_of_time():
        calls.append(1)
        return len(calls) > 2
    with engine.connect() as conn:
        report = verify_chains(conn, audit_log, out_of_time=out_of_time)
    assert [c.state for c in report.chains] == [OK, OK] + [NOT_CHECKED] * 3
    assert not report.complete and report.checked == RECORDS // 4 and BROKEN not in {c.state for c in report.chains}


def test_the_trail_pages_newest_first_with_signed_tokens_and_filters(audited):
    engine, stub, tokens = audited
    md = bearer_metadata(tokens["operations"])
    seen, token = [], ""
    while True:
        page = stub.ListAuditEvents(pb.ListAuditEventsRequest(page_size=10, page_token=token), metadata=md, timeout=10)
        seen += page.audit_events
        token = page.next_page_token
        if not token:
            break
    ids = [int(e.event_id) for e in seen]
    assert ids == sorted(ids, reverse=True) and len(ids) == RECORDS
    newest = seen[0]
    assert newest.actor == "ops1" and newest.subject == SUBJECTS[(RECORDS - 1) % 4] and newest.reason == "annual review"
    assert newest.after_json == '{"i":23,"tier":"PLATINUM"}' and newest.seq == RECORDS // 4 and len(newest.hash) == 64
    with engine.connect() as conn:
        assert newest.hash == conn.execute(select(audit_log.c.hash).where(audit_log.c.id == ids[0])).scalar_one()
    only = stub.ListAuditEvents(pb.ListAuditEventsRequest(actor="ops0", subject="customer/A"), metadata=md, timeout=10)
    assert len(only.audit_events) == RECORDS // 4 and {e.actor for e in only.audit_events} == {"ops0"}
    # A token of other filters, or a forged one, is refused and changes nothing.
    first = stub.ListAuditEvents(pb.ListAuditEventsRequest(page_size=5), metadata=md, timeout=10)
    for request in (pb.ListAuditEventsRequest(page_size=5, page_token=first.next_page_token, actor="ops0"),
                    pb.ListAuditEventsRequest(page_token=first.next_page_token[:-2] + "AA")):
        with pytest.raises(grpc.RpcError) as info:
            stub.ListAuditEvents(request, metadata=md, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(audit_log)).scalar_one() == RECORDS


@pytest.mark.parametrize("role", ["mobile_banking", "core_banking", "branch_staff", "hr"])
def test_client_systems_and_other_roles_are_refused(audited, role):
    _, stub, tokens = audited
    for call, request in ((stub.ListAuditEvents, pb.ListAuditEventsRequest()),
                          (stub.VerifyAuditChain, pb.VerifyAuditChainRequest())):
        with pytest.raises(grpc.RpcError) as info:
            call(request, metadata=bearer_metadata(tokens[role]), timeout=10)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as info:
        stub.VerifyAuditChain(pb.VerifyAuditChainRequest(), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_negative_record_budget_is_invalid_input(audited):
    _, stub, tokens = audited
    with pytest.raises(grpc.RpcError) as info:
        _verify(stub, tokens, max_records=-1)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_records_appended_during_a_walk_are_not_taken_for_forgeries(audited):
    """A live service appends while it verifies: the walk sees the heads and
    the records as of one instant, so new records do not lie "beyond the head"."""
    engine, stub, tokens = audited
    appended = []

    def append_meanwhile():  # called by the walk after it has read the heads
        if not appended:
            for i, subject in enumerate(SUBJECTS * 2):
                with engine.begin() as conn:
                    append_audit(conn, audit_log, actor="late", action="customer.retier", subject=subject,
                                 after={"late": i})
            appended.append(True)
        return False
    with snapshot(engine) as conn:
        report = verify_chains(conn, audit_log, out_of_time=append_meanwhile)
    assert appended and report.ok and report.complete and report.checked == RECORDS
    assert _verify(stub, tokens).records_checked == RECORDS + 2 * len(SUBJECTS)  # the next walk sees them, intact


def test_a_record_forged_into_a_chain_that_has_no_head_is_named(audited):
    engine, stub, tokens = audited
    with engine.begin() as conn:
        model = conn.execute(select(audit_log).order_by(audit_log.c.id.desc())).first()._asdict()
        model.pop("id")
        forged = conn.execute(insert(audit_log).values(**{**model, "bucket": 99, "seq": 1})
                              .returning(audit_log.c.id)).scalar_one()
    answer = _verify(stub, tokens)
    assert not answer.ok
    chain = _chains(answer)[99]
    assert chain.state == pb.CHAIN_STATE_BROKEN and chain.first_bad_event_id == str(forged)
    assert "no anchored head" in chain.problem
    assert [b for b, c in _chains(answer).items() if c.state != pb.CHAIN_STATE_OK] == [99]
