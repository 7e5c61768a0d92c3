"""Effective dates across replicas: two tiering server processes on one
PostgreSQL database. A release approved for an instant a few seconds ahead is
served by both from that instant on — every answer stamped at or after it
names the new version, every answer before it the old one — and a cancelled
future release never takes effect. The instant is judged by each answer's own
decided_at (the server's clock, the same clock the version is chosen by)."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from kequn.rules.v1 import rules_pb2, rules_pb2_grpc
from kequn.tiering.v1 import tiering_pb2, tiering_pb2_grpc
from tests.e2e.harness import Suite
from tests.tier_schemes import with_wealth_floor

ENV = {"KEQUN_RULES_POLL_SECONDS": "0.3", "KEQUN_RULES_RELEASE_LEAD_SECONDS": "2"}


@pytest.fixture
def replicas(tmp_path, pg_url):
    started = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            suite = Suite(tmp_path / name, services=("tiering",), database_urls={"tiering": pg_url}, extra_env=ENV)
            started.append(suite)
            suite.start("tiering")
        yield started
    finally:
        for suite in started:
            suite.close()


def _raised_wealth_floor() -> str:
    return with_wealth_floor(30_000_000)


def _timestamp(moment: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


def _schedule(suite: Suite, document: str, instant: datetime) -> rules_pb2.Release:
    owner_1 = rules_pb2_grpc.RuleStoreServiceStub(suite.channel("tiering", "rule_owner_1"))
    owner_2 = rules_pb2_grpc.RuleStoreServiceStub(suite.channel("tiering", "rule_owner_2"))
    draft = owner_1.CreateRulesetVersion(rules_pb2.CreateRulesetVersionRequest(
        name="tiering.tiers", document=document), timeout=30).ruleset_version
    release = owner_1.RequestRelease(rules_pb2.RequestReleaseRequest(
        name="tiering.tiers", version=draft.version, effective_from=_timestamp(instant)), timeout=30)
    approved = owner_2.ApproveRelease(rules_pb2.DecideReleaseRequest(release_id=release.release_id), timeout=30)
    assert approved.status == rules_pb2.RELEASE_STATUS_APPROVED
    return approved


def _watch(suite: Suite, until: datetime, seen: list, errors: list) -> None:
    stub = tiering_pb2_grpc.TieringServiceStub(suite.channel("tiering", "core_banking"))
    request = tiering_pb2.EvaluateCustomerRequest(dry_run=True, customer=tiering_pb2.CustomerSnapshot(
        customer_id="C-INSTANT", as_of="2026-11-24", annual_avg_aum_fen=25_000_000))
    while datetime.now(timezone.utc) < until:
        try:
            d = stub.EvaluateCustomer(request, timeout=10)
        except grpc.RpcError as exc:  # any refusal is a failure of the switch
            errors.append(f"{exc.code().name}: {exc.details()}")
            continue
        seen.append((d.decided_at.ToDatetime(tzinfo=timezone.utc), d.ruleset.version, d.tier))


def test_both_replicas_switch_exactly_at_the_instant_and_a_cancelled_release_never_does(replicas):
    a, b = replicas
    admin = rules_pb2_grpc.RuleStoreServiceStub(a.channel("tiering", "rule_admin"))
    old = admin.GetRuleset(rules_pb2.GetRulesetRequest(name="tiering.tiers"), timeout=10).ruleset_version.version
    instant = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=10)
    release = _schedule(a, _raised_wealth_floor(), instant)
    # A later release, approved on the other replica's port, then cancelled in time.
    later = _schedule(b, _raised_wealth_floor(), instant + timedelta(seconds=4))
    cancelled = rules_pb2_grpc.RuleStoreServiceStub(b.channel("tiering", "rule_owner_1")).RejectRelease(
        rules_pb2.DecideReleaseRequest(release_id=later.release_id, comment="postponed"), timeout=30)
    assert cancelled.status == rules_pb2.RELEASE_STATUS_CANCELLED

    until = instant + timedelta(seconds=6)
    seen = {"a": [], "b": []}
    errors: list = []
    watchers = [threading.Thread(target=_watch, args=(suite, until, seen[name], errors))
                for name, suite in (("a", a), ("b", b))]
    for w in watchers:
        w.start()
    for w in watchers:
        w.join(timeout=60)

    assert not errors, errors[:5]
    for name, answers in seen.items():
        before = [(at, v, tier) for at, v, tier in answers if at < instant]
        after = [(at, v, tier) for at, v, tier in answers if at >= instant]
        assert before and after, f"replica {name} was not asked on both sides of the instant"
        assert {(v, tier) for _, v, tier in before} == {(old, "WEALTH")}, name
        assert {(v, tier) for _, v, tier in after} == {(release.version, "AFFLUENT")}, name
    stored = admin.GetRuleset(rules_pb2.GetRulesetRequest(name="tiering.tiers"), timeout=10).ruleset_version
    assert stored.version == release.version  # the store caught up; the cancelled one never did
    statuses = {r.release_id: r.status for r in admin.ListReleases(
        rules_pb2.ListReleasesRequest(name="tiering.tiers"), timeout=10).releases}
    assert statuses == {release.release_id: rules_pb2.RELEASE_STATUS_ACTIVE,
                        later.release_id: rules_pb2.RELEASE_STATUS_CANCELLED}
    draft = admin.GetRuleset(rules_pb2.GetRulesetRequest(name="tiering.tiers", version=later.version), timeout=10)
    assert draft.ruleset_version.status == rules_pb2.RULESET_STATUS_DRAFT
