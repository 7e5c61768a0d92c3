"""The tiering port over real gRPC: a stand-in TieringService on a real port
answers, fails, or is stopped; benefits' profile source must keep a last-known
profile only up to the staleness bound."""
from __future__ import annotations

from concurrent import futures
from datetime import datetime, timedelta, timezone

import grpc
import pytest

from kequn.tiering.v1 import tiering_pb2, tiering_pb2_grpc
from services.benefits.profiles import TieringProfiles
from services.common.errors import NotFound, Unavailable


class StandIn(tiering_pb2_grpc.TieringServiceServicer):
    def __init__(self):
        self.tier = "AFFLUENT"
        self.calls = 0

    def GetCustomerTier(self, request, context):
        self.calls += 1
        if request.customer_id == "NOBODY":
            context.abort(grpc.StatusCode.NOT_FOUND, "never evaluated")
        return tiering_pb2.TierDecision(customer_id=request.customer_id, tier=self.tier, segments=["PAYROLL"],
                                        next_tier=tiering_pb2.NextTier(tier="WEALTH", gap_fen=42),
                                        group_keys={"payroll_employer_id": "EMP-1"})


class Clock:
    now = datetime(2025, 3, 10, tzinfo=timezone.utc)

    def __call__(self):
        return self.now


@pytest.fixture
def tiering():
    standin = StandIn()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    tiering_pb2_grpc.add_TieringServiceServicer_to_server(standin, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield standin, server, channel
    channel.close()
    server.stop(0)


def test_profile_comes_from_tiering_and_is_reused_within_the_cache_window(tiering):
    standin, _, channel = tiering
    clock = Clock()
    profiles = TieringProfiles(channel, clock=clock, timeout_seconds=2)
    p = profiles.get("C1", cache_seconds=5, max_staleness_seconds=60)
    assert (p.tier, p.segments, p.next_tier, p.next_tier_gap_fen) == ("AFFLUENT", ("PAYROLL",), "WEALTH", 42)
    assert p.group_keys == (("payroll_employer_id", "EMP-1"),)  # reason texts name the employer
    standin.tier = "WEALTH"
    assert profiles.get("C1", 5, 60).tier == "AFFLUENT" and standin.calls == 1
    clock.now += timedelta(seconds=6)
    assert profiles.get("C1", 5, 60).tier == "WEALTH" and standin.calls == 2
    with pytest.raises(NotFound):
        profiles.get("NOBODY", 5, 60)


def test_tiering_down_last_known_profile_up_to_the_bound_then_unavailable(tiering):
    _, server, channel = tiering
    clock = Clock()
    profiles = TieringProfiles(channel, clock=clock, timeout_seconds=1)
    profiles.get("C1", 0, 60)
    server.stop(0)  # tiering goes down
    clock.now += timedelta(seconds=60)
    assert profiles.get("C1", 0, 60).tier == "AFFLUENT"
    clock.now += timedelta(seconds=1)
    with pytest.raises(Unavailable):
        profiles.get("C1", 0, 60)
    with pytest.raises(Unavailable):
        profiles.get("NEVER_SEEN", 0, 60)
